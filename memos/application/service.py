"""The memory service: every user-facing operation, with access checks, on top of the Runtime."""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from memos.runtime import Runtime
from schemas.errors import NotFound, PermissionDenied, ValidationFailed
from schemas.events import (
    ApiKeyIssued,
    ApiKeyRevoked,
    ConversationRecorded,
    CubeCreated,
    CubeForgotten,
    CubeShared,
    Event,
    TaskStatusChanged,
    TaskSubmitted,
    UserCreated,
    UserForgotten,
)
from schemas.memory import MemoryRecord
from schemas.ops import DropCube
from schemas.topics import ACTIVATION, CONVERSATIONS, MEMORIES, REGISTRY, TASKS
from streams.pipeline.stages import apply_planned

__all__ = ["MemoryService", "memory_view"]

logger = logging.getLogger(__name__)

Mode = Literal["fast", "fine"]


def memory_view(record: MemoryRecord) -> dict[str, Any]:
    """A memory in MemOS's item shape: id, memory and metadata (embedding stripped)."""
    metadata = {
        "user_id": record.user_id,
        "session_id": record.session_id,
        "status": record.status,
        "type": record.metadata.get("type", "fact"),
        "key": record.key,
        "tags": list(record.tags),
        "background": record.background,
        "memory_type": record.memory_type,
        "sources": [s.model_dump(exclude_none=True) for s in record.sources],
        "confidence": record.confidence,
        "extractor": record.extractor,
        "embedding_model": record.embedding_model,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "valid_from": record.valid_from.isoformat() if record.valid_from else None,
        "valid_to": record.valid_to.isoformat() if record.valid_to else None,
        "revision": record.revision,
        "successor_ids": list(record.successor_ids),
        "cube_id": record.cube_id,
        "id": record.id,
        "embedding": [],
        **{k: v for k, v in record.metadata.items() if k not in {"embedding"}},
    }
    return {"id": record.id, "memory": record.memory, "metadata": metadata}


