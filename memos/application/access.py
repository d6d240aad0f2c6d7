"""Users, keys, cubes and shares, and the one authorization check every use case goes through.

Rules (one place each):

- an unknown cube and a cube the user may not read answer alike: NotFound (HTTP 404), so a cube's
  existence never leaks; a readable cube the user may not write (or, for owner-only use cases, does
  not own) is PermissionDenied (HTTP 403);
- no squatting: a cube id equal to a user id is that user's default cube (MemOS uses the user id when no
  cube is named) and only that user may create it; a user id already used by another user's cube is
  refused;
- every change is an event on the registry topic; the control projection is built from the log by the
  control stage only, and a use case that must read its own write waits for that stage
  (``Platform.settle_control``);
- answers of these reads are remembered only until the control projection applies the next registry
  record in this process (``Platform.registry_version``; ``registry_memo.RegistryMemo``), so a revoked key
  or withdrawn share is refused as soon as it is applied, never later.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Literal, TypeVar, cast

from memory_store.control.base import (
    Access,
    CubeAccess,
    CubeInfo,
    KeyInfo,
    UserInfo,
    cube_key,
    hash_api_key,
    user_key,
)
from memos.application.cube_guard import CubeGuard
from memos.application.ids import check_id
from memos.application.key_checks import key_gate_for
from memos.application.limits import DoorLimits
from memos.application.ports import Platform
from memos.application.registry_memo import MISSING, RegistryMemo
from schemas.errors import NotFound, PermissionDenied, ValidationFailed
from schemas.events import (
    ApiKeyIssued,
    ApiKeyRevoked,
    CubeCreated,
    CubeShared,
    Event,
    UserCreated,
)

__all__ = ["AccessUseCases", "Need"]

logger = logging.getLogger(__name__)

Need = Literal["read", "write", "owner"]
T = TypeVar("T")


class AccessUseCases:
    """Registry use cases and authorization, over the control store's read side."""

    rt: Platform
    limits: DoorLimits
    cube_guard: CubeGuard
    _memo: RegistryMemo | None = None

    async def _remembered(self, key: Hashable, read: Callable[[], Awaitable[T]]) -> T:
        """``read()``'s answer, remembered until the control projection applies the next registry change
        (``Platform.registry_version``); always read when no control stage runs in this process."""
        before = self.rt.registry_version
        if before is None:
            return await read()
        if self._memo is None:
            self._memo = RegistryMemo()
        found = self._memo.get(before, key)
        if found is not MISSING:
            return cast(T, found)
        value = await read()
        after = self.rt.registry_version
        if after is not None:
            self._memo.put(before, after, key, value)
        return value

    @property
    def control(self) -> Any:
        """The control store (read side of users, keys, cubes, shares and tasks)."""
        return self.rt.control

    def _event_base(self, key: str, producer: str = "api") -> dict[str, Any]:
        return {"event_id": uuid.uuid4(), "occurred_at": self.rt.now(), "key": key, "producer": producer}

    async def _registry(self, events: Sequence[Event]) -> None:
        """Publish registry events, then wait until the control projection has applied them."""
        positions = await self.rt.publish(events)
        await self.rt.settle_control(positions)

    # --- authorization ------------------------------------------------------------------------------

    async def access_of(self, user_id: str, cube_id: str) -> Access:
        """The user's access to a cube: owner, write, read or none (also for unknown cubes)."""
        return await self._remembered(("access", user_id, cube_id), lambda: self._read_access(user_id, cube_id))

    async def _read_access(self, user_id: str, cube_id: str) -> Access:
        info = await self.control.find_cube(cube_id)
        if info is None:
            return "none"
        if info.owner_id == user_id:
            return "owner"
        for share in await self.control.shares(cube_id):
            if share.user_id == user_id:
                access: Access = share.access
                return access
        return "none"

    async def authorize(self, user_id: str, cube_id: str, need: Need = "read") -> Access:
        """The one access check: NotFound when the cube is unknown or unreadable, PermissionDenied when
        readable but short of ``need``."""
        access = await self.access_of(user_id, cube_id)
        if access == "none":
            raise NotFound(f"cube {cube_id!r} not found (or not readable by user {user_id!r})", field="cube_id")
        if need == "write" and access not in ("owner", "write"):
            raise PermissionDenied(f"user {user_id!r} may not write cube {cube_id!r}", field="cube_id")
        if need == "owner" and access != "owner":
            raise PermissionDenied(f"only the owner may do this to cube {cube_id!r}", field="cube_id")
        return access

    async def check_read(self, user_id: str, cube_id: str) -> None:
        """NotFound unless the user may read the cube."""
        await self.authorize(check_id(user_id, "user_id"), check_id(cube_id, "cube_id"), "read")

    async def may_read(self, user_id: str, cube_id: str) -> bool:
        """Whether the user may read the cube (no error)."""
        return await self.access_of(user_id, cube_id) != "none"

    async def check_write(self, user_id: str, cube_id: str, *, auto_create: bool | None = None) -> None:
        """NotFound for unknown cubes (unless created for the user, see ``auto_create_cubes``),
        PermissionDenied without write access."""
        user_id, cube_id = check_id(user_id, "user_id"), check_id(cube_id, "cube_id")
        self.cube_guard.check([cube_id])
        create = self.rt.settings.auto_create_cubes if auto_create is None else auto_create
        if create and not await self.cube_exists(cube_id):
            await self.create_cube(cube_id, owner_id=user_id)
        await self.authorize(user_id, cube_id, "write")

    # --- users --------------------------------------------------------------------------------------

    async def create_user(self, user_id: str, *, user_name: str = "", role: Literal["user", "admin"] = "user"
                          ) -> bool:
        """Register a user; False when it already exists. Refused when another user owns a cube of that id."""
        user_id = check_id(user_id, "user_id")
        if await self.control.user_exists(user_id):
            return False
        cube = await self.control.find_cube(user_id)
        if cube is not None and cube.owner_id != user_id:
            raise ValidationFailed(f"user id {user_id!r} is taken: a cube of another user has that id",
                                   field="user_id")
        await self._registry([UserCreated(**self._event_base(user_key(user_id)), user_id=user_id, user_name=user_name,
                                          role=role)])
        return True

    async def ensure_user(self, user_id: str) -> str:
        """The user id checked; the user is created when unknown and auto-creation is on, else NotFound."""
        user_id = check_id(user_id, "user_id")
        if not await self.user_exists(user_id):
            if not self.rt.settings.auto_create_users:
                raise NotFound(f"user {user_id!r} does not exist", field="user_id")
            await self.create_user(user_id)
        return user_id

    async def user_exists(self, user_id: str) -> bool:
        """Whether a user is registered."""
        exists: bool = await self._remembered(("user", user_id), lambda: self.control.user_exists(user_id))
        return exists

    async def get_user(self, user_id: str) -> UserInfo:
        """A user; NotFound when unknown."""
        info = await self.control.user(check_id(user_id, "user_id"))
        if info is None:
            raise NotFound(f"user {user_id!r} does not exist", field="user_id")
        user: UserInfo = info
        return user

    async def list_users(self) -> list[UserInfo]:
        """Every user, ordered by id."""
        users: list[UserInfo] = await self.control.users()
        return users

    async def is_admin(self, user_id: str) -> bool:
        """Whether a user has the admin role."""
        async def read() -> bool:
            info = await self.control.user(user_id)
            return info is not None and info.role == "admin"

        return await self._remembered(("admin", user_id), read)

    # --- keys ---------------------------------------------------------------------------------------

    async def issue_key(self, user_id: str, *, name: str = "") -> str:
        """Issue an API key; the secret is returned once (``mk_<id>_<secret>``) and stored only hashed."""
        user_id = check_id(user_id, "user_id")
        if not await self.control.user_exists(user_id):
            raise NotFound(f"user {user_id!r} does not exist", field="user_id")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(24)
        key_hash = hash_api_key(secret, salt=secrets.token_bytes(16))
        await self._registry([ApiKeyIssued(**self._event_base(user_key(user_id)), key_id=key_id, user_id=user_id,
                                           key_hash=key_hash, name=name[:256])])
        return f"mk_{key_id}_{secret}"

    async def revoke_key(self, key_id: str, *, user_id: str) -> None:
        """Revoke one of the user's API keys; NotFound for a key the user does not have."""
        info: KeyInfo | None = await self.control.key(key_id)
        if info is None or info.user_id != user_id:
            raise NotFound(f"user {user_id!r} has no key {key_id!r}", field="key_id")
        await self._registry([ApiKeyRevoked(**self._event_base(user_key(user_id)), key_id=key_id, user_id=user_id)])

    async def list_keys(self, user_id: str) -> list[KeyInfo]:
        """A user's keys (ids, labels, revoked flags; hashes stay in the store)."""
        keys: list[KeyInfo] = await self.control.keys_of(check_id(user_id, "user_id"))
        return keys

    async def authenticate(self, api_key: str) -> str | None:
        """The user id of a valid API key (``mk_<id>_<secret>``), else None; KeyChecksBusy (429) when the hash
        checks are busy or the key id failed one a moment ago (``memos.application.key_checks``)."""
        parts = api_key.split("_", 2)
        if len(parts) != 3 or parts[0] != "mk" or not parts[1] or not parts[2]:
            return None
        info = await self.control.key(parts[1])
        if info is None or info.revoked:
            return None  # known without hashing: nothing to bound
        gate = key_gate_for(self.rt, at_once=self.limits.key_checks_at_once,
                            waiting=self.limits.key_checks_waiting, retry_s=self.limits.key_retry_s)
        return await gate.check(parts[1], lambda: self.control.key_user(parts[1], parts[2]))

    async def key_active(self, user_id: str, key_id: str) -> bool:
        """Whether the user's key exists and is not revoked."""
        async def read() -> bool:
            info: KeyInfo | None = await self.control.key(key_id)
            return info is not None and info.user_id == user_id and not info.revoked

        return await self._remembered(("key", user_id, key_id), read)

    # --- cubes and shares ---------------------------------------------------------------------------

    async def create_cube(self, cube_id: str, *, owner_id: str, cube_name: str = "",
                          config: dict[str, Any] | None = None) -> bool:
        """Create a cube owned by ``owner_id``; False when the owner has it already.

        PermissionDenied when the id is another user's default cube (squatting) or another user's cube
        (creating can only say that the id is taken).
        """
        cube_id, owner_id = check_id(cube_id, "cube_id"), check_id(owner_id, "owner_id")
        self.cube_guard.check([cube_id])  # not re-created while it is being forgotten
        owner_id = await self.ensure_user(owner_id)
        if cube_id != owner_id and await self.control.user_exists(cube_id):
            raise PermissionDenied(
                f"cube id {cube_id!r} is the default cube of user {cube_id!r}; only that user may create it",
                field="cube_id",
            )
        async with self.cube_guard.creation:  # checks and creation one at a time: none reads a count or an id
            info: CubeInfo | None = await self.control.find_cube(cube_id)  # that another is about to change
            if info is not None:
                if info.owner_id == owner_id:
                    return False
                raise PermissionDenied(f"cube id {cube_id!r} is taken by another user", field="cube_id")
            limit = self.limits.max_cubes_per_user
            if limit and sum(c.access == "owner" for c in await self.control.cubes_of(owner_id)) >= limit:
                raise PermissionDenied(f"user {owner_id!r} owns {limit} cubes, the most one user may own "
                                       f"(door.max_cubes_per_user); forget one first", field="cube_id")
            await self._registry([CubeCreated(**self._event_base(cube_key(cube_id)), cube_id=cube_id,
                                              owner_id=owner_id, cube_name=(cube_name or cube_id)[:256],
                                              config=config or {})])  # waits until the control store has it
        return True

    async def share_cube(self, cube_id: str, *, owner_id: str, user_id: str,
                         access: Literal["read", "write", "none"] = "read") -> None:
        """Share a cube the caller owns with another user (access 'none' withdraws it)."""
        cube_id, owner_id = check_id(cube_id, "cube_id"), check_id(owner_id, "user_id")
        user_id = check_id(user_id, "target_user_id")
        await self.authorize(owner_id, cube_id, "owner")
        if not await self.control.user_exists(user_id):
            raise NotFound(f"user {user_id!r} does not exist", field="target_user_id")
        await self._registry([CubeShared(**self._event_base(cube_key(cube_id)), cube_id=cube_id, user_id=user_id,
                                         access=access, granted_by=owner_id)])

    async def list_cubes(self, user_id: str) -> list[CubeAccess]:
        """Cubes the user owns or that were shared with it, with its access, ordered by id."""
        cubes: list[CubeAccess] = await self.control.cubes_of(check_id(user_id, "user_id"))
        return cubes

    async def cube_info(self, user_id: str, cube_id: str) -> CubeInfo:
        """A cube the user may read; NotFound otherwise."""
        await self.check_read(user_id, cube_id)
        info: CubeInfo = await self.control.cube(cube_id)
        return info

    async def cube_exists(self, cube_id: str) -> bool:
        """Whether a cube exists (in-process callers; remote ones learn it only through ``authorize``)."""
        exists: bool = await self._remembered(("cube", cube_id), lambda: self.control.cube_exists(cube_id))
        return exists

    async def owner_of(self, cube_id: str) -> str:
        """The owner of a cube; NotFound when it does not exist (in-process callers)."""
        info: CubeInfo = await self.control.cube(check_id(cube_id, "cube_id"))
        return info.owner_id

    async def all_cube_ids(self) -> list[str]:
        """Every cube id (operators)."""
        cubes: list[str] = await self.control.all_cubes()
        return cubes
