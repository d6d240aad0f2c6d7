"""Replay benchmark: rebuild one cube's embedded projections from the log, in memory events per second."""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from rich.table import Table

from memos.runtime import Runtime
from schemas.events import MemoryAdded, MemoryRetired, MemoryRevised
from streams.pipeline.runner import event_record
from streams.replay import replay_cube
from streams.settings import AppSettings

__all__ = ["replay_figures"]

logger = logging.getLogger(__name__)


def _events(cube: str, n: int, dim: int = 384) -> list[MemoryAdded | MemoryRevised | MemoryRetired]:
    rng = np.random.default_rng(7)
    now = datetime.now(UTC)
    out: list[MemoryAdded | MemoryRevised | MemoryRetired] = []
    for i in range(n):
        vec = rng.standard_normal(dim).astype(np.float32)
        vec /= np.linalg.norm(vec)
        base = {"event_id": uuid.uuid4(), "occurred_at": now, "key": cube, "cube_id": cube}
        if i % 10 == 9:
            out.append(MemoryRetired(**base, memory_id=f"m{i - 1}", reason="superseded", successor_ids=[f"m{i - 2}"]))
        elif i % 10 == 8:
            out.append(MemoryRevised(**base, memory_id=f"m{i - 1}", memory=f"revised memory {i}", revision=1,
                                     embedding=vec.tolist(), embedding_model="bench"))
        else:
            out.append(MemoryAdded(**base, memory_id=f"m{i}", user_id="u", memory=f"memory number {i} about topic "
                                   f"{i % 97} and place {i % 13}", embedding=vec.tolist(), embedding_model="bench"))
    return out


async def replay_figures(args: argparse.Namespace, table: Table) -> dict[str, float | None]:
    """Append ``--replay`` memory events of one cube, then time ``replay_cube`` into the embedded stores."""
    n = int(getattr(args, "replay", 20000))
    with tempfile.TemporaryDirectory(dir=getattr(args, "dir", None)) as home:
        settings = AppSettings(home=Path(home))
        async with Runtime(settings, run_stages=False) as rt:
            cube = "bench_cube"
            events = _events(cube, n)
            for start in range(0, len(events), 1000):
                await rt.log.append_batch([event_record(e) for e in events[start:start + 1000]])
            started, cpu = time.perf_counter(), time.process_time()
            applied = await replay_cube(rt.log, rt.stores, rt.projection_stage.lock, cube)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            count = await rt.graph.count(cube)
    eps = applied / elapsed if elapsed else 0.0
    cpu_us = cpu / applied * 1e6 if applied else 0.0
    table.add_row("replay -> embedded projections", "", "", "", f"{eps:,.0f}",
                  f"{applied} events (adds, revisions, retirements; 384-d vectors) -> {count} current memories;"
                  f" {cpu_us:.0f} CPU-us per event (all threads)")
    return {"replay_eps": round(eps), "replay_cpu_us_per_event": round(cpu_us, 1)}
