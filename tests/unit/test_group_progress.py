"""Waits on consumer groups' offsets: woken once, when their own targets are met, never for another group's
commit or a commit that does not reach them; a timed-out wait leaves nothing behind."""

from __future__ import annotations

import asyncio

import pytest

from memos.followers import GroupProgress


class _Counted(GroupProgress):
    """Counts the target checks (what waking a waiter costs)."""

    checks = 0

    def reached(self, group: str, targets: dict[tuple[str, int], int]) -> bool:  # type: ignore[override]
        self.checks += 1
        return super().reached(group, targets)


async def test_a_wait_returns_once_its_targets_are_met_and_not_before() -> None:
    progress = GroupProgress()
    early = asyncio.create_task(progress.wait("g", {("t", 0): 3}, timeout_s=30))
    late = asyncio.create_task(progress.wait("g", {("t", 0): 5, ("t", 1): 1}, timeout_s=30))
    await asyncio.sleep(0)  # both are waiting
    assert progress.waiting("g") == 2
    assert progress.advance("g", {("t", 0): 3})
    await early
    assert not late.done()
    assert progress.advance("g", {("t", 0): 5})
    await asyncio.sleep(0)
    assert not late.done()  # partition 1 is not there yet
    progress.advance("g", {("t", 1): 1})
    await late
    assert progress.waiting("g") == 0
    await progress.wait("g", {("t", 0): 4}, timeout_s=0)  # already met: returns at once


async def test_offsets_never_go_back() -> None:
    progress = GroupProgress()
    progress.advance("g", {("t", 0): 7})
    assert not progress.advance("g", {("t", 0): 2})
    assert progress.reached("g", {("t", 0): 7})


async def test_commits_that_reach_no_one_check_only_their_own_group_and_only_when_they_moved() -> None:
    progress = _Counted()
    waits = [asyncio.create_task(progress.wait("g", {("t", 0): 10}, timeout_s=30)) for _ in range(20)]
    await asyncio.sleep(0)
    before = progress.checks
    progress.advance("other", {("t", 0): 50})  # another group's commit
    progress.advance("g", {})  # a commit of nothing new
    assert progress.checks == before
    progress.advance("g", {("t", 0): 5})  # moved, reaches no one: each wait checked once, none woken
    assert progress.checks == before + 20
    assert progress.waiting("g") == 20
    progress.advance("g", {("t", 0): 10})
    await asyncio.gather(*waits)


async def test_a_timed_out_wait_names_the_group_and_is_forgotten() -> None:
    progress = GroupProgress()
    with pytest.raises(TimeoutError, match="'g'"):
        await progress.wait("g", {("t", 0): 1}, timeout_s=0.01)
    assert progress.waiting("g") == 0
    assert not progress._waiters["g"]  # noqa: SLF001 - nothing left behind to check at the next commit
    cancelled = asyncio.create_task(progress.wait("g", {("t", 0): 1}, timeout_s=30))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert not progress._waiters["g"]  # noqa: SLF001
