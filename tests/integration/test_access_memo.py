"""Remembered access answers: reused while the registry is unchanged, forgotten the moment it changes."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from memos.application.service import MemoryService
from memos.runtime import Runtime
from schemas.errors import NotFound, PermissionDenied
from schemas.events import ApiKeyRevoked
from streams.settings import AppSettings


def _count(rt: Runtime, name: str) -> list[int]:
    """Count calls of one control-store read (the real store answers them)."""
    calls = [0]
    real: Callable[..., Awaitable[Any]] = getattr(rt.control, name)

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return await real(*args, **kwargs)

    setattr(rt.control, name, counted)
    return calls


async def test_a_withdrawn_share_is_refused_at_once_though_the_grant_was_remembered(tmp_path: Path) -> None:
    async with Runtime(AppSettings(home=tmp_path)) as rt:
        service = MemoryService(rt)
        await service.create_user("bob")
        await service.create_cube("team", owner_id="ann")
        await service.share_cube("team", owner_id="ann", user_id="bob", access="write")
        reads = _count(rt, "find_cube")
        for _ in range(5):
            await service.check_write("bob", "team", auto_create=False)
        assert reads[0] == 1  # read once, then remembered
        await service.share_cube("team", owner_id="ann", user_id="bob", access="read")
        with pytest.raises(PermissionDenied):
            await service.check_write("bob", "team", auto_create=False)
        await service.check_read("bob", "team")
        await service.share_cube("team", owner_id="ann", user_id="bob", access="none")
        with pytest.raises(NotFound):
            await service.check_read("bob", "team")
        assert not await service.may_read("bob", "team")


async def test_a_revoked_key_is_inactive_at_once(tmp_path: Path) -> None:
    async with Runtime(AppSettings(home=tmp_path)) as rt:
        service = MemoryService(rt)
        await service.create_user("ann")
        key_id = (await service.issue_key("ann")).split("_")[1]
        reads = _count(rt, "key")
        assert await service.key_active("ann", key_id)
        assert await service.key_active("ann", key_id)
        assert reads[0] == 1
        await service.revoke_key(key_id, user_id="ann")  # reads the key once more (not remembered)
        assert not await service.key_active("ann", key_id)


async def test_a_registry_record_from_elsewhere_on_the_log_expires_remembered_answers(tmp_path: Path) -> None:
    """A revocation another process put on the log: refused once this process's control stage applied it."""
    async with Runtime(AppSettings(home=tmp_path)) as rt:
        service = MemoryService(rt)
        await service.create_user("ann")
        key_id = (await service.issue_key("ann")).split("_")[1]
        assert await service.key_active("ann", key_id)
        version = rt.registry_version
        positions = await rt.publish([ApiKeyRevoked(event_id=uuid.uuid4(), occurred_at=rt.now(), key="user:ann",
                                                    producer="elsewhere", key_id=key_id, user_id="ann")])
        await rt.settle_control(positions)
        assert rt.registry_version != version
        assert not await service.key_active("ann", key_id)


async def test_rebuilding_the_control_projection_expires_remembered_answers(tmp_path: Path) -> None:
    async with Runtime(AppSettings(home=tmp_path)) as rt:
        service = MemoryService(rt)
        await service.create_cube("team", owner_id="ann")
        assert await service.cube_exists("team")
        await rt.control.reset()  # the store emptied under the service (a rebuild's first step) ...
        version = rt.registry_version
        await rt.rebuild_control()
        assert rt.registry_version != version  # ... and the rebuild says so
        reads = _count(rt, "cube_exists")
        assert await service.cube_exists("team")
        assert reads[0] == 1


async def test_nothing_is_remembered_without_a_control_stage_in_this_process(tmp_path: Path) -> None:
    async with Runtime(AppSettings(home=tmp_path)) as writer:
        await MemoryService(writer).create_cube("team", owner_id="ann")
    async with Runtime(AppSettings(home=tmp_path), run_stages=False) as rt:
        assert rt.registry_version is None
        service = MemoryService(rt)
        reads = _count(rt, "find_cube")
        for _ in range(3):
            await service.check_read("ann", "team")
        assert reads[0] == 3
