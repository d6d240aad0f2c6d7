"""API-key checks are bounded: one hash at a time, a short queue, and no hashing for a key id that just failed."""

from __future__ import annotations

import asyncio

import pytest

from memos.application.errors import KeyChecksBusy, retry_after, status_of
from memos.application.key_checks import KeyCheckGate


class _Verifier:
    """A stand-in for the scrypt check that counts calls and how many run at once; waits while ``held``."""

    def __init__(self, answer: str | None) -> None:
        self.answer = answer
        self.calls = self.running = self.most = 0
        self.held = asyncio.Event()
        self.held.set()
        self.started = asyncio.Event()

    async def __call__(self) -> str | None:
        self.calls += 1
        self.running += 1
        self.most = max(self.most, self.running)
        self.started.set()
        await self.held.wait()
        self.running -= 1
        return self.answer


async def test_a_failed_key_id_is_refused_unhashed_until_its_retry_time() -> None:
    gate = KeyCheckGate(retry_s=60.0)
    wrong = _Verifier(None)
    assert await gate.check("k1", wrong) is None
    with pytest.raises(KeyChecksBusy) as info:
        await gate.check("k1", wrong)
    assert wrong.calls == 1  # the second guess was not hashed
    assert retry_after(info.value) == 60 and status_of(info.value) == 429  # on every front end
    assert await gate.check("k2", _Verifier("ann")) == "ann"  # other key ids are not affected

    gate = KeyCheckGate(retry_s=0.0)  # no pause: every guess is hashed, and a success clears the failure
    assert await gate.check("k1", wrong) is None
    assert await gate.check("k1", _Verifier("ann")) == "ann"


async def test_checks_run_one_at_a_time() -> None:
    gate = KeyCheckGate(at_once=1, waiting=4)
    verify = _Verifier("ann")
    verify.held.clear()
    tasks = [asyncio.create_task(gate.check(key, verify)) for key in ("a", "b", "c")]
    await verify.started.wait()
    verify.held.set()
    assert await asyncio.gather(*tasks) == ["ann"] * 3
    assert verify.most == 1 and verify.calls == 3


async def test_past_the_waiting_places_a_check_is_refused() -> None:
    gate = KeyCheckGate(at_once=1, waiting=0)
    verify = _Verifier("ann")
    verify.held.clear()
    first = asyncio.create_task(gate.check("a", verify))
    await verify.started.wait()  # the one slot is taken and there is no place to wait
    with pytest.raises(KeyChecksBusy):
        await gate.check("b", verify)
    verify.held.set()
    assert await first == "ann" and verify.calls == 1
