"""Writes to a cube and the forgetting of it kept apart: while a cube is forgotten, writes to it are refused."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from memos.application.errors import CubeBusy
from memos.application.shared import shared

__all__ = ["CubeGuard", "cube_guard_for"]


class CubeGuard:
    """Per process: the cubes being forgotten (closed to writes) and the writes under way per cube.

    A write holds ``writing`` from its access check until its records are on the log; a forget holds
    ``closed``, which refuses new writes to its cubes (``CubeBusy``) and first waits for the writes under
    way, so that everything written to the cube is on the log before the forget looks at the log.
    """

    def __init__(self) -> None:
        self._closed: Counter[str] = Counter()
        self._writing: Counter[str] = Counter()
        self._changed = asyncio.Condition()
        self.creation = asyncio.Lock()
        """Held while a cube is checked and created (its id free, its owner under the cube limit) in this process."""

    def check(self, cube_ids: Iterable[str]) -> None:
        """CubeBusy when a forget is under way on one of the cubes."""
        for cube_id in cube_ids:
            if self._closed[cube_id]:
                raise CubeBusy(f"cube {cube_id!r} is being forgotten (or a user's writes are being removed from "
                               f"it); nothing was written, retry shortly", retry_after=1.0)

    @asynccontextmanager
    async def writing(self, cube_ids: Iterable[str]) -> AsyncIterator[None]:
        """A write to ``cube_ids``: refused while any is closed; a forget waits for it to finish."""
        cubes = list(dict.fromkeys(cube_ids))
        self.check(cubes)
        self._writing.update(cubes)
        try:
            yield
        finally:
            _release(self._writing, cubes)
            async with self._changed:
                self._changed.notify_all()

    @asynccontextmanager
    async def closed(self, cube_ids: Iterable[str]) -> AsyncIterator[None]:
        """Close ``cube_ids`` to writes, wait until the writes under way to them are done, and hold them closed."""
        cubes = list(dict.fromkeys(cube_ids))
        self._closed.update(cubes)
        try:
            async with self._changed:
                await self._changed.wait_for(lambda: not any(self._writing[c] for c in cubes))
            yield
        finally:
            _release(self._closed, cubes)

    def writes_under_way(self, cube_id: str) -> int:
        """How many writes to ``cube_id`` are between their check and their records being on the log."""
        return self._writing[cube_id]


def _release(counts: Counter[str], cube_ids: list[str]) -> None:
    counts.subtract(cube_ids)
    for cube_id in cube_ids:
        if counts[cube_id] <= 0:
            del counts[cube_id]


def cube_guard_for(owner: object) -> CubeGuard:
    """The one guard of ``owner`` (a runtime): every front end over it shares it."""
    return shared(owner, CubeGuard, CubeGuard)
