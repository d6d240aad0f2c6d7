"""Replay: rebuild one cube's projections, or the control projection, from the log (identical to the live state)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

from memory_store.base import Projection
from memory_store.control.base import CONTROL_TOPICS, ControlStore
from processors.fold import fold_revisions
from processors.projection import project
from processors.raw_projection import project_raw
from schemas.codec import decode, decode_raw
from schemas.envelope import Position
from schemas.errors import EventDecodeError, StoreError, is_retryable
from schemas.ops import AnyOp, DropCube, RetireMemory, ReviseMemory, UpsertMemory, UpsertRelation
from schemas.topics import MEMORIES
from streams.log.base import EventLog, partition_for
from streams.pipeline.stages import apply_planned

if TYPE_CHECKING:
    from streams.replay_helper import HelperJob, ReplayHelper

__all__ = ["Progress", "by_kind", "catch_up_control", "collector_relaxed", "plan_values", "replay_cube", "small_pages"]

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called with (records read, records to read) as the replay advances."""


@contextmanager
def collector_relaxed(young: int = 200_000) -> Iterator[None]:
    """Fewer, cheaper cyclic-GC passes while a replay runs (process-wide, restored after).

    A replay allocates millions of short-lived, acyclic objects (freed by reference counting) and keeps
    a batch of them alive at a time; with the default thresholds the collector ran every ~700
    allocations and its full passes walked the whole heap, a third of the replay's time. Objects older
    than the replay are frozen (left out of every pass) and a young pass runs only once 200k more
    container objects are alive than freed: above a batch's live objects, so a replay of 20k events
    (5k a batch) runs none instead of ten (6 CPU-us per event at 20k).
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(young, thresholds[0]), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _hugepage_switch() -> Callable[[bool], bool] | None:
    """numpy's switch of the huge-page hint for new large arrays (returns the previous setting), if it has one."""
    import numpy as np

    for module in ("_core", "core"):  # numpy 2, numpy 1
        switch = getattr(getattr(getattr(np, module, None), "multiarray", None), "_set_madvise_hugepage", None)
        if callable(switch):
            return switch  # type: ignore[no-any-return]
    return None


_small_page_holds = [0, True]
"""Replays running with ``small_pages``, and numpy's setting before the first of them."""


@contextmanager
def small_pages() -> Iterator[None]:
    """New large numpy arrays without the huge-page hint while a replay runs (process-wide, restored after).

    numpy asks the kernel for transparent huge pages for every array of 4 MB or more (``madvise``). A replay
    makes many such arrays that live for one batch (a batch's vectors, normalised copies, a cube's matrix as
    it grows), so their memory is faulted in afresh batch after batch, 2 MB per fault. Measured here (a
    Firecracker VM, THP on ``madvise``): a 20k-event vector-store replay spent 26.5 us per event in the
    kernel with the hint and 9.5 without (17.3k -> 25.2k events/s), the whole replay 11.4k -> 13.7k.
    Searches made no measurable difference either way (``bench.search``), so only replays drop the hint.
    """
    switch = _hugepage_switch()
    if switch is None:
        yield
        return
    if _small_page_holds[0] == 0:
        _small_page_holds[1] = switch(False)
    _small_page_holds[0] += 1
    try:
        yield
    finally:
        _small_page_holds[0] -= 1
        if _small_page_holds[0] == 0:
            switch(bool(_small_page_holds[1]))


def plan_values(values: Sequence[tuple[int, bytes]], topic: str, partition: int, *,
                lazy_vectors: bool = False) -> list[AnyOp]:
    """The ops of one cube's records ((offset, value) pairs of a partition of ``topic``), in log order;
    poison records skipped.

    Memory events of the current schema take the fast lane (``decode_raw`` + ``project_raw``, no event
    model built); anything else, or anything the fast lane declines, ``decode`` + ``project``.
    """
    planned: list[AnyOp] = []
    for offset, value in values:
        raw = decode_raw(value)
        ops = None if raw is None else project_raw(raw[0], raw[1], lazy_vectors=lazy_vectors)
        if ops is None:
            try:
                event = decode(value)
            except EventDecodeError as exc:
                logger.warning("replay skipped poison record position=%s error=%s",
                               Position(topic, partition, offset), exc)
                continue
            ops = project(event)
        planned.extend(ops)
    return planned


_KIND: dict[type, int] = {UpsertMemory: 0, ReviseMemory: 1, RetireMemory: 2, UpsertRelation: 3}
"""Order of the op kinds within one level of ``by_kind``."""


