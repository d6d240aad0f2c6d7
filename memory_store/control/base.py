"""The ControlStore port: the access projection (users, key hashes, cubes, shares) and task status, by position."""

from __future__ import annotations

import hashlib
import hmac
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar

from schemas.envelope import Position
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
from schemas.topics import REGISTRY, TASKS

__all__ = [
    "CONTROL_TOPICS",
    "FINISHED",
    "Access",
    "ControlEventWriter",
    "ControlStore",
    "CubeAccess",
    "CubeInfo",
    "KeyInfo",
    "ShareInfo",
    "TaskInfo",
    "UserInfo",
    "cube_key",
    "hash_api_key",
    "projection_of",
    "registry_key_of",
    "user_key",
    "verify_api_key",
]

logger = logging.getLogger(__name__)

Access = Literal["owner", "write", "read", "none"]
FINISHED = frozenset({"completed", "failed", "cancelled"})
"""Task statuses a task never leaves (a late 'waiting' or 'in_progress' does not reopen it)."""
CONTROL_TOPICS = (REGISTRY, TASKS)

R = TypeVar("R")


class ControlEventWriter(ABC, Generic[R]):
    """One engine's writes for each registry and task event; ``write`` picks the method (others: ``ignored``).

    Adapters implement one method per event type, so the set of events the control projection handles
    is listed once, here. ``R`` is what a write returns (None for SQLite statements run in place, an
    awaitable list of queued commands for FalkorDB).
    """

    def write(self, event: Event) -> R:
        """Dispatch ``event`` to its method."""
        match event:
            case UserCreated():
                return self.user_created(event)
            case UserForgotten():
                return self.user_forgotten(event)
            case CubeCreated():
                return self.cube_created(event)
            case CubeShared():
                return self.cube_shared(event)
            case CubeForgotten():
                return self.cube_forgotten(event)
            case ApiKeyIssued():
                return self.api_key_issued(event)
            case ApiKeyRevoked():
                return self.api_key_revoked(event)
            case TaskSubmitted():
                return self.task_submitted(event)
            case TaskStatusChanged():
                return self.task_status_changed(event)
            case _:
                return self.ignored(event)

    @abstractmethod
    def user_created(self, event: UserCreated) -> R:
        """Insert the user, or update its name and role (keeping its creation time)."""

    @abstractmethod
    def user_forgotten(self, event: UserForgotten) -> R:
        """Delete the user, the cubes it owns (with their shares and tasks), its shares, keys and tasks."""

    @abstractmethod
    def cube_created(self, event: CubeCreated) -> R:
        """Insert the cube unless it exists (the first creation wins)."""

    @abstractmethod
    def cube_shared(self, event: CubeShared) -> R:
        """Set a user's access to a cube (``none`` removes the share)."""

    @abstractmethod
    def cube_forgotten(self, event: CubeForgotten) -> R:
        """Delete the cube, its shares and its tasks."""

    @abstractmethod
    def api_key_issued(self, event: ApiKeyIssued) -> R:
        """Insert the key's hash unless the key id exists."""

    @abstractmethod
    def api_key_revoked(self, event: ApiKeyRevoked) -> R:
        """Mark the key revoked."""

    @abstractmethod
    def task_submitted(self, event: TaskSubmitted) -> R:
        """Insert the task as waiting, or fill in its user and content once (a status may come first)."""

    @abstractmethod
    def task_status_changed(self, event: TaskStatusChanged) -> R:
        """Set the task's status, error and result, except that a finished task (``FINISHED``) never goes
        back to waiting or in progress (the two phases of a fine add commit in separate groups)."""

    @abstractmethod
    def ignored(self, event: Event) -> R:
        """An event the control projection does not keep (nothing to write)."""


def projection_of(topic: str) -> Literal["access", "tasks"]:
    """Checkpoint name of a control topic: registry records feed 'access', task records 'tasks'."""
    return "tasks" if topic == TASKS else "access"


def user_key(user_id: str) -> str:
    """Log key of a user's registry records (users and their API keys): ``user:<id>``."""
    return f"user:{user_id}"


def cube_key(cube_id: str) -> str:
    """Log key of a cube's registry records (the cube and its shares): ``cube:<id>``."""
    return f"cube:{cube_id}"


def registry_key_of(event: Event) -> str | None:
    """The log key a registry event must have (keyed by kind, so forgetting cube ``bob`` never touches
    user ``bob``'s records); None for events of other topics."""
    match event:
        case UserCreated() | UserForgotten() | ApiKeyIssued() | ApiKeyRevoked():
            return user_key(event.user_id)
        case CubeCreated() | CubeShared() | CubeForgotten():
            return cube_key(event.cube_id)
    return None


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
class UserInfo:
    """A registered user."""

    user_id: str
    user_name: str
    role: str
    created_at: str


@dataclass(frozen=True, slots=True)
class CubeInfo:
    """A cube and its owner."""

    cube_id: str
    owner_id: str
    cube_name: str
    config: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""


