"""MicroBatcher's lanes are fair across requests: a short request queued behind a long one runs in the next step."""

from __future__ import annotations

import threading

from memory_store.embedding.batcher import MicroBatcher


def test_a_short_request_shares_the_next_step_with_a_long_one() -> None:
    first_step = threading.Event()
    release = threading.Event()
    steps: list[list[str]] = []

    def run(batch: list[str]) -> list[str]:
        steps.append(batch)
        if len(steps) == 1:
            first_step.set()
            assert release.wait(timeout=30)  # holds the worker until the short request is queued
        return [x.upper() for x in batch]

    batcher = MicroBatcher(lambda x: x, lambda _: 1, run, max_items=4, linger_s=0.0)
    try:
        long = batcher.submit([f"a{n}" for n in range(40)])
        assert first_step.wait(timeout=30)
        short = batcher.submit(["b0", "b1"])
        release.set()
        assert short.result(timeout=30) == ["B0", "B1"]
        assert long.result(timeout=30) == [f"A{n}" for n in range(40)]
    finally:
        batcher.close()
    assert steps[0] == ["a0", "a1", "a2", "a3"]
    assert steps[1] == ["a4", "b0", "a5", "b1"]  # round-robin: the short request's items go into the next step
    assert [x for step in steps for x in step if x.startswith("a")] == [f"a{n}" for n in range(40)]  # own order


def test_items_put_back_over_the_cost_limit_keep_their_place() -> None:
    steps: list[list[str]] = []
    gate = threading.Event()

    def run(batch: list[str]) -> list[str]:
        steps.append(batch)
        assert gate.wait(timeout=30)
        return batch

    cost = {"big": 3}
    batcher = MicroBatcher(lambda x: x, lambda x: cost.get(x.split("-")[0], 1), run, max_items=8, max_cost=4,
                           linger_s=0.0)
    try:
        one = batcher.submit(["s-1", "big-1", "s-2"])
        two = batcher.submit(["s-3", "s-4"])
        gate.set()
        assert one.result(timeout=30) == ["s-1", "big-1", "s-2"]
        assert two.result(timeout=30) == ["s-3", "s-4"]
    finally:
        batcher.close()
    assert all(sum(cost.get(x.split("-")[0], 1) for x in step) <= 4 or len(step) == 1 for step in steps)
    assert sorted(x for step in steps for x in step) == sorted(["s-1", "big-1", "s-2", "s-3", "s-4"])
