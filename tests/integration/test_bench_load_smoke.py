"""``bench.load`` end to end in its smallest form: the real server, two clients, a two-second phase."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]


def test_bench_load_runs_and_reports_every_figure() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "bench.load", "--clients", "2", "--seconds", "2", "--no-hostile", "--ramp", "0",
         "--seed", "2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["errors_5xx"] == 0 and figures["lost_acks"] == 0
    assert figures["acked"] > 0 and figures["async_acks"] > 0
    assert figures["searches_answered"]["idle"] > 0 and figures["search_p95_idle_ms"] > 0
    assert figures["bench_cpu_s"]["load"] > 0
    assert figures["async_ack_p95_ms_by_phase"]["load"] > 0
    assert set(figures["targets"]) == {"search_load_within_3x_idle", "search_hostile_within_3x_idle",
                                       "async_ack_p95_within_50ms", "no_5xx", "no_lost_acks"}
    assert figures["targets"]["search_hostile_within_3x_idle"] is None  # --no-hostile: not measured
    assert figures["search_p95_idle_hostile_ms"] is None and figures["seed_memories_per_cube"] == 2
