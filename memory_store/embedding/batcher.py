"""MicroBatcher: worker threads that merge concurrent embedding requests into bounded model steps.

Requests come in two lanes. Urgent work (search queries) goes first: after every model step the
worker takes the urgent lane before anything else, and an urgent step holds only urgent items, so a
query waits for at most the one bounded step already running, never for a whole ingest batch. So that
a steady stream of queries cannot starve ingest, after ``max_urgent_streak`` urgent steps in a row
while normal work waits, one small normal step (a quarter of ``max_items``) runs.
Normal work (passages from adds) is cut into steps of at most ``max_items`` items and ``max_cost``
cost units (tokens), and waits ``linger_s`` after the first item arrives so that concurrent adds
share a step; urgent work does not linger (queries that arrive while a step runs share the next).
Within a lane, items are taken round-robin across requests (``_FairLane``), so a small request queued behind a
huge one shares the next step with it instead of waiting for all of it: one tenant's long add does not hold
back another tenant's short one. Items are prepared (tokenized) on the worker thread, lazily, one step ahead
at most. With more than one
``run`` (one model session each), as many workers take steps from the same lanes side by side: a
single-threaded session per core wastes less than one session split over the cores (whose threads meet
at every operator).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["MicroBatcher"]

logger = logging.getLogger(__name__)

_MIN_SHARED_STEP = 4
"""Fewest items per normal step when several workers share the queue."""

T = TypeVar("T")
P = TypeVar("P")
R = TypeVar("R")


@dataclass(eq=False)
class _Job(Generic[T, P, R]):
    items: Sequence[T]
    future: Future[list[R]]
    urgent: bool
    results: list[R | None] = field(default_factory=list)
    remaining: int = 0
    failed: bool = False


@dataclass(eq=False, slots=True)
class _Slot(Generic[T, P, R]):
    job: _Job[T, P, R]
    index: int
    prepared: P | None = None
    cost: int = 0


class _FairLane(Generic[T, P, R]):
    """Queued slots, taken round-robin across their jobs (each job's own slots in order)."""

    def __init__(self) -> None:
        self._rotation: deque[deque[_Slot[T, P, R]]] = deque()
        self._of: dict[_Job[T, P, R], deque[_Slot[T, P, R]]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def extend(self, slots: Sequence[_Slot[T, P, R]]) -> None:
        """Queue ``slots`` behind the job's own queued ones; a job new to the lane joins the rotation last."""
        for slot in slots:
            self._queue(slot.job, first=False).append(slot)
        self._count += len(slots)

    def _queue(self, job: _Job[T, P, R], *, first: bool) -> deque[_Slot[T, P, R]]:
        """The job's queue; a new one joins the rotation first or last."""
        queue = self._of.get(job)
        if queue is None:
            queue = self._of[job] = deque()
            if first:
                self._rotation.appendleft(queue)
            else:
                self._rotation.append(queue)
        return queue

    def take(self, limit: int) -> list[_Slot[T, P, R]]:
        """Up to ``limit`` slots, one job's next slot at a time in rotation (a lone job fills the step)."""
        out: list[_Slot[T, P, R]] = []
        while self._rotation and len(out) < limit:
            queue = self._rotation.popleft()
            slot = queue.popleft()
            out.append(slot)
            if queue:
                self._rotation.append(queue)
            else:
                del self._of[slot.job]
        self._count -= len(out)
        return out

    def put_back(self, slots: Sequence[_Slot[T, P, R]]) -> None:
        """Return slots taken but not run (``take`` order) to the front of their jobs' queues."""
        for slot in reversed(slots):
            self._queue(slot.job, first=True).appendleft(slot)
        self._count += len(slots)


class MicroBatcher(Generic[T, P, R]):
    """Runs ``run(prepared items) -> results`` on one thread (and each of ``more_runs`` on one more),
    batching submissions (see module doc).

    ``prepare`` turns an item into what ``run`` reads (on the worker thread), ``cost`` weighs a
    prepared item against ``max_cost``. A step always takes at least one item, whatever its cost.
    """

    def __init__(
        self,
        prepare: Callable[[T], P],
        cost: Callable[[P], int],
        run: Callable[[list[P]], Sequence[R]],
        *,
        max_items: int = 32,
        max_cost: int = 2048,
        linger_s: float = 0.002,
        max_urgent_streak: int = 4,
        name: str = "microbatcher",
        on_start: Callable[[], None] | None = None,
        more_runs: Sequence[Callable[[list[P]], Sequence[R]]] = (),
    ) -> None:
        self._prepare, self._cost = prepare, cost
        self.max_items, self.max_cost, self.linger_s = max(1, max_items), max(1, max_cost), linger_s
        self.max_urgent_streak = max(1, max_urgent_streak)
        self._streak = 0
        """Urgent steps in a row while normal work waited."""
        self._urgent: _FairLane[T, P, R] = _FairLane()
        self._normal: _FairLane[T, P, R] = _FairLane()
        self._normal_since = 0.0
        self._cond = threading.Condition()
        self._closed = False
        self.steps = 0
        self._on_start = on_start
        """Run first on the worker thread (to lower its priority, say)."""
        self._threads = [
            threading.Thread(target=self._loop, args=(step,), name=f"{name}-{n}" if n else name, daemon=True)
            for n, step in enumerate([run, *more_runs])
        ]
        for thread in self._threads:
            thread.start()

    @property
    def worker_native_id(self) -> int | None:
        """The first worker thread's OS thread id (its scheduling priority can be read by it)."""
        return self._threads[0].native_id

    @property
    def workers(self) -> int:
        """Worker threads (one per model session)."""
        return len(self._threads)

    def submit(self, items: Sequence[T], *, urgent: bool = False) -> Future[list[R]]:
        """Queue ``items``; the future resolves to their results in order (or the step's exception)."""
        future: Future[list[R]] = Future()
        if not items:
            future.set_result([])
            return future
        job: _Job[T, P, R] = _Job(items, future, urgent, [None] * len(items), len(items))
        with self._cond:
            if self._closed:
                raise RuntimeError("the micro-batcher is closed")
            lane = self._urgent if urgent else self._normal
            if not urgent and not self._normal:
                self._normal_since = time.monotonic()
            lane.extend([_Slot(job, i) for i in range(len(items))])
            self._cond.notify()
        return future

    def close(self) -> None:
        """Finish queued work, then stop the worker. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()

    def _loop(self, run: Callable[[list[P]], Sequence[R]]) -> None:
        if self._on_start is not None:
            self._on_start()
        while True:
            with self._cond:
                while not (self._urgent or self._normal or self._closed):
                    self._cond.wait()
                if not self._urgent and not self._normal:
                    return
                limit = self.max_items
                if self._urgent and self._normal and self._streak >= self.max_urgent_streak:
                    lane, limit, self._streak = self._normal, max(1, self.max_items // 4), 0  # no starving
                else:
                    if not self._urgent:
                        deadline = self._normal_since + self.linger_s
                        while not self._urgent and len(self._normal) < self.max_items and not self._closed:
                            left = deadline - time.monotonic()
                            if left <= 0:
                                break
                            self._cond.wait(left)
                    lane = self._urgent if self._urgent else self._normal
                    self._streak = self._streak + 1 if lane is self._urgent and self._normal else 0
                if len(self._threads) > 1 and lane is self._normal:
                    # several workers: cut what is queued into at least two steps per worker, so none idles
                    # while another runs the last big step
                    limit = min(limit, max(_MIN_SHARED_STEP, -(-len(lane) // (2 * len(self._threads)))))
                candidates = [slot for slot in lane.take(limit) if not slot.job.failed]
                if self._urgent or self._normal:
                    self._cond.notify()  # work left: wake another worker, if any is idle
            slots, rest = self._fit(candidates)
            with self._cond:
                lane.put_back(rest)
                if lane is self._normal and self._normal:
                    self._normal_since = time.monotonic() - self.linger_s  # the rest does not linger again
                if rest:
                    self._cond.notify()
            if slots:
                self._step(slots, run)

    def _fit(self, candidates: list[_Slot[T, P, R]]) -> tuple[list[_Slot[T, P, R]], list[_Slot[T, P, R]]]:
        """Prepare candidates (outside the lock) and split them at ``max_cost``: (this step, put back)."""
        taken: list[_Slot[T, P, R]] = []
        total = 0
        for n, slot in enumerate(candidates):
            if slot.job.failed:
                continue
            if slot.prepared is None:
                try:
                    slot.prepared = self._prepare(slot.job.items[slot.index])
                    slot.cost = max(1, self._cost(slot.prepared))
                except Exception as exc:  # noqa: BLE001 - the job's caller gets the error
                    self._fail(slot.job, exc)
                    continue
            if taken and total + slot.cost > self.max_cost:
                return taken, [s for s in candidates[n:] if not s.job.failed]
            taken.append(slot)
            total += slot.cost
        return taken, []

    def _step(self, slots: list[_Slot[T, P, R]], run: Callable[[list[P]], Sequence[R]]) -> None:
        try:
            results = run([s.prepared for s in slots])  # type: ignore[misc]
            if len(results) != len(slots):
                raise RuntimeError(f"the model step returned {len(results)} results for {len(slots)} items")
        except Exception as exc:  # noqa: BLE001 - delivered to every waiting caller
            for slot in slots:
                self._fail(slot.job, exc)
            return
        finished: list[_Job[T, P, R]] = []
        with self._cond:  # a job's items may be finished by several workers
            self.steps += 1
            for slot, result in zip(slots, results, strict=True):
                job = slot.job
                if job.failed:
                    continue
                job.results[slot.index] = result
                job.remaining -= 1
                if job.remaining == 0:
                    finished.append(job)
        for job in finished:
            if not job.future.done():
                job.future.set_result(list(job.results))  # type: ignore[arg-type]

    def _fail(self, job: _Job[T, P, R], exc: BaseException) -> None:
        with self._cond:
            job.failed = True
        if not job.future.done():
            job.future.set_exception(exc)
