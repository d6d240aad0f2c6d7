"""The behind watch: asking never waits for the log, a flood of asks reads it once, a failed read keeps the last
answer; and the lines it gives."""

from __future__ import annotations

import asyncio

from memos.application.behind import BehindWatch, behind_of
from memos.application.operations import Lag
from schemas.errors import BrokerUnavailable


def test_only_waits_past_the_limit_are_behind() -> None:
    lag = {("deriver", "t"): Lag(4, 1_900.4), ("projector", "t"): Lag(1, 12.0), ("control", "t"): Lag(0)}
    assert behind_of(lag, 1_800) == ["deriver on t: 4 records waiting, the oldest for 1900 s"]
    assert behind_of(lag, 5) == ["deriver on t: 4 records waiting, the oldest for 1900 s",
                                 "projector on t: 1 records waiting, the oldest for 12 s"]


async def test_asks_share_one_read_and_a_failed_read_keeps_the_last_answer() -> None:
    now = [0.0]
    watch = BehindWatch(read_every_s=10, clock=lambda: now[0])
    reads: list[int] = []
    gate = asyncio.Event()
    answers: list[list[str] | Exception] = [["deriver behind"], BrokerUnavailable("broker down"), RuntimeError("bug"), []]

    async def read() -> list[str]:
        reads.append(len(reads))
        await gate.wait()
        answer = answers[len(reads) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert [watch.behind(read) for _ in range(50)] == [[]] * 50  # nothing known yet; no ask waited
    first = watch._reading
    assert first is not None and not first.done()
    await asyncio.sleep(0)  # the read starts, and waits at the gate
    assert [watch.behind(read) for _ in range(50)] == [[]] * 50 and watch._reading is first
    gate.set()
    await first
    assert reads == [0] and watch.behind(read) == ["deriver behind"]  # 100 asks, one read; fresh: no second
    now[0] = 10.0
    assert watch.behind(read) == ["deriver behind"]
    await watch._reading
    assert reads == [0, 1] and watch.behind(read) == ["deriver behind"]  # the failure kept the last answer
    for n, answer in ((20.0, ["deriver behind"]), (30.0, [])):  # any error keeps it; then a fresh answer
        now[0] = n
        watch.behind(read)
        await watch._reading
        assert watch.behind(read) == answer
    assert reads == [0, 1, 2, 3]
