"""AttemptStore: counts survive a SIGKILL of the process that wrote them; clear forgets; keys do not collide."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from schemas.envelope import Position
from streams.pipeline.delivery import AttemptStore

ROOT = Path(__file__).resolve().parents[2]


def test_counts_attempts_per_group_and_position_and_clear_forgets(tmp_path: Path) -> None:
    store = AttemptStore(tmp_path / "a" / "attempts.db")
    p, q = Position("t", 0, 7), Position("t", 1, 7)
    assert [store.begin("g", p), store.begin("g", p), store.begin("h", p), store.begin("g", q)] == [1, 2, 1, 1]
    assert store.in_flight() == {("g", "t", 0, 7): 2, ("h", "t", 0, 7): 1, ("g", "t", 1, 7): 1}
    store.clear("g", p)
    assert store.begin("g", p) == 1
    store.close()


def test_a_count_survives_the_process_being_killed(tmp_path: Path) -> None:
    path = tmp_path / "attempts.db"
    code = (
        "import os, signal, sys\n"
        "from schemas.envelope import Position\n"
        "from streams.pipeline.delivery import AttemptStore\n"
        "store = AttemptStore(__import__('pathlib').Path(sys.argv[1]))\n"
        "store.begin('g', Position('t', 0, 3))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, timeout=60)
        assert done.returncode == -9
    store = AttemptStore(path)
    assert store.begin("g", Position("t", 0, 3)) == 3
    store.close()
