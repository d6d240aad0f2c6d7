"""Admission of replays: one per cube at a time (a second request joins it), few per user and per process.

A replay pauses the live projection of every cube while it rebuilds one (it holds the projection stage's
lock), so replays are bounded here, for every front end: a request for a cube that is already being
replayed waits for that replay and gets its result instead of queueing another; a user may have
``door.replays_per_user`` replays running or waiting and the process ``door.replays_at_once``; more are
refused with :class:`ReplaysBusy` (HTTP 429, ``Retry-After``). Operators (no user) are not counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from memos.application.errors import ReplaysBusy
from memos.application.ports import Platform
from memos.application.shared import shared
from streams.replay import Progress

__all__ = ["ReplayGate", "replay_gate_for"]

logger = logging.getLogger(__name__)

@dataclass(slots=True, eq=False)
class _Running:
    """One cube's replay and those who wait for it."""

    user_id: str | None
    listeners: list[Progress] = field(default_factory=list)
    done: int = 0
    total: int = 0
    task: asyncio.Task[int] | None = None

    def report(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        for listener in list(self.listeners):
            listener(done, total)


class ReplayGate:
    """The replays of one process (shared by every service over a runtime)."""

    def __init__(self, *, per_user: int, at_once: int, retry_after_s: float) -> None:
        self.per_user = per_user
        self.at_once = at_once
        self.retry_after_s = retry_after_s
        self._running: dict[str, _Running] = {}

    def running(self, cube_id: str) -> bool:
        """Whether a replay of ``cube_id`` is running or waiting for the projection."""
        return cube_id in self._running

    def start(self, cube_id: str, user_id: str | None, replay: Callable[[Progress], Coroutine[Any, Any, int]],
              *, progress: Progress | None = None) -> asyncio.Task[int]:
        """The replay of ``cube_id``: a new one (``replay(report)``) when none runs, else the running one;
        ``progress`` hears how it goes until it ends. ReplaysBusy when a new one would exceed the user's or the
        process's share. Await it shielded: a replay finishes even if its caller goes away (a cube is never
        left half rebuilt by a hang-up)."""
        running = self._running.get(cube_id)
        if running is None:
            self._admit(user_id)
            running = self._running[cube_id] = _Running(user_id)
            running.task = asyncio.create_task(replay(running.report), name=f"replay:{cube_id}")

            def finished(_: asyncio.Task[int]) -> None:
                if self._running.get(cube_id) is running:
                    del self._running[cube_id]

            running.task.add_done_callback(finished)
        if progress is not None:
            if running.total:
                progress(running.done, running.total)
            running.listeners.append(progress)
        assert running.task is not None
        return running.task

    def _admit(self, user_id: str | None) -> None:
        if user_id is None:  # an operator's replay (the CLI, in-process callers without a user)
            return
        mine = sum(1 for r in self._running.values() if r.user_id == user_id)
        if self.per_user and mine >= self.per_user:
            raise ReplaysBusy(f"user {user_id!r} has {mine} replay(s) running or waiting; at most "
                              f"{self.per_user} at once (door.replays_per_user); retry later",
                              retry_after=self.retry_after_s)
        counted = sum(1 for r in self._running.values() if r.user_id is not None)
        if self.at_once and counted >= self.at_once:
            raise ReplaysBusy(f"{counted} replays are running or waiting in this process; at most "
                              f"{self.at_once} at once (door.replays_at_once); retry later",
                              retry_after=self.retry_after_s)


def replay_gate_for(platform: Platform) -> ReplayGate:
    """The one gate of ``platform`` (a runtime): every front end over it shares it."""
    limits = platform.door_limits
    return shared(platform, ReplayGate, lambda: ReplayGate(
        per_user=limits.replays_per_user, at_once=limits.replays_at_once, retry_after_s=limits.replay_retry_after_s))
