"""Replay benchmark: rebuild one cube's embedded projections from the log, in memory events per second."""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from memory_store.base import Projection
from memos.runtime import Runtime
from processors.fold import fold_revisions
from schemas.avro_fast import NATIVE
from schemas.envelope import Position
from schemas.events import MemoryAdded, MemoryRetired, MemoryRevised
from schemas.ops import DropCube
from schemas.topics import MEMORIES
from streams.log.base import EventLog, partition_for
from streams.pipeline.runner import event_record
from streams.pipeline.stages import apply_planned
from streams.replay import by_kind, collector_relaxed, plan_values, replay_cube, small_pages
from streams.settings import AppSettings

__all__ = ["replay_breakdown", "replay_figures"]

logger = logging.getLogger(__name__)


def _events(cube: str, n: int, dim: int = 384) -> list[MemoryAdded | MemoryRevised | MemoryRetired]:
    rng = np.random.default_rng(7)
    now = datetime.now(UTC)
    out: list[MemoryAdded | MemoryRevised | MemoryRetired] = []
    for i in range(n):
        vec = rng.standard_normal(dim).astype(np.float32)
        vec /= np.linalg.norm(vec)
        base: dict[str, Any] = {"event_id": uuid.uuid4(), "occurred_at": now, "key": cube, "cube_id": cube}
        if i % 10 == 9:
            # the memory added at i - 2 and revised at i - 1 (m{i - 1} was never added: a revision's slot)
            out.append(MemoryRetired(**base, memory_id=f"m{i - 2}", reason="superseded", successor_ids=[f"m{i - 3}"]))
        elif i % 10 == 8:
            out.append(MemoryRevised(**base, memory_id=f"m{i - 1}", memory=f"revised memory {i}", revision=1,
                                     embedding=vec.tolist(), embedding_model="bench"))
        else:
            out.append(MemoryAdded(**base, memory_id=f"m{i}", user_id="u", memory=f"memory number {i} about topic "
                                   f"{i % 97} and place {i % 13}", embedding=vec.tolist(), embedding_model="bench"))
    return out


