"""SQLiteControlStore: the control projection in an embedded SQLite file (the default: $MEMOS_HOME/control.db).

Connections, WAL, error translation and the checkpoint table are the embedded stores' own
(``memory_store.embedded.db.EmbeddedDatabase``); every call runs in a worker thread, so the event loop
never waits on SQLite. A busy or locked database surfaces as StoreUnavailable (retryable).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

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
from memory_store.embedded.db import EmbeddedDatabase, sqlite_path
from schemas import events as ev
from schemas.envelope import Position

__all__ = ["SQLiteControlStore"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (user_id TEXT PRIMARY KEY, user_name TEXT, role TEXT, created_at TEXT);
CREATE TABLE IF NOT EXISTS cubes (cube_id TEXT PRIMARY KEY, owner_id TEXT, cube_name TEXT, config TEXT,
    created_at TEXT);
CREATE TABLE IF NOT EXISTS shares (cube_id TEXT, user_id TEXT, access TEXT, PRIMARY KEY (cube_id, user_id));
CREATE TABLE IF NOT EXISTS api_keys (key_id TEXT PRIMARY KEY, user_id TEXT, key_hash TEXT, name TEXT,
    revoked INTEGER DEFAULT 0);
CREATE TABLE IF NOT EXISTS tasks (task_id TEXT PRIMARY KEY, cube_id TEXT, user_id TEXT, label TEXT,
    business_task_id TEXT, status TEXT, error TEXT, result TEXT, content TEXT, submitted_at TEXT,
    updated_at TEXT);
CREATE INDEX IF NOT EXISTS tasks_business ON tasks (business_task_id);
CREATE INDEX IF NOT EXISTS tasks_cube ON tasks (cube_id, status);
CREATE INDEX IF NOT EXISTS cubes_owner ON cubes (owner_id);
CREATE INDEX IF NOT EXISTS shares_user ON shares (user_id);
"""
_TABLES = ("users", "cubes", "shares", "api_keys", "tasks")
_FINISHED_SQL = ", ".join(f"'{s}'" for s in sorted(FINISHED))