@dataclass(frozen=True, slots=True)
class CubeAccess:
    """A cube a user may use, with the user's access level."""

    cube_id: str
    cube_name: str
    owner_id: str
    access: Access


@dataclass(frozen=True, slots=True)
class ShareInfo:
    """A cube shared with a user."""

    cube_id: str
    user_id: str
    access: Literal["read", "write"]


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """An API key as stored: its id, owner, label, whether revoked, and the salted hash (never the secret)."""

    key_id: str
    user_id: str
    name: str
    revoked: bool
    key_hash: str


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


class ControlStore(ABC):
    """Who may use which cube (registry topic) and what each task did (tasks topic), built from the log only.

    ``apply`` is the one write path: the control stage calls it with records in log order. Each position
    at or below its partition's checkpoint is skipped; the others are written together with the new
    checkpoints, all or nothing, so a record applied twice leaves the same state. Every method is async
    and never blocks the event loop. Errors: StoreUnavailable (retryable: a busy or unreachable engine),
    StoreError (anything else), NotFound where a method says so.
    """

    name: str = "control"

    @abstractmethod
    async def start(self) -> None:
        """Open the store and create its schema. Idempotent. Raises StoreUnavailable."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close the store. Idempotent."""

    @abstractmethod
    async def apply(self, batch: Sequence[tuple[Event, Position]]) -> int:
        """Apply registry and task events at their positions atomically; returns how many were new."""

    @abstractmethod
    async def checkpoint(self, topic: str, partition: int) -> int | None:
        """Offset of the last record applied from that partition, or None."""

    @abstractmethod
    async def reset(self) -> None:
        """Delete every record and checkpoint (before a rebuild from the log)."""

    # --- access reads ---------------------------------------------------------------------------------

    @abstractmethod
    async def user(self, user_id: str) -> UserInfo | None:
        """A user, or None."""

    async def user_exists(self, user_id: str) -> bool:
        """Whether a user is registered."""
        return await self.user(user_id) is not None

    @abstractmethod
    async def users(self) -> list[UserInfo]:
        """Every user, ordered by id."""

    @abstractmethod
    async def find_cube(self, cube_id: str) -> CubeInfo | None:
        """A cube, or None."""

    async def cube(self, cube_id: str) -> CubeInfo:
        """A cube; NotFound when it does not exist."""
        from schemas.errors import NotFound

        info = await self.find_cube(cube_id)
        if info is None:
            raise NotFound(f"cube {cube_id!r} does not exist", field="cube_id")
        return info

    async def cube_exists(self, cube_id: str) -> bool:
        """Whether a cube exists."""
        return await self.find_cube(cube_id) is not None

    @abstractmethod
    async def shares(self, cube_id: str | None = None) -> list[ShareInfo]:
        """Shares of one cube (or all), ordered by (cube id, user id)."""

    async def access(self, user_id: str, cube_id: str) -> Access:
        """The user's access to a cube; NotFound when the cube does not exist."""
        info = await self.cube(cube_id)
        if info.owner_id == user_id:
            return "owner"
        for share in await self.shares(cube_id):
            if share.user_id == user_id:
                return share.access
        return "none"

    @abstractmethod
    async def cubes_of(self, user_id: str) -> list[CubeAccess]:
        """Cubes a user owns or that were shared with it, ordered by cube id."""

    @abstractmethod
    async def all_cubes(self) -> list[str]:
        """Every cube id, ordered."""

    @abstractmethod
    async def key(self, key_id: str) -> KeyInfo | None:
        """A key record, or None."""

    async def key_user(self, key_id: str, secret: str) -> str | None:
        """User id of a valid, unrevoked key; None otherwise (the hash check runs off the event loop)."""
        import asyncio

        info = await self.key(key_id)
        if info is None or info.revoked:
            return None
        valid = await asyncio.to_thread(verify_api_key, secret, info.key_hash)
        return info.user_id if valid else None

    @abstractmethod
    async def keys_of(self, user_id: str) -> list[KeyInfo]:
        """A user's keys, ordered by key id."""

    # --- task reads -----------------------------------------------------------------------------------

    @abstractmethod
    async def task(self, task_id: str) -> TaskInfo | None:
        """A task's status, or None."""

    @abstractmethod
    async def tasks(self, *, business_task_id: str | None = None, cube_id: str | None = None,
                    user_id: str | None = None, cube_ids: Sequence[str] | None = None,
                    per_cube: int | None = None, limit: int = 1000) -> list[TaskInfo]:
        """Tasks filtered by business id, cube, user and any of ``cube_ids`` (all given filters apply; an empty
        ``cube_ids`` matches nothing), newest first; ``per_cube``: at most that many (the newest) of each cube,
        so that a cube with many tasks does not crowd the others out of ``limit``."""

    @abstractmethod
    async def task_counts(self) -> dict[str, int]:
        """Number of tasks per status."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