def _helper_cpu_s(pid: int | None) -> float:
    """CPU seconds the helper process has used (Linux /proc), 0 when unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def replay_figures(args: argparse.Namespace, table: Table) -> dict[str, float | None]:
    """Append ``--replay`` memory events of one cube, then time ``replay_cube`` into the embedded stores: with
    the replay helper (started with the runtime, as a server's is after its first replay), then in one
    process (the same-run baseline)."""
    n = int(getattr(args, "replay", 20000))
    with tempfile.TemporaryDirectory(dir=getattr(args, "dir", None)) as home:
        settings = AppSettings().model_copy(update={"home": Path(home)})  # not $MEMOS_HOME
        async with Runtime(settings, run_stages=False) as rt:
            helper = rt.start_replay_helper()
            cube = "bench_cube"
            events = _events(cube, n)
            for start in range(0, len(events), 1000):
                await rt.log.append_batch([event_record(e) for e in events[start:start + 1000]])
            warm = helper is not None and await helper.wait_ready(60.0)
            pid = helper.pid if helper is not None else None
            started, cpu, helper_cpu = time.perf_counter(), time.process_time(), _helper_cpu_s(pid)
            applied = await rt.replay_cube(cube)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            helper_cpu = _helper_cpu_s(pid) - helper_cpu
            count = await rt.graph.count(cube)
            again = time.perf_counter()  # the usual case: the cube's projections hold it already (dropped first)
            await rt.replay_cube(cube)
            again = time.perf_counter() - again
            rebuilt = await rt.graph.count(cube)
            jobs = helper.jobs if helper is not None else 0
            alone = time.perf_counter()  # the baseline: the same replay in this process alone
            await replay_cube(rt.log, rt.stores, rt.projection_stage.lock, cube)
            alone = time.perf_counter() - alone
            cold = None  # a first `memos replay`: the helper starts with the replay and takes over once ready
            if helper is not None:
                helper.kill()
                cold = time.perf_counter()
                await rt.replay_cube(cube)
                cold = time.perf_counter() - cold
            phases = await replay_breakdown(rt.log, rt.stores, cube) if getattr(args, "replay_phases", False) else {}
    eps = applied / elapsed if elapsed else 0.0
    cpu_us, helper_us = (cpu / applied * 1e6, helper_cpu / applied * 1e6) if applied else (0.0, 0.0)
    lent = f"the keyword index replayed by the helper process ({helper_us:.0f} CPU-us per event there)" if jobs \
        else "no helper (none could be lent, or it was not ready)"
    table.add_row("replay -> embedded projections", "", "", "", f"{eps:,.0f}",
                  f"{applied} events (adds, revisions, retirements; 384-d vectors) -> {count} current memories;"
                  f" {cpu_us:.0f} CPU-us per event in this process (all threads); {lent};"
                  f" Avro read in {'C' if NATIVE else 'Python (the C reader is not built)'}")
    again_eps = applied / again if again else 0.0
    table.add_row("replay -> populated projections", "", "", "", f"{again_eps:,.0f}",
                  f"the same cube again: its {count} memories dropped first, {rebuilt} rebuilt")
    alone_eps = applied / alone if alone else 0.0
    table.add_row("replay -> populated, one process", "", "", "", f"{alone_eps:,.0f}",
                  f"the same again without the helper (baseline): x{again_eps / alone_eps if alone_eps else 0:.2f}"
                  " with it")
    cold_eps = applied / cold if cold else None
    if cold_eps is not None:
        table.add_row("replay -> populated, helper starting", "", "", "", f"{cold_eps:,.0f}",
                      "the helper started with the replay (as a first `memos replay` does): it takes over when ready")
    for phase, us in phases.items():
        table.add_row(f"  replay phase: {phase}", "", "", "", "", f"{us:.1f} CPU-us per event (alone, in turn)")
    return {"replay_eps": round(eps), "replay_cpu_us_per_event": round(cpu_us, 1),
            "replay_helper_cpu_us_per_event": round(helper_us, 1) if jobs else None,
            "replay_helper_warm": bool(warm), "replay_helper_jobs": jobs, "replay_avro_reader_c": NATIVE,
            "replay_eps_populated": round(again_eps), "replay_eps_one_process": round(alone_eps),
            "replay_helper_speedup": round(again_eps / alone_eps, 2) if alone_eps else None,
            "replay_eps_helper_starting": round(cold_eps) if cold_eps is not None else None,
            **{f"replay_cpu_us_{phase}": round(us, 1) for phase, us in phases.items()}}


async def replay_breakdown(log: EventLog, stores: list[Projection], cube: str) -> dict[str, float]:
    """CPU-us per event of each part of a replay of ``cube``, run one after the other (no overlap): reading
    the log, decoding and projecting, folding revisions, regrouping by kind, and each store's apply (the
    cube dropped first)."""
    key = cube.encode()
    partition = partition_for(key, await log.partitions(MEMORIES))
    end = (await log.end_offsets(MEMORIES)).get(partition, 0)
    spent: dict[str, float] = {}

    def timed(phase: str, started: float) -> None:
        spent[phase] = spent.get(phase, 0.0) + time.process_time() - started

    with collector_relaxed(), small_pages():  # as replay_cube runs
        batches: list[list[tuple[int, bytes]]] = []
        offset, started = 0, time.process_time()
        while offset < end:
            values, offset = await log.read_key(MEMORIES, partition, key, offset, end, limit=5000)
            batches.append(values)
        timed("read", started)
        started = time.process_time()
        planned = [plan_values(values, MEMORIES, partition, lazy_vectors=True) for values in batches]
        timed("decode_project", started)
        started, retired = time.process_time(), set[str]()
        planned = [fold_revisions(ops, retired) for ops in planned]
        timed("fold", started)
        started = time.process_time()
        ordered = [by_kind(ops) for ops in planned]
        timed("by_kind", started)
        for store in stores:
            await apply_planned([store], [([DropCube(cube_id=cube)], Position(MEMORIES, partition, -1))], replay=True)
            started = time.process_time()
            for ops, values in zip(ordered, batches, strict=True):
                last = Position(MEMORIES, partition, values[-1][0] if values else end - 1)
                await apply_planned([store], [(ops, last)], replay=True)
            timed(f"apply_{store.name}", started)
    events = sum(len(values) for values in batches)
    return {phase: seconds / max(events, 1) * 1e6 for phase, seconds in spent.items()}
