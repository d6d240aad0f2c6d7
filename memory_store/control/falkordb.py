"""FalkorDBControlStore: the control projection on a FalkorDB server, through its Redis protocol.

FalkorDB is a Redis module, so the control records are plain Redis keys beside the graph: one JSON value
per user, cube, key and task, sets as indexes, and one checkpoint hash. Each record is applied in one
optimistic transaction (WATCH the checkpoint hash, read, MULTI, write the record and its checkpoint,
EXEC), so a record's writes and its checkpoint land together, and two appliers never interleave (the
second one's EXEC fails and it retries on the new state). Client errors are translated like the graph
store's: connection problems are StoreUnavailable (retryable), the rest StoreError.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from memory_store.control.base import (
    FINISHED,
    ControlEventWriter,
    ControlStore,
    CubeAccess,
    CubeInfo,
    KeyInfo,
    ShareInfo,
    TaskInfo,
    UserInfo,
    projection_of,
)
from memory_store.graph.falkordb import map_falkordb_errors
from schemas import events as ev
from schemas.envelope import Position
from schemas.errors import ConfigError, StoreError

__all__ = ["FalkorDBControlStore"]

logger = logging.getLogger(__name__)

_SCHEMES = {"falkordb", "falkor", "redis"}
_MAX_TX_RETRIES = 50

Write = tuple[str, tuple[Any, ...]]
"""A Redis command and its arguments, queued in the record's transaction."""