class SQLiteControlStore(ControlStore):
    """The control projection in one SQLite file (``sqlite:///abs/control.db`` or a path)."""

    def __init__(self, url: str | Path, *, synchronous: str = "NORMAL", namespace: str | None = None) -> None:
        """``namespace`` is accepted for symmetry with the server adapters; one file is one namespace."""
        self.path = sqlite_path(url)
        self.db = EmbeddedDatabase(self.path, synchronous=synchronous)  # type: ignore[arg-type]
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="memos-control")
        """Its own threads: access checks (every request) never queue behind search or derivation work
        in the event loop's shared default executor."""

    async def _run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self.db.read() as conn:
            cur = conn.execute(sql, tuple(args))
            cur.row_factory = sqlite3.Row
            return list(cur.fetchall())

    async def _query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return await self._run(lambda: self._rows(sql, args))

    async def start(self) -> None:
        await self._run(lambda: self.db.open(_SCHEMA))

    async def aclose(self) -> None:
        await self._run(self.db.close)

    async def checkpoint(self, topic: str, partition: int) -> int | None:
        def read() -> int | None:
            with self.db.read() as conn:
                return self.db.checkpoint_in(conn, projection_of(topic), topic, partition)

        return await self._run(read)

    async def reset(self) -> None:
        def wipe() -> None:
            with self.db.write() as conn:
                for table in _TABLES:
                    conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
                conn.execute("DELETE FROM checkpoints WHERE projection IN ('access', 'tasks')")

        await self._run(wipe)

    async def apply(self, batch: Sequence[tuple[ev.Event, Position]]) -> int:
        return await self._run(lambda: self._apply_sync(batch))

    def _apply_sync(self, batch: Sequence[tuple[ev.Event, Position]]) -> int:
        applied = 0
        with self.db.write() as conn:
            marks: dict[tuple[str, str, int], int | None] = {}
            for event, position in batch:
                key = (projection_of(position.topic), position.topic, position.partition)
                if key not in marks:
                    marks[key] = self.db.checkpoint_in(conn, *key)
                mark = marks[key]
                if mark is not None and position.offset <= mark:
                    continue
                _Writes(conn).write(event)
                marks[key] = position.offset
                applied += 1
                self.db.set_checkpoint_in(conn, *key, position.offset)
        return applied

    # --- reads ----------------------------------------------------------------------------------------

    async def user(self, user_id: str) -> UserInfo | None:
        rows = await self._query("SELECT user_id, user_name, role, created_at FROM users WHERE user_id=?",
                                 (user_id,))
        return _user(rows[0]) if rows else None

    async def users(self) -> list[UserInfo]:
        rows = await self._query("SELECT user_id, user_name, role, created_at FROM users ORDER BY user_id")
        return [_user(r) for r in rows]

    async def find_cube(self, cube_id: str) -> CubeInfo | None:
        rows = await self._query(
            "SELECT cube_id, owner_id, cube_name, config, created_at FROM cubes WHERE cube_id=?", (cube_id,))
        if not rows:
            return None
        r = rows[0]
        return CubeInfo(r["cube_id"], r["owner_id"], r["cube_name"] or "", json.loads(r["config"] or "{}"),
                        r["created_at"] or "")

    async def shares(self, cube_id: str | None = None) -> list[ShareInfo]:
        where, args = ("WHERE cube_id=?", (cube_id,)) if cube_id is not None else ("", ())
        rows = await self._query(f"SELECT cube_id, user_id, access FROM shares {where} ORDER BY cube_id, user_id",
                                 args)
        return [ShareInfo(r["cube_id"], r["user_id"], "write" if r["access"] == "write" else "read") for r in rows]

    async def cubes_of(self, user_id: str) -> list[CubeAccess]:
        rows = await self._query(
            "SELECT cube_id, cube_name, owner_id, 'owner' AS access FROM cubes WHERE owner_id=? UNION "
            "SELECT c.cube_id, c.cube_name, c.owner_id, s.access FROM cubes c JOIN shares s ON s.cube_id=c.cube_id "
            "WHERE s.user_id=? AND c.owner_id<>? ORDER BY cube_id",
            (user_id, user_id, user_id),
        )
        return [CubeAccess(r["cube_id"], r["cube_name"] or "", r["owner_id"], r["access"]) for r in rows]

    async def all_cubes(self) -> list[str]:
        return [r[0] for r in await self._query("SELECT cube_id FROM cubes ORDER BY cube_id")]

    async def key(self, key_id: str) -> KeyInfo | None:
        rows = await self._query("SELECT key_id, user_id, name, revoked, key_hash FROM api_keys WHERE key_id=?",
                                 (key_id,))
        return _key(rows[0]) if rows else None

    async def keys_of(self, user_id: str) -> list[KeyInfo]:
        rows = await self._query(
            "SELECT key_id, user_id, name, revoked, key_hash FROM api_keys WHERE user_id=? ORDER BY key_id",
            (user_id,))
        return [_key(r) for r in rows]

    async def task(self, task_id: str) -> TaskInfo | None:
        rows = await self._query("SELECT * FROM tasks WHERE task_id=?", (task_id,))
        return _task(rows[0]) if rows else None

    async def tasks(self, *, business_task_id: str | None = None, cube_id: str | None = None,
                    user_id: str | None = None, cube_ids: Sequence[str] | None = None,
                    per_cube: int | None = None, limit: int = 1000) -> list[TaskInfo]:
        clauses: list[str] = []
        args: list[Any] = []
        for column, value in (("business_task_id", business_task_id), ("cube_id", cube_id), ("user_id", user_id)):
            if value is not None:
                clauses.append(f"{column}=?")
                args.append(value)
        if cube_ids is not None:  # one parameter however many cubes (json_each), using the cube index
            clauses.append("cube_id IN (SELECT value FROM json_each(?))")
            args.append(json.dumps(list(cube_ids)))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        source = "tasks"
        if per_cube is not None:  # each cube's newest first, numbered, cut at per_cube
            source = (f"(SELECT *, ROW_NUMBER() OVER (PARTITION BY cube_id ORDER BY submitted_at DESC, task_id) "
                      f"AS nth FROM tasks {where})")  # noqa: S608
            where, args = "WHERE nth <= ?", [*args, per_cube]
        rows = await self._query(
            f"SELECT * FROM {source} {where} ORDER BY submitted_at DESC, task_id LIMIT ?",  # noqa: S608
            (*args, limit))
        return [_task(r) for r in rows]

    async def task_counts(self) -> dict[str, int]:
        rows = await self._query("SELECT status, COUNT(*) FROM tasks GROUP BY status")
        return {r[0]: int(r[1]) for r in rows}


def _drop_cube(conn: sqlite3.Connection, cube_id: str) -> None:
    conn.execute("DELETE FROM cubes WHERE cube_id=?", (cube_id,))
    conn.execute("DELETE FROM shares WHERE cube_id=?", (cube_id,))
    conn.execute("DELETE FROM tasks WHERE cube_id=?", (cube_id,))


