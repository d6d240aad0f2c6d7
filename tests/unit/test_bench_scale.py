"""bench.scale's workload gives every partition the same turns; its CPU meter reads /proc honestly."""

from __future__ import annotations

import os
import sys
from collections import Counter

import pytest

from bench.scale import spread_cubes, workload
from bench.scale_probe import CpuMeter, cpu_seconds
from streams.log.base import partition_for


def test_every_partition_gets_the_same_turns_and_sessions_interleave() -> None:
    cubes = spread_cubes(8, 4)
    sessions = workload(cubes, 800, session_turns=20)
    per_partition = Counter(partition_for(cube.encode(), 4) for cube, session in sessions for _ in session)
    assert per_partition == {p: 200 for p in range(4)}
    assert [cube for cube, _ in sessions[: len(cubes)]] == cubes  # round-robin from the start
    ids = [m["message_id"] for cube, session in sessions if cube == cubes[0] for m in session]
    assert len(ids) == len(set(ids)) == 100


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_cpu_meter_counts_this_process_busy_time() -> None:
    meter = CpuMeter([os.getpid()])
    meter.start()
    total = 0
    while (cpu_seconds(os.getpid()) or 0.0) - meter.started[os.getpid()] < 0.3:
        total += sum(range(10_000))
    assert meter.stop()[os.getpid()] >= 0.29
    assert cpu_seconds(2**22 + 12345) is None  # no such process