class FalkorDBControlStore(ControlStore):
    """Control records under ``<namespace>:control:`` on a FalkorDB (Redis protocol) server.

    ``url``: ``falkordb://[user:password@]host:port[/namespace]`` (``falkor://`` and ``redis://`` too).
    """

    def __init__(self, url: str = "falkordb://127.0.0.1:6379", *, namespace: str | None = None,
                 timeout_s: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise ConfigError(f"FalkorDBControlStore needs a falkordb:// URL, got {url!r}")
        namespace = namespace or parts.path.strip("/") or "memos"
        self.url = url
        self.namespace = namespace
        self.prefix = f"{namespace}:control:"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._timeout_s = timeout_s
        self._client: Any = None

    def __repr__(self) -> str:
        return f"FalkorDBControlStore(host={self._host!r}, port={self._port}, namespace={self.namespace!r})"

    @property
    def client(self) -> Any:
        if self._client is None:
            raise StoreError("FalkorDBControlStore is not started (call start() first)")
        return self._client

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def start(self) -> None:
        if self._client is not None:
            return
        try:
            import redis.asyncio as aioredis
        except ImportError as exc:  # pragma: no cover - the falkordb client brings redis
            raise ConfigError('FalkorDBControlStore needs redis: pip install "memos-stream[neo4j]"') from exc
        client = aioredis.Redis(host=self._host, port=self._port, username=self._username,
                                password=self._password, socket_timeout=self._timeout_s,
                                socket_connect_timeout=min(self._timeout_s, 10.0), decode_responses=True)
        with map_falkordb_errors("connect"):
            await client.ping()
        self._client = client
        logger.info("opened control store %r", self)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def checkpoint(self, topic: str, partition: int) -> int | None:
        with map_falkordb_errors("checkpoint"):
            value = await self.client.hget(self._k("checkpoints"), _mark(topic, partition))
        return None if value is None else int(value)

    async def reset(self) -> None:
        with map_falkordb_errors("reset"):
            keys = [k async for k in self.client.scan_iter(match=self.prefix + "*", count=1000)]
            for start in range(0, len(keys), 500):
                await self.client.delete(*keys[start:start + 500])

    # --- apply ----------------------------------------------------------------------------------------

    async def apply(self, batch: Sequence[tuple[ev.Event, Position]]) -> int:
        applied = 0
        with map_falkordb_errors("apply"):
            for event, position in batch:
                applied += await self._apply_one(event, position)
        return applied

    async def _apply_one(self, event: ev.Event, position: Position) -> int:
        from redis.exceptions import WatchError

        marks, field = self._k("checkpoints"), _mark(position.topic, position.partition)
        async with self.client.pipeline(transaction=True) as pipe:
            for _ in range(_MAX_TX_RETRIES):
                try:
                    await pipe.watch(marks)
                    current = await pipe.hget(marks, field)
                    if current is not None and position.offset <= int(current):
                        await pipe.unwatch()
                        return 0
                    writes = await _Plan(self, pipe).write(event)
                    pipe.multi()
                    for command, args in writes:
                        getattr(pipe, command)(*args)
                    pipe.hset(marks, field, position.offset)
                    await pipe.execute()
                    return 1
                except WatchError:
                    continue
        raise StoreError(f"control record at {position} lost {_MAX_TX_RETRIES} races with other appliers")

    async def _get(self, pipe: Any, *parts: str) -> dict[str, Any] | None:
        raw = await pipe.get(self._k(*parts))
        return None if raw is None else dict(json.loads(raw))

    def _put_task(self, record: dict[str, Any]) -> list[Write]:
        k, tid = self._k, record["task_id"]
        w: list[Write] = [("set", (k("task", tid), json.dumps(record))),
                                                 ("sadd", (k("tasks", "all"), tid)),
                                                 ("sadd", (k("tasks", "cube", record["cube_id"]), tid))]
        if record["user_id"]:
            w.append(("sadd", (k("tasks", "user", record["user_id"]), tid)))
        if record["business_task_id"] is not None:
            w.append(("sadd", (k("tasks", "business", record["business_task_id"]), tid)))
        return w

    async def _drop_task(self, pipe: Any, task_id: str) -> list[Write]:
        k = self._k
        old = await self._get(pipe, "task", task_id)
        w: list[Write] = [("delete", (k("task", task_id),)), ("srem", (k("tasks", "all"), task_id))]
        if old is not None:
            w.append(("srem", (k("tasks", "cube", old["cube_id"]), task_id)))
            if old["user_id"]:
                w.append(("srem", (k("tasks", "user", old["user_id"]), task_id)))
            if old["business_task_id"] is not None:
                w.append(("srem", (k("tasks", "business", old["business_task_id"]), task_id)))
        return w

    async def _drop_cube(self, pipe: Any, cube_id: str) -> list[Write]:
        k = self._k
        w: list[Write] = []
        old = await self._get(pipe, "cube", cube_id)
        if old is not None:
            w.append(("srem", (k("owned", old["owner_id"]), cube_id)))
        for user_id in await pipe.hkeys(k("shares", cube_id)):
            w.append(("srem", (k("shared", user_id), cube_id)))
        for task_id in await pipe.smembers(k("tasks", "cube", cube_id)):
            w += await self._drop_task(pipe, task_id)
        w += [("delete", (k("cube", cube_id), k("shares", cube_id), k("tasks", "cube", cube_id))),
              ("srem", (k("cubes"), cube_id))]
        return w

    # --- reads ----------------------------------------------------------------------------------------

    async def _json(self, *parts: str) -> dict[str, Any] | None:
        with map_falkordb_errors("read"):
            raw = await self.client.get(self._k(*parts))
        return None if raw is None else dict(json.loads(raw))

    async def _many(self, kind: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        with map_falkordb_errors("read"):
            raws = await self.client.mget([self._k(kind, i) for i in ids])
        return [dict(json.loads(r)) for r in raws if r is not None]

    async def _members(self, *parts: str) -> list[str]:
        with map_falkordb_errors("read"):
            return sorted(await self.client.smembers(self._k(*parts)))

    async def user(self, user_id: str) -> UserInfo | None:
        r = await self._json("user", user_id)
        return None if r is None else UserInfo(r["user_id"], r["user_name"], r["role"], r["created_at"])

    async def users(self) -> list[UserInfo]:
        rows = await self._many("user", await self._members("users"))
        return [UserInfo(r["user_id"], r["user_name"], r["role"], r["created_at"]) for r in rows]

    async def find_cube(self, cube_id: str) -> CubeInfo | None:
        r = await self._json("cube", cube_id)
        return None if r is None else _cube(r)

    async def shares(self, cube_id: str | None = None) -> list[ShareInfo]:
        cubes = [cube_id] if cube_id is not None else await self.all_cubes()
        out: list[ShareInfo] = []
        for cid in cubes:
            with map_falkordb_errors("read"):
                granted = await self.client.hgetall(self._k("shares", cid))
            out += [ShareInfo(cid, uid, "write" if a == "write" else "read") for uid, a in sorted(granted.items())]
        return out

    async def cubes_of(self, user_id: str) -> list[CubeAccess]:
        owned = await self._many("cube", await self._members("owned", user_id))
        out = {r["cube_id"]: CubeAccess(r["cube_id"], r["cube_name"], r["owner_id"], "owner") for r in owned}
        shared = await self._many("cube", await self._members("shared", user_id))
        for r in shared:
            if r["cube_id"] in out:
                continue
            with map_falkordb_errors("read"):
                access = await self.client.hget(self._k("shares", r["cube_id"]), user_id)
            if access is not None:
                out[r["cube_id"]] = CubeAccess(r["cube_id"], r["cube_name"], r["owner_id"],
                                               "write" if access == "write" else "read")
        return [out[c] for c in sorted(out)]

    async def all_cubes(self) -> list[str]:
        return await self._members("cubes")

    async def key(self, key_id: str) -> KeyInfo | None:
        r = await self._json("key", key_id)
        return None if r is None else _key(r)

    async def keys_of(self, user_id: str) -> list[KeyInfo]:
        return [_key(r) for r in await self._many("key", await self._members("keys", user_id))]

    async def task(self, task_id: str) -> TaskInfo | None:
        r = await self._json("task", task_id)
        return None if r is None else _task(r)

    async def tasks(self, *, business_task_id: str | None = None, cube_id: str | None = None,
                    user_id: str | None = None, cube_ids: Sequence[str] | None = None,
                    per_cube: int | None = None, limit: int = 1000) -> list[TaskInfo]:
        sets = [("business", business_task_id), ("cube", cube_id), ("user", user_id)]
        keys = [self._k("tasks", kind, value) for kind, value in sets if value is not None]
        if cube_ids is not None and not cube_ids:
            return []
        with map_falkordb_errors("read"):
            if cube_ids is not None:  # the union of the cubes' sets, then the other filters
                ids = set(await self.client.sunion([self._k("tasks", "cube", c) for c in dict.fromkeys(cube_ids)]))
                if keys:
                    ids &= set(await self.client.sinter(keys))
            else:
                ids = await (self.client.sinter(keys) if keys else self.client.smembers(self._k("tasks", "all")))
        rows = [_task(r) for r in await self._many("task", sorted(ids))]
        rows.sort(key=lambda t: t.task_id)
        rows.sort(key=lambda t: t.submitted_at, reverse=True)
        if per_cube is not None:  # each cube's newest per_cube, in the same order
            kept: list[TaskInfo] = []
            seen: dict[str, int] = {}
            for task in rows:
                seen[task.cube_id] = seen.get(task.cube_id, 0) + 1
                if seen[task.cube_id] <= per_cube:
                    kept.append(task)
            rows = kept
        return rows[:limit]

    async def task_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in await self.tasks(limit=1 << 62):
            counts[t.status] = counts.get(t.status, 0) + 1
        return counts


def _mark(topic: str, partition: int) -> str:
    return f"{projection_of(topic)}|{topic}|{partition}"


def _cube(r: dict[str, Any]) -> CubeInfo:
    return CubeInfo(r["cube_id"], r["owner_id"], r["cube_name"] or "", dict(r["config"] or {}), r["created_at"])


def _key(r: dict[str, Any]) -> KeyInfo:
    return KeyInfo(r["key_id"], r["user_id"], r["name"], bool(r["revoked"]), r["key_hash"])


def _task(r: dict[str, Any]) -> TaskInfo:
    return TaskInfo(task_id=r["task_id"], cube_id=r["cube_id"], user_id=r["user_id"], label=r["label"],
                    business_task_id=r["business_task_id"], status=r["status"], error=r["error"],
                    result=dict(r["result"]), content=r["content"], submitted_at=r["submitted_at"],
                    updated_at=r["updated_at"])


class _Plan(ControlEventWriter[Awaitable[list[Write]]]):
    """Reads what each event's writes depend on (under WATCH) and returns the writes to queue."""

    def __init__(self, store: FalkorDBControlStore, pipe: Any) -> None:
        self.store, self.pipe, self.k = store, pipe, store._k

    async def user_created(self, event: ev.UserCreated) -> list[Write]:
        old = await self.store._get(self.pipe, "user", event.user_id)
        record = {"user_id": event.user_id, "user_name": event.user_name, "role": event.role,
                  "created_at": old["created_at"] if old else event.occurred_at.isoformat()}
        return [("set", (self.k("user", event.user_id), json.dumps(record))),
                ("sadd", (self.k("users"), event.user_id))]

    async def user_forgotten(self, event: ev.UserForgotten) -> list[Write]:
        k, pipe, uid = self.k, self.pipe, event.user_id
        w: list[Write] = []
        for cube_id in await pipe.smembers(k("owned", uid)):
            w += await self.store._drop_cube(pipe, cube_id)
        for cube_id in await pipe.smembers(k("shared", uid)):
            w.append(("hdel", (k("shares", cube_id), uid)))
        for key_id in await pipe.smembers(k("keys", uid)):
            w.append(("delete", (k("key", key_id),)))
        for task_id in await pipe.smembers(k("tasks", "user", uid)):
            w += await self.store._drop_task(pipe, task_id)
        return [*w, ("delete", (k("user", uid), k("owned", uid), k("shared", uid), k("keys", uid),
                                k("tasks", "user", uid))), ("srem", (k("users"), uid))]

    async def cube_created(self, event: ev.CubeCreated) -> list[Write]:
        k = self.k
        if await self.pipe.exists(k("cube", event.cube_id)):
            return []
        record = {"cube_id": event.cube_id, "owner_id": event.owner_id, "cube_name": event.cube_name,
                  "config": event.config, "created_at": event.occurred_at.isoformat()}
        return [("set", (k("cube", event.cube_id), json.dumps(record))),
                ("sadd", (k("cubes"), event.cube_id)), ("sadd", (k("owned", event.owner_id), event.cube_id))]

    async def cube_shared(self, event: ev.CubeShared) -> list[Write]:
        k = self.k
        if event.access == "none":
            return [("hdel", (k("shares", event.cube_id), event.user_id)),
                    ("srem", (k("shared", event.user_id), event.cube_id))]
        return [("hset", (k("shares", event.cube_id), event.user_id, event.access)),
                ("sadd", (k("shared", event.user_id), event.cube_id))]

    async def cube_forgotten(self, event: ev.CubeForgotten) -> list[Write]:
        return await self.store._drop_cube(self.pipe, event.cube_id)

    async def api_key_issued(self, event: ev.ApiKeyIssued) -> list[Write]:
        k = self.k
        if await self.pipe.exists(k("key", event.key_id)):
            return []
        record = {"key_id": event.key_id, "user_id": event.user_id, "key_hash": event.key_hash,
                  "name": event.name, "revoked": False}
        return [("set", (k("key", event.key_id), json.dumps(record))),
                ("sadd", (k("keys", event.user_id), event.key_id))]

    async def api_key_revoked(self, event: ev.ApiKeyRevoked) -> list[Write]:
        old = await self.store._get(self.pipe, "key", event.key_id)
        if old is None:
            return []
        return [("set", (self.k("key", event.key_id), json.dumps({**old, "revoked": True})))]

    async def task_submitted(self, event: ev.TaskSubmitted) -> list[Write]:
        at = event.occurred_at.isoformat()
        old = await self.store._get(self.pipe, "task", event.task_id)
        if old is not None and old["user_id"]:
            return []
        record = old or {"task_id": event.task_id, "cube_id": event.cube_id, "label": event.label,
                         "business_task_id": event.business_task_id, "status": "waiting", "error": None,
                         "result": {}, "updated_at": at}
        record.update(user_id=event.user_id, content=event.content, submitted_at=at)
        return self.store._put_task(record)

    async def task_status_changed(self, event: ev.TaskStatusChanged) -> list[Write]:
        at = event.occurred_at.isoformat()
        old = await self.store._get(self.pipe, "task", event.task_id)
        if old is not None and old["status"] in FINISHED and event.status in ("waiting", "in_progress"):
            return []
        record = old or {"task_id": event.task_id, "cube_id": event.cube_id, "user_id": "",
                         "label": event.label, "business_task_id": event.business_task_id,
                         "content": "", "submitted_at": at}
        record.update(status=event.status, error=event.error, result=event.result, updated_at=at)
        return self.store._put_task(record)

    async def ignored(self, event: ev.Event) -> list[Write]:
        return []
