"""MicroBatcher with several workers: steps of one job run side by side, results keep their order."""

from __future__ import annotations

import threading

from memory_store.embedding.batcher import MicroBatcher


def test_two_workers_take_steps_of_one_job_side_by_side() -> None:
    both_in = threading.Barrier(2, timeout=30)  # each step waits for a step on the other worker
    seen: dict[str, list[list[int]]] = {"a": [], "b": []}

    def runner(name: str):  # type: ignore[no-untyped-def]
        def run(batch: list[int]) -> list[int]:
            seen[name].append(batch)
            if len(seen["a"]) + len(seen["b"]) <= 2:
                both_in.wait()  # fails (BrokenBarrierError) unless two workers hold steps at once
            return [x * 10 for x in batch]
        return run

    batcher = MicroBatcher(lambda x: x, lambda _: 1, runner("a"), max_items=4, linger_s=0.0,
                           more_runs=[runner("b")])  # fmt: skip
    try:
        assert batcher.workers == 2
        result = batcher.submit(list(range(16))).result(timeout=30)
    finally:
        batcher.close()
    assert result == [x * 10 for x in range(16)]
    assert seen["a"] and seen["b"]
    assert sorted(x for steps in seen.values() for step in steps for x in step) == list(range(16))


def test_an_error_on_one_worker_fails_the_job_once() -> None:
    def fine(batch: list[int]) -> list[int]:
        return batch

    def broken(batch: list[int]) -> list[int]:
        raise ValueError("model step failed")

    batcher = MicroBatcher(lambda x: x, lambda _: 1, broken, max_items=1, linger_s=0.0, more_runs=[fine])
    try:
        future = batcher.submit(list(range(8)))
        try:
            future.result(timeout=30)
            raised = None
        except ValueError as exc:
            raised = exc
    finally:
        batcher.close()
    assert raised is not None and "model step failed" in str(raised)