class MemoryService:
    """User-facing operations. Every read and write is checked against the access projection."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.control = runtime.control

    # --- registry ---------------------------------------------------------------------------------------

    def _event_base(self, key: str, producer: str = "api") -> dict[str, Any]:
        return {"event_id": uuid.uuid4(), "occurred_at": self.rt.now(), "key": key, "producer": producer}

    async def _registry(self, events: Sequence[Event]) -> None:
        await self.rt.publish(events)
        for event in events:
            self.control.apply("access", event, None)

    async def create_user(self, user_id: str, *, user_name: str = "", role: Literal["user", "admin"] = "user") -> bool:
        """Register a user; False when it already exists."""
        _check_id(user_id, "user_id")
        if self.control.user_exists(user_id):
            return False
        await self._registry([UserCreated(**self._event_base(user_id), user_id=user_id, user_name=user_name,
                                          role=role)])
        return True

    async def ensure_user(self, user_id: str) -> None:
        """Create the user when unknown and auto-creation is on; NotFound otherwise."""
        if self.control.user_exists(user_id):
            return
        if not self.rt.settings.auto_create_users:
            raise NotFound(f"user {user_id!r} does not exist", field="user_id")
        await self.create_user(user_id)

    async def create_cube(self, cube_id: str, *, owner_id: str, cube_name: str = "",
                          config: dict[str, Any] | None = None) -> bool:
        """Create a cube owned by ``owner_id``; False when the owner already has it, error if another does."""
        _check_id(cube_id, "cube_id")
        await self.ensure_user(owner_id)
        if self.control.cube_exists(cube_id):
            if self.control.cube(cube_id).owner_id != owner_id:
                raise PermissionDenied(f"cube {cube_id!r} belongs to another user", field="cube_id")
            return False
        await self._registry([CubeCreated(**self._event_base(cube_id), cube_id=cube_id, owner_id=owner_id,
                                          cube_name=cube_name or cube_id, config=config or {})])
        return True

    async def share_cube(self, cube_id: str, *, owner_id: str, user_id: str,
                         access: Literal["read", "write", "none"] = "read") -> None:
        """Share a cube the caller owns with another user (access 'none' withdraws it)."""
        if self.control.access(owner_id, cube_id) != "owner":
            raise PermissionDenied(f"only the owner may share cube {cube_id!r}", field="cube_id")
        if not self.control.user_exists(user_id):
            raise NotFound(f"user {user_id!r} does not exist", field="user_id")
        await self._registry([CubeShared(**self._event_base(cube_id), cube_id=cube_id, user_id=user_id,
                                         access=access, granted_by=owner_id)])

    async def issue_key(self, user_id: str, *, name: str = "") -> str:
        """Issue an API key for a user; the secret is returned once and stored only hashed."""
        from memory_store.control import hash_api_key

        if not self.control.user_exists(user_id):
            raise NotFound(f"user {user_id!r} does not exist", field="user_id")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(24)
        key_hash = hash_api_key(secret, salt=secrets.token_bytes(16))
        await self._registry([ApiKeyIssued(**self._event_base(user_id), key_id=key_id, user_id=user_id,
                                           key_hash=key_hash, name=name)])
        return f"mk_{key_id}_{secret}"

    async def revoke_key(self, key_id: str, *, user_id: str) -> None:
        """Revoke an API key."""
        await self._registry([ApiKeyRevoked(**self._event_base(user_id), key_id=key_id, user_id=user_id)])

    def authenticate(self, api_key: str) -> str | None:
        """The user id of a valid API key, else None."""
        parts = api_key.split("_", 2)
        if len(parts) != 3 or parts[0] != "mk":
            return None
        return self.control.key_user(parts[1], parts[2])

    def check_read(self, user_id: str, cube_id: str) -> None:
        """NotFound for unknown cubes, PermissionDenied when the user may not read."""
        if self.control.access(user_id, cube_id) == "none":
            raise PermissionDenied(f"user {user_id!r} may not read cube {cube_id!r}", field="cube_id")

    async def check_write(self, user_id: str, cube_id: str, *, auto_create: bool | None = None) -> None:
        """NotFound for unknown cubes (unless auto-created for the user), PermissionDenied without write access."""
        create = self.rt.settings.auto_create_cubes if auto_create is None else auto_create
        if not self.control.cube_exists(cube_id):
            if not create:
                raise NotFound(f"cube {cube_id!r} does not exist", field="cube_id")
            await self.create_cube(cube_id, owner_id=user_id)
        if self.control.access(user_id, cube_id) not in ("owner", "write"):
            raise PermissionDenied(f"user {user_id!r} may not write cube {cube_id!r}", field="cube_id")

    # --- memories ---------------------------------------------------------------------------------------

    async def add(self, user_id: str, cube_ids: Sequence[str], messages: list[dict[str, Any]], *,
                  session_id: str = "default_session", mode: Mode = "fine",
                  async_mode: Literal["sync", "async"] = "sync", info: dict[str, Any] | None = None,
                  custom_tags: Sequence[str] = (), task_id: str | None = None, trace_id: str | None = None,
                  auto_create: bool | None = None) -> list[dict[str, Any]]:
        """Record messages for each cube; sync waits until the memories are searchable.

        Returns one entry per cube: task id, status and (sync) the memories added.
        """
        if not cube_ids:
            raise ValidationFailed("writable_cube_ids must name at least one cube", field="writable_cube_ids")
        if not messages:
            raise ValidationFailed("messages must not be empty", field="messages")
        await self.ensure_user(user_id)
        for cube_id in cube_ids:
            await self.check_write(user_id, cube_id, auto_create=auto_create)
        base_task = task_id or uuid.uuid4().hex
        events: list[Event] = []
        tasks: list[tuple[str, str]] = []
        for cube_id in cube_ids:
            tid = base_task if len(cube_ids) == 1 else f"{base_task}:{cube_id}"
            recorded = ConversationRecorded(
                **self._event_base(cube_id), trace_id=trace_id, user_id=user_id, cube_id=cube_id,
                session_id=session_id, messages=messages, info=info or {}, custom_tags=list(custom_tags),
                mode=mode, async_mode=async_mode, task_id=tid,
            )
            waiting = TaskStatusChanged(**self._event_base(cube_id), task_id=tid, cube_id=cube_id,
                                        status="waiting", label="add", business_task_id=base_task)
            events.extend([recorded, waiting])
            tasks.append((cube_id, tid))
        positions = await self.rt.publish(events)
        if async_mode == "async":
            return [{"cube_id": c, "task_id": t, "status": "waiting", "memories": []} for c, t in tasks]
        await self.rt.settle(positions)
        out = []
        for cube_id, tid in tasks:
            info_ = self.control.task(tid)
            ids = list(info_.result.get("memory_ids", [])) if info_ else []
            ids += list(info_.result.get("revised_ids", [])) if info_ else []
            records = await self.rt.graph.get(ids, cube_id=cube_id)
            out.append({
                "cube_id": cube_id, "task_id": tid, "status": info_.status if info_ else "unknown",
                "error": info_.error if info_ else None,
                "memories": [{"memory_id": r.id, "memory": r.memory, "memory_type": r.memory_type,
                              "cube_id": r.cube_id} for r in records],
            })
        return out

    async def search(self, user_id: str, cube_ids: Sequence[str], query: str, **params: Any) -> dict[str, Any]:
        """Search the cubes the user may read; MemOS's ``data`` shape."""
        if not query or not query.strip():
            raise ValidationFailed("query must not be empty", field="query")
        if not cube_ids:
            raise ValidationFailed("readable_cube_ids must name at least one cube", field="readable_cube_ids")
        for cube_id in cube_ids:
            self.check_read(user_id, cube_id)
        from memos.application.search import SearchQuery

        result: dict[str, Any] = await self.rt.search_service.search(
            SearchQuery(query=query, readable_cube_ids=tuple(cube_ids), user_id=user_id, **params))
        return result

    async def get_memory(self, user_id: str, cube_id: str, memory_id: str) -> dict[str, Any]:
        """One memory of a cube (retired ones resolve too); NotFound otherwise."""
        self.check_read(user_id, cube_id)
        records = await self.rt.graph.get([memory_id], cube_id=cube_id)
        if not records:
            raise NotFound(f"memory {memory_id!r} not found in cube {cube_id!r}", field="memory_id")
        return memory_view(records[0])

    async def get_all(self, user_id: str, cube_id: str, *, memory_types: Sequence[str] | None = None,
                      include_retired: bool = False, limit: int | None = None, offset: int = 0
                      ) -> list[dict[str, Any]]:
        """Memories of a cube in creation order."""
        self.check_read(user_id, cube_id)
        records = await self.rt.graph.list_memories(cube_id, include_retired=include_retired,
                                                    memory_types=memory_types, limit=limit, offset=offset)
        return [memory_view(r) for r in records]

    async def delete(self, user_id: str, cube_id: str, memory_ids: Sequence[str]) -> list[str]:
        """Retire memories of one cube (scoped: ids of other cubes are NotFound). Returns ids retired."""
        from schemas.events import MemoryRetired

        await self.check_write(user_id, cube_id, auto_create=False)
        found = {r.id: r for r in await self.rt.graph.get(list(memory_ids), cube_id=cube_id)}
        missing = [m for m in memory_ids if m not in found]
        if missing:
            raise NotFound(f"memories {missing!r} not found in cube {cube_id!r}", field="memory_ids")
        events = [MemoryRetired(**self._event_base(cube_id), memory_id=m, cube_id=cube_id, reason="deleted",
                                requested_by=user_id, valid_to=self.rt.now())
                  for m in memory_ids if found[m].status == "activated"]
        await self.rt.settle(await self.rt.publish(events))
        return [e.memory_id for e in events]

    async def delete_all(self, user_id: str, cube_id: str) -> list[str]:
        """Retire every current memory of a cube."""
        self.check_read(user_id, cube_id)
        ids = [r.id for r in await self.rt.graph.list_memories(cube_id)]
        return await self.delete(user_id, cube_id, ids) if ids else []

    async def export_memories(self, user_id: str, cube_id: str, *, include_retired: bool = False
                              ) -> list[dict[str, Any]]:
        """Every memory of a cube as a full record (JSON-ready, embedding included), in creation order."""
        self.check_read(user_id, cube_id)
        records = await self.rt.graph.list_memories(cube_id, include_retired=include_retired)
        return [r.model_dump(mode="json") for r in records]

    async def import_memories(self, user_id: str, cube_id: str, drafts: Sequence[dict[str, Any]], *,
                              producer: str = "import") -> list[str]:
        """Append one MemoryAdded per draft (MemoryAdded fields, ``memory_id`` required); returns ids added.

        Idempotent by memory id: ids the cube already holds (current or retired) are skipped; an id another
        cube holds is re-keyed to ``derive_id("import:<cube>", id)`` (never moved). Embeddings are kept
        when they come from this runtime's embedder, else computed. Waits until searchable.
        """
        from pydantic import ValidationError

        from schemas.events import MemoryAdded, derive_id

        await self.check_write(user_id, cube_id, auto_create=False)
        unique = {str(d["memory_id"]): d for d in drafts if str(d.get("memory") or "").strip()}
        rekeyed = {i: str(derive_id(f"import:{cube_id}", i)) for i in unique}
        owner = {r.id: r.cube_id for r in await self.rt.graph.get([*unique, *rekeyed.values()])} if unique else {}
        fresh = []
        for i, d in unique.items():
            new_id = i if owner.get(i, cube_id) == cube_id else rekeyed[i]
            if owner.get(new_id) != cube_id:
                fresh.append({**d, "memory_id": new_id})
        model_id = getattr(self.rt.embedder, "model_id", "")
        stale = [n for n, d in enumerate(fresh) if not d.get("embedding") or d.get("embedding_model") != model_id]
        if stale:
            embedded = await self.rt.embedder.embed([str(fresh[n]["memory"]) for n in stale], kind="passage")
            for n, vector in zip(stale, embedded.vectors, strict=True):
                fresh[n] = {**fresh[n], "embedding": vector, "embedding_model": embedded.model_id}
        try:
            events = [MemoryAdded(**self._event_base(cube_id, producer), **{"user_id": user_id, **d,
                                                                          "cube_id": cube_id})
                      for d in fresh]
        except ValidationError as exc:
            raise ValidationFailed(f"memories to import into cube {cube_id!r} are invalid: {exc}",
                                   field="memories") from exc
        await self.rt.settle(await self.rt.publish(events))
        return [e.memory_id for e in events]

    # --- tasks ------------------------------------------------------------------------------------------

    async def submit_tasks(self, items: Sequence[dict[str, Any]]) -> list[str]:
        """Append TaskSubmitted events (user_id, cube_id, label, content, ...); returns task ids."""
        events = []
        for item in items:
            cube_id = item["cube_id"]
            task_id = item.get("task_id") or uuid.uuid4().hex
            events.append(TaskSubmitted(**self._event_base(cube_id, "scheduler"), task_id=task_id,
                                        user_id=item["user_id"], cube_id=cube_id, label=item["label"],
                                        content=item.get("content", ""),
                                        business_task_id=item.get("business_task_id"),
                                        session_id=item.get("session_id") or "default_session",
                                        payload=item.get("payload", {})))
        for event in events:
            self.control.apply("tasks", event, None)
        await self.rt.publish(events)
        return [e.task_id for e in events]

    # --- forget -----------------------------------------------------------------------------------------

    async def forget_cube(self, cube_id: str, *, requested_by: str | None = None) -> None:
        """Remove every trace of a cube from every projection and from the log."""
        if requested_by is not None and self.control.access(requested_by, cube_id) != "owner":
            raise PermissionDenied(f"only the owner may forget cube {cube_id!r}", field="cube_id")
        event = CubeForgotten(**self._event_base(cube_id), cube_id=cube_id, requested_by=requested_by or "")
        await self._registry([event])
        if self.rt.run_stages:
            # let every stage consume the cube's records first: a consumer commits only records it saw,
            # so deleting unconsumed records at a partition's tail would stall later settles
            await self.rt.settle([])
        key = cube_id.encode()
        async with self.rt.projection_stage.lock:
            for topic in (CONVERSATIONS, MEMORIES, TASKS, ACTIVATION, REGISTRY):
                await self.rt.log.forget_key(topic, key)
            await apply_planned(self.rt.stores, [([DropCube(cube_id=cube_id)], _no_position())], replay=True)
        if self.rt.run_stages:
            await self.rt.settle([])
            async with self.rt.projection_stage.lock:
                await apply_planned(self.rt.stores, [([DropCube(cube_id=cube_id)], _no_position())], replay=True)

    async def forget_user(self, user_id: str) -> list[str]:
        """Forget a user and every cube it owns; returns the cubes forgotten."""
        if not self.control.user_exists(user_id):
            raise NotFound(f"user {user_id!r} does not exist", field="user_id")
        owned = [c["cube_id"] for c in self.control.cubes_of(user_id) if c["access"] == "owner"]
        for cube_id in owned:
            await self.forget_cube(cube_id)
        await self._registry([UserForgotten(**self._event_base(user_id), user_id=user_id)])
        if self.rt.run_stages:
            await self.rt.settle([])  # see forget_cube: consume before deleting
        await self.rt.log.forget_key(REGISTRY, user_id.encode())
        return owned


def _no_position() -> Any:
    from schemas.envelope import Position

    return Position(MEMORIES, -1, -1)


def _check_id(value: str, field: str) -> None:
    if not value or not value.strip():
        raise ValidationFailed(f"{field} must not be empty", field=field)
    if len(value) > 256:
        raise ValidationFailed(f"{field} is longer than 256 characters", field=field)
