"""The memory service: every use case behind the one door (access checks, ids, bounds), on a Platform."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from memos.application.admission import SearchGate, gate_for
from memos.application.buckets import BUCKET_KEYS, bucket_of, types_for
from memos.application.chat import ChatUseCases
from memos.application.cube_guard import CubeGuard, cube_guard_for
from memos.application.errors import AddFailed, AddTimedOut, BacklogFull
from memos.application.feeds import changes_for, feed_slots_for
from memos.application.forgetting import ForgetUseCases
from memos.application.ids import check_id, check_ids
from memos.application.limits import (
    DoorLimits,
    check_add_size,
    check_memory_id,
    check_memory_ids,
    check_message_fields,
    check_query,
    check_strings,
    check_tags,
    check_text,
    named_ids,
)
from memos.application.models import AddRequest, CubeAdd, DeleteRequest, MemoriesQuery, SearchRequest, build
from memos.application.pending import PendingWork, Record, Waiting, pending_work_for
from memos.application.ports import Platform
from memos.application.replays import ReplayGate, replay_gate_for
from memos.application.status import StatusUseCases
from memos.application.tasks import TaskUseCases
from memos.application.views import memory_view
from schemas.envelope import Position
from schemas.errors import NotFound, PermissionDenied, ValidationFailed
from schemas.events import (
    ConversationRecorded,
    MemoryRetired,
    TaskStatusChanged,
)
from schemas.memory import MemoryRecord
from streams.log.base import OutgoingRecord
from streams.replay import Progress

if TYPE_CHECKING:
    from processors.filters import Filter

__all__ = ["MemoryService", "memory_view"]

logger = logging.getLogger(__name__)

Mode = Literal["fast", "fine"]


class MemoryService(ForgetUseCases, TaskUseCases, StatusUseCases, ChatUseCases):
    """User-facing use cases. Every read and write is checked by ``authorize``; ids by ``check_id``."""

    def __init__(self, runtime: Platform, *, limits: DoorLimits | None = None) -> None:
        self.rt = runtime
        self.limits = limits or runtime.door_limits
        self.cube_guard: CubeGuard = cube_guard_for(runtime)
        """Writes to a cube and its forgetting kept apart (shared by every service over this runtime)."""
        self.pending: PendingWork = pending_work_for(runtime)
        """Each user's adds waiting for derivation (``door.max_pending_per_user``), shared likewise."""
        self.search_gate: SearchGate = gate_for(
            runtime, max_active=self.limits.active_searches, queue_ms=self.limits.search_queue_ms,
            per_user=self.limits.searches_per_user, retry_after_s=self.limits.search_retry_after_s,
            lifo_after_ms=self.limits.search_lifo_after_ms, overload_queue_ms=self.limits.search_overload_queue_ms)
        """Admission of searches (``door.max_active_searches`` and friends), shared by every service over
        this runtime: the HTTP server, MCP and the in-process API count against the same slots."""
        self.replays: ReplayGate = replay_gate_for(runtime)
        """Admission of replays (``door.replays_per_user`` / ``door.replays_at_once``), shared likewise."""

    # --- add ----------------------------------------------------------------------------------------

    async def add(self, user_id: str, cube_ids: Sequence[str], messages: list[dict[str, Any]], *,
                  session_id: str = "default_session", mode: Mode = "fine",
                  async_mode: Literal["sync", "async"] = "sync", info: dict[str, Any] | None = None,
                  custom_tags: Sequence[str] = (), task_id: str | None = None, trace_id: str | None = None,
                  auto_create: bool | None = None, origin: Literal["remote", "local"] = "remote"
                  ) -> list[dict[str, Any]]:
        """Record messages for each cube; sync waits until the memories are searchable (dict results).

        ``origin``: 'remote' (the default: no local files are read for this add, public URLs only) or
        'local' (in-process callers: files under ``derivation.fetch_local_roots``).
        """
        if not cube_ids:
            raise ValidationFailed("writable_cube_ids must name at least one cube", field="writable_cube_ids")
        request = build(AddRequest, user_id=user_id, cube_ids=tuple(cube_ids), messages=messages,
                        session_id=session_id, mode=mode, async_mode=async_mode, info=info or {},
                        custom_tags=tuple(custom_tags), task_id=task_id, trace_id=trace_id, origin=origin,
                        auto_create=auto_create)
        return [r.as_dict() for r in await self.add_memories(request)]

    async def add_memories(self, request: AddRequest) -> list[CubeAdd]:
        """The add use case: check, record on the log (one record per cube), and for sync wait."""
        user_id = await self.ensure_user(request.user_id)
        cube_ids = check_ids(list(request.cube_ids), "writable_cube_ids") if request.cube_ids else [user_id]
        check_message_fields(request.messages)  # check_strings and the labels' bounds in one walk
        check_strings(request.info, "info")
        check_strings(list(request.custom_tags), "custom_tags")
        check_tags(request.custom_tags)
        check_text(request.session_id, "session_id")
        if request.task_id is not None:
            check_text(request.task_id, "task_id")
        # The per-user bound first (remote callers refused, in-process ones held back), outside the cube guard so
        # that a held-back add does not hold up a forget; the guard then keeps a forget of these cubes waiting
        # until the records are on the log.
        wait_s = None if request.origin == "remote" else self.limits.sync_timeout_s
        from streams.pipeline.stages import is_large_messages

        size = len(json.dumps(request.messages, ensure_ascii=False, default=str))  # what derivation will read
        # the lane every cube's add takes (the derivation stage decides the same from the recorded messages)
        large = is_large_messages(request.messages, self.rt.settings.derivation.large_add_chars, chars=size)
        size = 0 if large else size  # bytes count in the small lane; the large lane's parses have budgets
        async with self.pending.admit(user_id, len(cube_ids), size=size * len(cube_ids),
                                      wait_s=wait_s) as waiting_on, self.cube_guard.writing(cube_ids):
            positions, tasks = await self._record_adds(request, user_id, cube_ids, waiting_on, size, large)
        if request.async_mode == "async":
            return [CubeAdd(cube_id=c, task_id=t, status="waiting") for c, t in tasks]
        try:
            await self.rt.settle(positions, timeout_s=self.limits.sync_timeout_s, large=large,
                                 tasks=[t for _, t in tasks])
        except TimeoutError:
            ids = [t for _, t in tasks]
            raise AddTimedOut(
                f"the add is on the log but its memories were not ready within {self.limits.sync_timeout_s:g}s; "
                f"it will still complete: follow tasks {ids!r}", task_ids=ids,
            ) from None
        out = []
        infos = {tid: await self.rt.control.task(tid) for _, tid in tasks}
        failed = {tid: info.error for tid, info in infos.items() if info is not None and info.status == "failed"}
        if failed:
            why = "; ".join(f"task {tid}: {error}" for tid, error in failed.items())
            raise AddFailed(f"the add is on the log but deriving its memories failed: {why}", task_ids=list(failed))
        for cube_id, tid in tasks:
            info = infos[tid]
            ids = [*info.result.get("memory_ids", []), *info.result.get("revised_ids", [])] if info else []
            records = await self.rt.graph.get(ids, cube_id=cube_id)
            out.append(CubeAdd(
                cube_id=cube_id, task_id=tid, status=info.status if info else "unknown",
                error=info.error if info else None,
                memories=[{"memory_id": r.id, "memory": r.memory, "memory_type": r.memory_type,
                           "cube_id": r.cube_id} for r in records],
            ))
        return out

    async def _record_adds(self, request: AddRequest, user_id: str, cube_ids: list[str], waiting_on: Record,
                           size: int, large: bool) -> tuple[list[Position], list[tuple[str, str]]]:
        """Check write access and the backlog, then put one add record per cube on the log: their positions and
        (cube, task id) pairs; ``waiting_on`` is told where they are, for derivation (of the lane of large adds
        where ``large``) to pass."""
        for cube_id in cube_ids:
            await self.check_write(user_id, cube_id, auto_create=request.auto_create)
        if request.async_mode == "sync":
            backlog = await self.rt.derivation_backlog()
            if backlog >= self.limits.max_backlog:
                raise BacklogFull(
                    f"{backlog} conversation records are waiting for derivation (limit "
                    f"{self.limits.max_backlog}); retry later or add with async_mode='async'",
                    retry_after=self.limits.backlog_retry_after_s,
                )
        from streams.pipeline.runner import event_record

        outgoing: list[OutgoingRecord] = []
        tasks: list[tuple[str, str]] = []
        for cube_id in cube_ids:
            tid = uuid.uuid4().hex
            base = request.task_id or tid
            recorded = ConversationRecorded(
                **self._event_base(cube_id), trace_id=request.trace_id, user_id=user_id, cube_id=cube_id,
                session_id=request.session_id, messages=request.messages, info=request.info,
                custom_tags=list(request.custom_tags), mode=request.mode, async_mode=request.async_mode,
                task_id=tid, origin=request.origin,
            )
            record = event_record(recorded)
            check_add_size(len(record.value), self.limits.max_add_record_bytes, cube_id)
            waiting = TaskStatusChanged(**self._event_base(cube_id), task_id=tid, cube_id=cube_id,
                                        status="waiting", label="add", business_task_id=base)
            outgoing.extend([record, event_record(waiting)])
            tasks.append((cube_id, tid))
        lane = "-large" if large else ""
        positions = await self.rt.publish_records(outgoing)
        refined = request.mode == "fine" and request.async_mode == "async"
        waiting_on([Waiting(p.topic, p.partition, p.offset + 1,
                            (f"deriver{lane}", f"refiner{lane}") if refined else (f"deriver{lane}",), size)
                    for p in positions[::2]])
        return positions, tasks

    # --- search and reads ---------------------------------------------------------------------------

    async def search(self, user_id: str, cube_ids: Sequence[str], query: str, **params: Any) -> dict[str, Any]:
        """Search the cubes the user may read (all must be readable); MemOS's ``data`` shape."""
        counts = {k: params.pop(k) for k in ("top_k", "pref_top_k", "tool_mem_top_k", "skill_mem_top_k")
                  if params.get(k) is not None}
        for k in [k for k, v in params.items() if v is None]:
            params.pop(k)
        request = build(SearchRequest, user_id=user_id, cube_ids=tuple(cube_ids), query=query, options=params,
                        **counts)
        return await self.search_memories(request)

    async def search_memories(self, request: SearchRequest) -> dict[str, Any]:
        """The search use case."""
        from processors.retrieval import SearchQuery

        user_id = check_id(request.user_id, "user_id")
        cube_ids = check_ids(list(request.cube_ids), "readable_cube_ids") if request.cube_ids else [user_id]
        query = check_query(request.query)
        for name, value in request.options.items():
            check_strings(value, name)
        for cube_id in cube_ids:
            await self.authorize(user_id, cube_id, "read")
        known = set(SearchQuery.model_fields) - {"query", "readable_cube_ids", "user_id", "mem_cube_id", "today"}
        unknown = sorted(set(request.options) - known)
        if unknown:
            raise ValidationFailed(f"unknown search option {unknown[0]!r}", field=unknown[0])
        counts = request.model_dump(include={"top_k", "pref_top_k", "tool_mem_top_k", "skill_mem_top_k"})
        search_query = build(SearchQuery, query=query, readable_cube_ids=tuple(cube_ids), user_id=user_id,
                             today=self.rt.now().date(), **counts, **request.options)
        async with self.search_gate.enter(user_id):
            result: dict[str, Any] = await self.rt.search_service.search(search_query)
        return result

    async def get_memory(self, user_id: str, cube_id: str, memory_id: str) -> dict[str, Any]:
        """One memory of a cube (retired ones resolve too); NotFound otherwise."""
        await self.check_read(user_id, cube_id)
        memory_id = check_memory_id(memory_id, "memory_id")
        records = await self.rt.graph.get([memory_id], cube_id=cube_id)
        if not records:
            raise NotFound(f"memory {memory_id!r} not found in cube {cube_id!r}", field="memory_id")
        return memory_view(records[0])

    async def get_all(self, user_id: str, cube_id: str, *, memory_types: Sequence[str] | None = None,
                      include_retired: bool = False, limit: int | None = None, offset: int = 0
                      ) -> list[dict[str, Any]]:
        """Memories of a cube in creation order."""
        await self.check_read(user_id, cube_id)
        records = await self.rt.graph.list_memories(cube_id, include_retired=include_retired,
                                                    memory_types=memory_types, limit=limit, offset=offset)
        return [memory_view(r) for r in records]

    async def get_memories(self, request: MemoriesQuery) -> dict[str, Any]:
        """The memories of one cube by bucket (text, preference, tool, skill), filtered and paged."""
        from processors.filters import compile_filter

        await self.check_read(request.user_id, request.cube_id)
        cube_id = check_id(request.cube_id, "mem_cube_id")
        types = types_for(preference=request.include_preference, tool=request.include_tool_memory,
                          skill=request.include_skill_memory)
        flt = compile_filter(request.filter) if request.filter else None
        records = await self.rt.graph.list_memories(cube_id, memory_types=types)
        if flt is not None:  # a scan of the whole cube: off the event loop, so other callers are served meanwhile
            records = await asyncio.to_thread(_passing, flt, records)
        total = len(records)
        if request.page is not None or request.page_size is not None:
            size = request.page_size or 50
            start = ((request.page or 1) - 1) * size
            records = records[start:start + size]
        groups: dict[str, list[dict[str, Any]]] = {key: [] for key in BUCKET_KEYS.values()}
        for record in records:
            groups[bucket_of(record.memory_type)].append(memory_view(record))
        data: dict[str, Any] = {key: [{"cube_id": cube_id, "memories": items, "total_nodes": len(items)}]
                                for key, items in groups.items()}
        data["total"] = total
        return data

    # --- delete -------------------------------------------------------------------------------------

    async def delete(self, user_id: str, cube_id: str, memory_ids: Sequence[str]) -> list[str]:
        """Retire memories of one cube (scoped: ids of other cubes are NotFound). Returns ids retired."""
        wanted = check_memory_ids(memory_ids if isinstance(memory_ids, str | tuple) else list(memory_ids),
                                  "memory_ids")
        await self.check_write(user_id, cube_id, auto_create=False)
        found = {r.id: r for r in await self.rt.graph.get(wanted, cube_id=cube_id)}
        missing = [m for m in wanted if m not in found]
        if missing:
            raise NotFound(f"memories {named_ids(missing)} not found in cube {cube_id!r}", field="memory_ids")
        await self._check_own(user_id, cube_id, [found[m] for m in wanted])
        return await self._retire(user_id, cube_id, [found[m] for m in wanted])

    async def _check_own(self, user_id: str, cube_id: str, records: Sequence[MemoryRecord]) -> None:
        """PermissionDenied when a user who does not own the cube names memories another user wrote: write access
        to a shared cube lets a user add memories and delete its own, never another user's."""
        foreign = [r.id for r in records if r.user_id != user_id]
        if foreign and await self.access_of(user_id, cube_id) != "owner":
            raise PermissionDenied(f"user {user_id!r} may delete only the memories it wrote in cube {cube_id!r}, "
                                   f"which it does not own; {named_ids(foreign)} were written by others",
                                   field="memory_ids")

    async def _deletable(self, user_id: str, cube_id: str, records: Sequence[MemoryRecord]) -> list[MemoryRecord]:
        """``records`` that ``user_id`` may delete: all for the cube's owner, else only those it wrote."""
        if await self.access_of(user_id, cube_id) == "owner":
            return list(records)
        return [r for r in records if r.user_id == user_id]

    async def _retire(self, user_id: str, cube_id: str, records: Sequence[MemoryRecord]) -> list[str]:
        events = [MemoryRetired(**self._event_base(cube_id), memory_id=r.id, cube_id=cube_id, reason="deleted",
                                requested_by=user_id, valid_to=self.rt.now())
                  for r in records if r.status == "activated"]
        async with self.cube_guard.writing([cube_id]):
            positions = await self.rt.publish(events)
        await self.rt.settle(positions)
        return [e.memory_id for e in events]

    async def delete_memories(self, request: DeleteRequest) -> list[str]:
        """Retire memories by id, file id or filter, only inside the named cubes; unknown ids are NotFound."""
        from processors.filters import compile_filter

        user_id = check_id(request.user_id, "user_id")
        cubes = check_ids(list(request.cube_ids), "writable_cube_ids")
        for cube in cubes:
            await self.check_write(user_id, cube, auto_create=False)
        if not (request.memory_ids or request.file_ids or request.filter):
            raise ValidationFailed("name memory_ids, file_ids or a filter", field="memory_ids")
        plan: dict[str, dict[str, MemoryRecord]] = {cube: {} for cube in cubes}
        if request.memory_ids:
            wanted = check_memory_ids(list(request.memory_ids), "memory_ids")
            seen: set[str] = set()
            for cube in cubes:
                for record in await self.rt.graph.get(wanted, cube_id=cube):
                    plan[cube][record.id] = record
                    seen.add(record.id)
            missing = [m for m in wanted if m not in seen]
            if missing:
                raise NotFound(f"memories {named_ids(missing)} not found in cubes {cubes!r}", field="memory_ids")
            for cube in cubes:
                await self._check_own(user_id, cube, list(plan[cube].values()))
        selectors: list[dict[str, Any]] = []
        if request.file_ids:
            selectors.append({"file_ids": {"in": check_memory_ids(list(request.file_ids), "file_ids")}})
        if request.filter:
            selectors.append(request.filter)
        if selectors:
            flt = compile_filter(selectors[0] if len(selectors) == 1 else {"and": selectors})
            for cube in cubes:
                passing = await asyncio.to_thread(_passing, flt, await self.rt.graph.list_memories(cube))
                for record in await self._deletable(user_id, cube, passing):  # a writer's filter: its own
                    plan[cube][record.id] = record
        deleted: list[str] = []
        for cube, records in plan.items():
            if records:
                deleted += await self._retire(user_id, cube, list(records.values()))
        return deleted

    async def delete_all(self, user_id: str, cube_id: str) -> list[str]:
        """Retire every current memory of a cube (a user who was only given write access: every one it wrote)."""
        await self.check_write(user_id, cube_id, auto_create=False)
        records = await self.rt.graph.list_memories(cube_id)
        return await self._retire(user_id, cube_id, await self._deletable(user_id, cube_id, records))

    # --- export, import, feed, replay ---------------------------------------------------------------

    async def export_memories(self, user_id: str, cube_id: str, *, include_retired: bool = False
                              ) -> list[dict[str, Any]]:
        """Every memory of a cube as a full record (JSON-ready, embedding included), in creation order."""
        await self.check_read(user_id, cube_id)
        records = await self.rt.graph.list_memories(cube_id, include_retired=include_retired)
        return [r.model_dump(mode="json") for r in records]

    async def import_memories(self, user_id: str, cube_id: str, drafts: Sequence[dict[str, Any]], *,
                              producer: str = "import") -> list[str]:
        """Append one MemoryAdded per draft (MemoryAdded fields, ``memory_id`` required); returns ids added.

        Idempotent by memory id: ids the cube already holds (current or retired) are skipped; an id another
        cube holds is re-keyed to ``derive_id("import:<cube>", id)`` (never moved; a random id where that one
        is taken too). The importer is the author. Embeddings are kept when they come from this runtime's
        embedder with its dimension and finite values, else computed. Waits until searchable.
        """
        from memos.application.transfer import import_events

        async with self.cube_guard.writing([cube_id]):
            await self.check_write(user_id, cube_id, auto_create=False)
            check_strings(list(drafts), "memories")
            events = await import_events(self.rt, self._event_base, user_id, cube_id, drafts, producer=producer)
            positions = await self.rt.publish(events)
        await self.rt.settle(positions)
        return [e.memory_id for e in events]

    async def feed(self, user_id: str | None, cube_ids: Sequence[str] | None, *, start: Any = "now",
                   follow: bool = True, everything: bool = False,
                   key_id: str | None = None) -> AsyncIterator[tuple[Any, Any]]:
        """Memory-change events of readable cubes as (envelope, cursor after it); access is checked now,
        and the iterator ends when the user's access to a cube it delivers from is withdrawn, or the key
        ``key_id`` it was opened with is revoked. A user has at most ``door.feeds_per_user`` open (FeedsBusy).

        ``cube_ids`` None: every cube the user may read (``everything``: all cubes, for operators).
        ``start``: 'beginning', 'now', an offset or a cursor (``memos.application.feeds``).
        ``user_id`` None: an operator (the CLI on the data directory): every cube, or the named ones,
        which must exist (NotFound otherwise).
        """
        from memos.application.feeds import check_start

        check_start(start)
        if user_id is None:
            named = check_ids(list(cube_ids), "cube") if cube_ids else None
            for cube in named or []:
                if not await self.control.cube_exists(cube):
                    raise NotFound(f"cube {cube!r} does not exist", field="cube")
            return changes_for(self, self.rt.log, "", named, start, follow, True)
        user_id = check_id(user_id, "user_id")
        cubes: list[str] | None
        if cube_ids:
            cubes = check_ids(list(cube_ids), "cube")
            for cube in cubes:
                await self.authorize(user_id, cube, "read")
        else:
            cubes = [c.cube_id for c in await self.control.cubes_of(user_id)]
            if not cubes and not everything:
                raise NotFound(f"user {user_id!r} cannot read any cube", field="cube")
            cubes = cubes or None
        release = feed_slots_for(self.rt).take(user_id)
        return changes_for(self, self.rt.log, user_id, cubes, start, follow, everything, key_id=key_id,
                           release=release)

    async def replay(self, cube_id: str, *, user_id: str | None = None, progress: Progress | None = None) -> int:
        """Rebuild a cube's projections from the log (the user needs write access; None: operator).
        NotFound for unknown cubes; ReplaysBusy past ``door.replays_*``. Returns the events applied."""
        applied: int = await asyncio.shield(await self.start_replay(cube_id, user_id=user_id, progress=progress))
        return applied

    async def start_replay(self, cube_id: str, *, user_id: str | None = None,
                           progress: Progress | None = None) -> asyncio.Task[int]:
        """``replay``, checked and admitted now, running in the background: one per cube (a second request
        joins the running one), a few per user and per process (``door.replays_per_user`` / ``_at_once``)."""
        cube_id = check_id(cube_id, "cube_id")
        if user_id is not None:
            await self.check_write(user_id, cube_id, auto_create=False)
        elif not await self.control.cube_exists(cube_id):
            raise NotFound(f"cube {cube_id!r} does not exist", field="cube_id")
        await self._projector_here("replay")
        return self.replays.start(cube_id, user_id, lambda report: self.rt.replay_cube(cube_id, progress=report),
                                  progress=progress)


def _passing(flt: Filter | None, records: Sequence[MemoryRecord]) -> list[MemoryRecord]:
    """The records that pass a filter (run on a worker thread: a scan of a whole cube)."""
    from processors.filters import matches

    return [r for r in records if matches(flt, r)]
