"""Control-plane projections in SQLite: who may use which cube (registry topic) and task status (tasks topic)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from schemas.envelope import Position
from schemas.errors import NotFound, StoreError
from schemas.events import (
    ApiKeyIssued,
    ApiKeyRevoked,
    CubeCreated,
    CubeForgotten,
    CubeShared,
    Event,
    TaskStatusChanged,
    TaskSubmitted,
    UserCreated,
    UserForgotten,
)

__all__ = ["ControlStore", "CubeInfo", "TaskInfo", "hash_api_key", "verify_api_key"]

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (projection TEXT, topic TEXT, partition INTEGER, offset INTEGER,
    PRIMARY KEY (projection, topic, partition));
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
"""


def hash_api_key(secret: str, *, salt: bytes) -> str:
    """scrypt hash of an API key secret, as 'salt_hex$hash_hex'."""
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=2**12, r=8, p=1, dklen=32)
    return f"{salt.hex()}${digest.hex()}"


def verify_api_key(secret: str, stored: str) -> bool:
    """Constant-time check of a secret against a stored 'salt$hash'."""
    salt_hex, _, _ = stored.partition("$")
    try:
        candidate = hash_api_key(secret, salt=bytes.fromhex(salt_hex))
    except ValueError:
        return False
    return hmac.compare_digest(candidate, stored)


@dataclass(frozen=True, slots=True)
class CubeInfo:
    """A cube and its owner."""

    cube_id: str
    owner_id: str
    cube_name: str
    config: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A task's current status."""

    task_id: str
    cube_id: str
    user_id: str
    label: str
    business_task_id: str | None
    status: str
    error: str | None
    result: dict[str, Any]
    content: str
    submitted_at: str
    updated_at: str


