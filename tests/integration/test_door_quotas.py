"""Per-user bounds at the door: how many cubes a user may own, however they are created."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from memos.application.service import MemoryService
from memos.runtime import Runtime
from schemas.errors import PermissionDenied
from streams.settings import AppSettings, DoorSettings


async def test_a_user_owns_at_most_max_cubes_per_user(tmp_path: Path) -> None:
    async with Runtime(AppSettings(home=tmp_path, door=DoorSettings(max_cubes_per_user=3))) as rt:
        service = MemoryService(rt)
        note = [{"role": "user", "content": "Hello."}]
        assert await service.create_cube("a1", owner_id="alice")
        await service.add("alice", ["a2", "a3"], note, mode="fast")  # created by writing to new ids
        with pytest.raises(PermissionDenied, match="owns 3 cubes"):
            await service.create_cube("a4", owner_id="alice")
        with pytest.raises(PermissionDenied, match="max_cubes_per_user"):
            await service.add("alice", ["a4"], note, mode="fast")
        assert not await service.cube_exists("a4")
        assert await service.create_cube("b1", owner_id="bob")  # per user
        await service.share_cube("b1", owner_id="bob", user_id="alice", access="write")
        await service.add("alice", ["b1"], note, mode="fast")  # shared cubes are not alice's to count
        assert not await service.create_cube("a1", owner_id="alice")  # one she has: no new cube
        await service.forget_cube("a3", requested_by="alice")
        assert await service.create_cube("a4", owner_id="alice")


async def test_concurrent_creations_respect_the_limit(tmp_path: Path) -> None:
    """Twenty creations at once by one user with a limit of 3: three succeed (each used to count the cubes
    before any of the others had been applied, so all twenty did)."""
    async with Runtime(AppSettings(home=tmp_path, door=DoorSettings(max_cubes_per_user=3))) as rt:
        service = MemoryService(rt)
        outcomes = await asyncio.gather(*(service.create_cube(f"c{n}", owner_id="alice") for n in range(20)),
                                        return_exceptions=True)
        assert sum(o is True for o in outcomes) == 3
        assert all(isinstance(o, PermissionDenied) for o in outcomes if o is not True)
        assert sum(c.access == "owner" for c in await service.list_cubes("alice")) == 3
        same = await asyncio.gather(*(service.create_cube("b1", owner_id="bob") for _ in range(5)))
        assert sorted(same) == [False, False, False, False, True]  # one creation of one id