def by_kind(ops: Sequence[AnyOp]) -> list[AnyOp]:
    """``ops`` reordered into few runs of one kind each, with the effect of applying them in order.

    Ops on different memories (or edges) commute in every store; ops on the same one keep their order,
    and an edge keeps its order against ops on the memories it joins.
    Each op gets the lowest level at which it still follows the previous op on its subject (same level
    when that one's kind comes first in the fixed order upserts, revisions, retirements, relations,
    the next level otherwise); a DropCube (or any other op) is a level of its own that nothing crosses.
    The result is the ops of level 0 kind by kind, then level 1, and so on: a replay's batch of
    thousands of ops becomes a handful of ``executemany`` runs instead of one per few events.
    """
    buckets: dict[tuple[int, int], list[AnyOp]] = {}
    last: dict[str, tuple[int, int]] = {}
    floor = top = 0
    kinds = _KIND
    for op in ops:
        kind = kinds.get(type(op))
        if kind is None:  # a barrier: after everything before it, before everything after it
            top += 1
            buckets[(top, -1)] = [op]
            floor = top = top + 1
            last.clear()
            continue
        if kind == 3:  # an edge also orders against its ends (a Cypher store merges them as nodes)
            rel = op.relation  # type: ignore[union-attr]
            subjects = ("\x00" + rel.id, rel.source_id, rel.target_id)
            level = floor
            for subject in subjects:
                previous = last.get(subject)
                if previous is not None:
                    level = max(level, previous[0] if previous[1] <= kind else previous[0] + 1)
            for subject in subjects:
                last[subject] = (level, kind)
        else:  # one subject: the memory
            subject = op.memory.id if kind == 0 else op.memory_id  # type: ignore[union-attr]
            previous = last.get(subject)
            level = floor
            if previous is not None:
                after = previous[0] if previous[1] <= kind else previous[0] + 1
                if after > level:
                    level = after
            last[subject] = (level, kind)
        if level > top:
            top = level
        slot = (level, kind)
        bucket = buckets.get(slot)
        if bucket is None:
            buckets[slot] = [op]
        else:
            bucket.append(op)
    return [op for slot in sorted(buckets) for op in buckets[slot]]


async def replay_cube(log: EventLog, stores: Sequence[Projection], live_lock: asyncio.Lock, cube_id: str, *,
                      progress: Progress | None = None, batch: int = 5000, helper: ReplayHelper | None = None) -> int:
    """Rebuild ``cube_id`` in every projection from the memories topic; returns events applied.

    The live projection is paused (``live_lock``, the projection stage's) for the duration, so no record
    of the cube is applied out of order; the live checkpoints are left where they are (ops are applied
    with ``replay=True``). Reading and decoding the next batch overlaps with applying the previous one,
    and the first with dropping the cube's old state (batches are still applied strictly in log order).
    With a ``helper`` process, the stores it can open too (``Projection.lending``) are lent
    to it once it is ready and replayed there, on another core, from the ops this process decodes; if it
    fails they are replayed here afterwards.
    """
    key = cube_id.encode()
    partitions = await log.partitions(MEMORIES)
    partition = partition_for(key, partitions)
    async with live_lock:
        with collector_relaxed(), small_pages():
            applied = await _replay_locked(log, stores, cube_id, key, partition, progress, batch, helper)
    logger.info("replayed cube=%s topic=%s partition=%d events=%d", cube_id, MEMORIES, partition, applied)
    return applied


def _lendable(stores: Sequence[Projection], helper: ReplayHelper | None) -> list[Projection]:
    """The stores a helper may replay: those that another process can open."""
    if helper is None:
        return []
    return [store for store in stores if store.lending() is not None]


async def _hand_over(helper: ReplayHelper, stores: Sequence[Projection], lent: Sequence[Projection], cube_id: str,
                     *, drop: bool) -> tuple[HelperJob | None, list[Projection], list[Projection]]:
    """(a job of the helper's for the ``lent`` stores, the stores lent, the stores applied here); (None, [],
    every store) when they cannot be handed over (logged)."""
    try:
        for store in lent:
            await store.lend()
        lendings = [lending for store in lent if (lending := store.lending()) is not None]
        job = helper.begin(lendings, cube_id=cube_id, drop=drop)
    except StoreError as exc:
        logger.warning("replay helper not used cube=%s: %s", cube_id, exc)
        return None, [], list(stores)
    return job, list(lent), [s for s in stores if s not in lent]