class _Writes(ControlEventWriter[None]):
    """Each control event's statements, run in the caller's write transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def user_created(self, event: ev.UserCreated) -> None:
        self.conn.execute(
            "INSERT INTO users VALUES (?,?,?,?) ON CONFLICT (user_id) DO UPDATE SET "
            "user_name=excluded.user_name, role=excluded.role",
            (event.user_id, event.user_name, event.role, event.occurred_at.isoformat()),
        )

    def user_forgotten(self, event: ev.UserForgotten) -> None:
        conn = self.conn
        owned = [r[0] for r in conn.execute("SELECT cube_id FROM cubes WHERE owner_id=?", (event.user_id,))]
        for cube_id in owned:
            _drop_cube(conn, cube_id)
        conn.execute("DELETE FROM users WHERE user_id=?", (event.user_id,))
        conn.execute("DELETE FROM shares WHERE user_id=?", (event.user_id,))
        conn.execute("DELETE FROM api_keys WHERE user_id=?", (event.user_id,))
        conn.execute("DELETE FROM tasks WHERE user_id=?", (event.user_id,))

    def cube_created(self, event: ev.CubeCreated) -> None:
        self.conn.execute(
            "INSERT INTO cubes VALUES (?,?,?,?,?) ON CONFLICT (cube_id) DO NOTHING",
            (event.cube_id, event.owner_id, event.cube_name, json.dumps(event.config), event.occurred_at.isoformat()),
        )

    def cube_shared(self, event: ev.CubeShared) -> None:
        if event.access == "none":
            self.conn.execute("DELETE FROM shares WHERE cube_id=? AND user_id=?", (event.cube_id, event.user_id))
        else:
            self.conn.execute(
                "INSERT INTO shares VALUES (?,?,?) ON CONFLICT (cube_id, user_id) DO UPDATE SET "
                "access=excluded.access",
                (event.cube_id, event.user_id, event.access),
            )

    def cube_forgotten(self, event: ev.CubeForgotten) -> None:
        _drop_cube(self.conn, event.cube_id)

    def api_key_issued(self, event: ev.ApiKeyIssued) -> None:
        self.conn.execute(
            "INSERT INTO api_keys VALUES (?,?,?,?,0) ON CONFLICT (key_id) DO NOTHING",
            (event.key_id, event.user_id, event.key_hash, event.name),
        )

    def api_key_revoked(self, event: ev.ApiKeyRevoked) -> None:
        self.conn.execute("UPDATE api_keys SET revoked=1 WHERE key_id=?", (event.key_id,))

    def task_submitted(self, event: ev.TaskSubmitted) -> None:
        at = event.occurred_at.isoformat()
        self.conn.execute(
            "INSERT INTO tasks VALUES (?,?,?,?,?,'waiting',NULL,'{}',?,?,?) ON CONFLICT (task_id) DO UPDATE SET "
            "user_id=excluded.user_id, content=excluded.content, submitted_at=excluded.submitted_at "
            "WHERE tasks.user_id=''",
            (event.task_id, event.cube_id, event.user_id, event.label, event.business_task_id,
             event.content, at, at),
        )

    def task_status_changed(self, event: ev.TaskStatusChanged) -> None:
        at = event.occurred_at.isoformat()
        self.conn.execute(
            "INSERT INTO tasks VALUES (?,?,'',?,?,?,?,?,'',?,?) ON CONFLICT (task_id) DO UPDATE SET "
            "status=excluded.status, error=excluded.error, result=excluded.result, "
            f"updated_at=excluded.updated_at WHERE NOT (tasks.status IN ({_FINISHED_SQL}) AND "
            "excluded.status IN ('waiting', 'in_progress'))",
            (event.task_id, event.cube_id, event.label, event.business_task_id, event.status,
             event.error, json.dumps(event.result), at, at),
        )

    def ignored(self, event: ev.Event) -> None:
        return None


def _user(r: sqlite3.Row) -> UserInfo:
    return UserInfo(r["user_id"], r["user_name"] or "", r["role"] or "user", r["created_at"] or "")


def _key(r: sqlite3.Row) -> KeyInfo:
    return KeyInfo(r["key_id"], r["user_id"], r["name"] or "", bool(r["revoked"]), r["key_hash"])


def _task(row: sqlite3.Row) -> TaskInfo:
    return TaskInfo(
        task_id=row["task_id"], cube_id=row["cube_id"], user_id=row["user_id"] or "", label=row["label"] or "",
        business_task_id=row["business_task_id"], status=row["status"], error=row["error"],
        result=json.loads(row["result"] or "{}"), content=row["content"] or "",
        submitted_at=row["submitted_at"] or "", updated_at=row["updated_at"] or "",
    )