class ControlStore:
    """One SQLite file holding the access and task projections, each checkpointed by position."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None

    def start(self) -> None:
        """Open the file and create tables. Idempotent."""
        with self._lock:
            if self._conn is not None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            self._conn = conn

    def close(self) -> None:
        """Close the file. Idempotent."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("control store is not started")
        return self._conn

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            cur = self.conn.execute(sql, tuple(args))
            cur.row_factory = sqlite3.Row
            return list(cur.fetchall())

    def checkpoint(self, projection: str, topic: str, partition: int) -> int | None:
        """Last applied offset of a projection on a partition."""
        rows = self._query(
            "SELECT offset FROM checkpoints WHERE projection=? AND topic=? AND partition=?",
            (projection, topic, partition),
        )
        return int(rows[0][0]) if rows else None

    def apply(self, projection: Literal["access", "tasks"], event: Event, position: Position | None) -> bool:
        """Apply one event at a position atomically with the checkpoint; False if already applied.

        ``position=None`` applies without a checkpoint (used for immediate local application; the
        consumer applying the same event later is harmless because every write is idempotent).
        """
        with self._lock:
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                if position is not None:
                    row = conn.execute(
                        "SELECT offset FROM checkpoints WHERE projection=? AND topic=? AND partition=?",
                        (projection, position.topic, position.partition),
                    ).fetchone()
                    if row is not None and position.offset <= row[0]:
                        conn.execute("ROLLBACK")
                        return False
                self._write(conn, event)
                if position is not None:
                    conn.execute(
                        "INSERT INTO checkpoints VALUES (?,?,?,?) ON CONFLICT (projection, topic, partition)"
                        " DO UPDATE SET offset=excluded.offset",
                        (projection, position.topic, position.partition, position.offset),
                    )
                conn.execute("COMMIT")
                return True
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _write(self, conn: sqlite3.Connection, event: Event) -> None:
        at = event.occurred_at.isoformat()
        match event:
            case UserCreated():
                conn.execute(
                    "INSERT INTO users VALUES (?,?,?,?) ON CONFLICT (user_id) DO UPDATE SET "
                    "user_name=excluded.user_name, role=excluded.role",
                    (event.user_id, event.user_name, event.role, at),
                )
            case UserForgotten():
                owned = [r[0] for r in conn.execute("SELECT cube_id FROM cubes WHERE owner_id=?", (event.user_id,))]
                for cube_id in owned:
                    self._drop_cube(conn, cube_id)
                conn.execute("DELETE FROM users WHERE user_id=?", (event.user_id,))
                conn.execute("DELETE FROM shares WHERE user_id=?", (event.user_id,))
                conn.execute("DELETE FROM api_keys WHERE user_id=?", (event.user_id,))
                conn.execute("DELETE FROM tasks WHERE user_id=?", (event.user_id,))
            case CubeCreated():
                conn.execute(
                    "INSERT INTO cubes VALUES (?,?,?,?,?) ON CONFLICT (cube_id) DO NOTHING",
                    (event.cube_id, event.owner_id, event.cube_name, json.dumps(event.config), at),
                )
            case CubeShared():
                if event.access == "none":
                    conn.execute("DELETE FROM shares WHERE cube_id=? AND user_id=?", (event.cube_id, event.user_id))
                else:
                    conn.execute(
                        "INSERT INTO shares VALUES (?,?,?) ON CONFLICT (cube_id, user_id) DO UPDATE SET "
                        "access=excluded.access",
                        (event.cube_id, event.user_id, event.access),
                    )
            case CubeForgotten():
                self._drop_cube(conn, event.cube_id)
            case ApiKeyIssued():
                conn.execute(
                    "INSERT INTO api_keys VALUES (?,?,?,?,0) ON CONFLICT (key_id) DO NOTHING",
                    (event.key_id, event.user_id, event.key_hash, event.name),
                )
            case ApiKeyRevoked():
                conn.execute("UPDATE api_keys SET revoked=1 WHERE key_id=?", (event.key_id,))
            case TaskSubmitted():
                conn.execute(
                    "INSERT INTO tasks VALUES (?,?,?,?,?,'waiting',NULL,'{}',?,?,?) ON CONFLICT (task_id) DO NOTHING",
                    (event.task_id, event.cube_id, event.user_id, event.label, event.business_task_id,
                     event.content, at, at),
                )
            case TaskStatusChanged():
                conn.execute(
                    # the two phases of an async fine add run in separate consumer groups, so the
                    # refiner's "completed" can reach the log before the first phase's "in_progress":
                    # a finished task never goes back to an unfinished state
                    "INSERT INTO tasks VALUES (?,?,'',?,?,?,?,?,'',?,?) ON CONFLICT (task_id) DO UPDATE SET "
                    "status=excluded.status, error=excluded.error, result=excluded.result, "
                    "updated_at=excluded.updated_at WHERE NOT (tasks.status IN ('completed', 'failed', "
                    "'cancelled') AND excluded.status IN ('waiting', 'in_progress'))",
                    (event.task_id, event.cube_id, event.label, event.business_task_id, event.status,
                     event.error, json.dumps(event.result), at, at),
                )
            case _:
                pass

    @staticmethod
    def _drop_cube(conn: sqlite3.Connection, cube_id: str) -> None:
        conn.execute("DELETE FROM cubes WHERE cube_id=?", (cube_id,))
        conn.execute("DELETE FROM shares WHERE cube_id=?", (cube_id,))
        conn.execute("DELETE FROM tasks WHERE cube_id=?", (cube_id,))

    # --- access reads ---------------------------------------------------------------------------------

    def user_exists(self, user_id: str) -> bool:
        """Whether a user is registered."""
        return bool(self._query("SELECT 1 FROM users WHERE user_id=?", (user_id,)))

    def users(self) -> list[dict[str, str]]:
        """Every user, ordered by id."""
        rows = self._query("SELECT user_id, user_name, role, created_at FROM users ORDER BY user_id")
        return [dict(r) for r in rows]

    def cube(self, cube_id: str) -> CubeInfo:
        """A cube's record; NotFound when it does not exist."""
        rows = self._query("SELECT cube_id, owner_id, cube_name, config FROM cubes WHERE cube_id=?", (cube_id,))
        if not rows:
            raise NotFound(f"cube {cube_id!r} does not exist", field="cube_id")
        r = rows[0]
        return CubeInfo(r["cube_id"], r["owner_id"], r["cube_name"] or "", json.loads(r["config"] or "{}"))

    def cube_exists(self, cube_id: str) -> bool:
        """Whether a cube exists."""
        return bool(self._query("SELECT 1 FROM cubes WHERE cube_id=?", (cube_id,)))

    def access(self, user_id: str, cube_id: str) -> Literal["owner", "write", "read", "none"]:
        """The user's access to a cube; NotFound when the cube does not exist."""
        info = self.cube(cube_id)
        if info.owner_id == user_id:
            return "owner"
        rows = self._query("SELECT access FROM shares WHERE cube_id=? AND user_id=?", (cube_id, user_id))
        if not rows:
            return "none"
        return "write" if rows[0][0] == "write" else "read"

    def cubes_of(self, user_id: str) -> list[dict[str, str]]:
        """Cubes a user owns or that were shared with it, with the access level."""
        rows = self._query(
            "SELECT cube_id, cube_name, owner_id, 'owner' AS access FROM cubes WHERE owner_id=? UNION "
            "SELECT c.cube_id, c.cube_name, c.owner_id, s.access FROM cubes c JOIN shares s ON s.cube_id=c.cube_id "
            "WHERE s.user_id=? ORDER BY cube_id",
            (user_id, user_id),
        )
        return [dict(r) for r in rows]

    def all_cubes(self) -> list[str]:
        """Every cube id."""
        return [r[0] for r in self._query("SELECT cube_id FROM cubes ORDER BY cube_id")]

    def key_user(self, key_id: str, secret: str) -> str | None:
        """User id of a valid, unrevoked key; None otherwise."""
        rows = self._query("SELECT user_id, key_hash, revoked FROM api_keys WHERE key_id=?", (key_id,))
        if not rows or rows[0]["revoked"]:
            return None
        return str(rows[0]["user_id"]) if verify_api_key(secret, rows[0]["key_hash"]) else None

    def keys_of(self, user_id: str) -> list[dict[str, Any]]:
        """Key ids (never secrets) of a user."""
        rows = self._query("SELECT key_id, name, revoked FROM api_keys WHERE user_id=? ORDER BY key_id", (user_id,))
        return [dict(r) for r in rows]

    # --- task reads -----------------------------------------------------------------------------------

    def task(self, task_id: str) -> TaskInfo | None:
        """A task's status, or None."""
        rows = self._query("SELECT * FROM tasks WHERE task_id=?", (task_id,))
        return _task(rows[0]) if rows else None

    def tasks(self, *, business_task_id: str | None = None, cube_id: str | None = None,
              user_id: str | None = None, limit: int = 1000) -> list[TaskInfo]:
        """Tasks filtered by business id, cube or user, newest first."""
        clauses, args = [], []
        for column, value in (("business_task_id", business_task_id), ("cube_id", cube_id), ("user_id", user_id)):
            if value is not None:
                clauses.append(f"{column}=?")
                args.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._query(f"SELECT * FROM tasks {where} ORDER BY submitted_at DESC LIMIT ?", (*args, limit))
        return [_task(r) for r in rows]

    def task_counts(self) -> dict[str, int]:
        """Number of tasks per status."""
        return {r[0]: int(r[1]) for r in self._query("SELECT status, COUNT(*) FROM tasks GROUP BY status")}


def _task(row: sqlite3.Row) -> TaskInfo:
    return TaskInfo(
        task_id=row["task_id"], cube_id=row["cube_id"], user_id=row["user_id"] or "", label=row["label"] or "",
        business_task_id=row["business_task_id"], status=row["status"], error=row["error"],
        result=json.loads(row["result"] or "{}"), content=row["content"] or "",
        submitted_at=row["submitted_at"] or "", updated_at=row["updated_at"] or "",
    )