async def _replay_locked(log: EventLog, stores: Sequence[Projection], cube_id: str, key: bytes, partition: int,
                         progress: Progress | None, batch: int, helper: ReplayHelper | None) -> int:
    """``replay_cube``'s work, with the live projection paused."""
    applied = 0
    lazy_vectors = all(getattr(store, "reads_float32_bytes", False) for store in stores)
    fold = all(getattr(store, "folds_revisions", False) for store in stores)
    retired: set[str] = set()  # memories retired so far in this replay (no revision folds into their upserts)
    end = (await log.end_offsets(MEMORIES)).get(partition, 0)
    offset = 0
    lent, local, job, failed, handed = _lendable(stores, helper), list(stores), None, False, False
    reading: asyncio.Future[tuple[list[tuple[int, bytes]], int]] | None = None
    if lent and helper is not None and helper.ready():  # from the start: the helper drops the cube there too
        job, lent, local = await _hand_over(helper, stores, lent, cube_id, drop=True)
        handed = job is not None
    # the cube's old state goes while the first batch is read and decoded: deleting it is SQLite's work,
    # one long statement per table with the interpreter lock released, so it runs beside the decoding
    applying: asyncio.Task[None] | None = asyncio.create_task(
        apply_planned(local, [([DropCube(cube_id=cube_id)], Position(MEMORIES, partition, -1))], replay=True)
    )
    pending: Sequence[tuple[int, bytes]] = ()  # the records of the batch ``applying`` applies (none: the drop)

    async def landed() -> None:
        """Wait for ``applying``; a batch the stores refuse is applied again record by record, as the live
        projection applies it, and the records they still refuse are skipped (live, they were dead-lettered)."""
        assert applying is not None
        try:
            await applying
        except Exception as exc:
            if not pending or is_retryable(exc):
                raise
            logger.warning("replay batch refused cube=%s records=%d error=%r; applying them one by one",
                           cube_id, len(pending), exc)
            await _one_by_one(local, pending, partition, lazy_vectors, cube_id)

    try:
        while offset < end:
            values, offset = await (reading or log.read_key(MEMORIES, partition, key, offset, end, limit=batch))
            reading = asyncio.ensure_future(  # the next batch is read while this one is decoded
                log.read_key(MEMORIES, partition, key, offset, end, limit=batch)) if offset < end else None
            if job is None and not failed and lent and helper is not None and helper.ready():
                if applying is not None:  # the lent stores hold every batch before this one
                    await landed()
                    applying = None
                job, lent, local = await _hand_over(helper, stores, lent, cube_id, drop=False)
                handed = job is not None
            ops = plan_values(values, MEMORIES, partition, lazy_vectors=lazy_vectors)
            last = Position(MEMORIES, partition, offset - 1)
            if ops:  # made ready before the previous batch is waited for: the stores go on at once
                applied += len(ops)  # events applied: a folded revision is applied (in its memory's upsert)
                if fold:
                    ops = fold_revisions(ops, retired)
                ops = by_kind(ops)
            if applying is not None:
                await landed()
                applying = None
            if ops:
                applying, pending = asyncio.create_task(apply_planned(local, [(ops, last)], replay=True)), values
                if job is not None:  # the lent stores' part of the batch goes to the helper meanwhile
                    try:
                        await job.send(ops, last)
                    except StoreError as exc:
                        logger.warning("replay helper failed cube=%s, replaying its stores here after: %s",
                                       cube_id, exc)
                        job, failed = None, True
            if progress is not None:
                progress(min(offset, end), end)
        if applying is not None:
            await landed()
            applying = None
        if job is not None:
            try:
                await job.finish()
            except StoreError as exc:
                logger.warning("replay helper failed cube=%s, replaying its stores here: %s", cube_id, exc)
                failed = True
            job = None
    finally:
        if reading is not None and not reading.done():
            reading.cancel()
            with suppress(asyncio.CancelledError):
                await reading
        if applying is not None and not applying.done():
            applying.cancel()
            with suppress(asyncio.CancelledError):
                await applying
        if job is not None:  # this process gave up part-way
            job.abandon()
        if handed:
            for store in lent:
                await store.take_back(cube_id)
    if failed:
        await _replay_locked(log, lent, cube_id, key, partition, None, batch, None)
    return applied


async def _one_by_one(stores: Sequence[Projection], values: Sequence[tuple[int, bytes]], partition: int,
                      lazy_vectors: bool, cube_id: str) -> None:
    """Apply a batch's records one at a time, unfolded and in log order; skip (and log) each one the stores
    refuse for good, as the live projection dead-letters it. An engine that is down still stops the replay."""
    for offset, value in values:
        ops = plan_values([(offset, value)], MEMORIES, partition, lazy_vectors=lazy_vectors)
        if not ops:
            continue
        position = Position(MEMORIES, partition, offset)
        try:
            await apply_planned(stores, [(ops, position)], replay=True)
        except Exception as exc:
            if is_retryable(exc):
                raise
            logger.warning("replay skipped a record its stores refuse cube=%s position=%s error=%r",
                           cube_id, position, exc)


async def catch_up_control(log: EventLog, control: ControlStore, *, batch: int = 2000) -> int:
    """Apply every registry and task record past the control store's own checkpoints; returns records applied.

    A new or emptied control store is rebuilt this way from the log alone (its only writer is the log),
    whatever offsets the control consumer group has committed. Poison records are skipped (the live
    stage dead-letters them).
    """
    applied = 0
    for topic in CONTROL_TOPICS:
        for partition, end in sorted((await log.end_offsets(topic)).items()):
            mark = await control.checkpoint(topic, partition)
            offset = 0 if mark is None else mark + 1
            while offset < end:
                records = await log.read(topic, partition, offset, limit=batch)
                if not records:
                    break
                todo = []
                for record in records:
                    if record.position.offset >= end:
                        break
                    try:
                        todo.append((decode(record.value), record.position))
                    except EventDecodeError as exc:
                        logger.warning("control catch-up skipped poison record position=%s error=%s",
                                       record.position, exc)
                if todo:
                    applied += await control.apply(todo)
                offset = records[-1].position.offset + 1
    if applied:
        logger.info("control projection caught up from the log records=%d", applied)
    return applied
