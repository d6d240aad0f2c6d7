"""CLI startup benchmark: wall and CPU time of `memos --help` and of a bare interpreter, as new processes
(target for `memos --help`: under 0.5 s). On a busy machine the wall time includes waiting for a core; the
CPU time (user + system of the child) is what a quiet machine's wall time comes close to."""

from __future__ import annotations

import argparse
import json
import logging
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

__all__ = ["startup_figures"]

logger = logging.getLogger(__name__)


def _memos() -> list[str]:
    script = Path(sys.executable).parent / "memos"
    if script.is_file():
        return [str(script)]
    found = shutil.which("memos")
    return [found] if found else [sys.executable, "-m", "memos"]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(command: list[str], runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of ``runs`` fresh processes."""
    wall, cpu = [], []
    for _ in range(runs):
        started, cpu_before = time.perf_counter(), _cpu()
        subprocess.run(command, check=True, capture_output=True, timeout=120)
        wall.append(time.perf_counter() - started)
        cpu.append(_cpu() - cpu_before)
    return wall, cpu


def startup_figures(runs: int = 10) -> dict[str, float]:
    """Median and best wall seconds, and median CPU seconds, of `memos --help`, `memos cubes --help` and
    `python -c pass`."""
    memos = _memos()
    subprocess.run([*memos, "--help"], check=True, capture_output=True, timeout=120)  # warm the file cache
    rows = {
        "help": _timed([*memos, "--help"], runs),
        "cubes_help": _timed([*memos, "cubes", "--help"], runs),
        "python": _timed([sys.executable, "-c", "pass"], runs),
    }
    figures: dict[str, float] = {}
    for name, (wall, cpu) in rows.items():
        figures[f"{name}_p50_s"] = round(statistics.median(wall), 3)
        figures[f"{name}_min_s"] = round(min(wall), 3)
        figures[f"{name}_cpu_p50_s"] = round(statistics.median(cpu), 3)
    return figures


def main() -> None:
    """Print the table, then the JSON figures as the last line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10, help="Processes started per command.")
    args = parser.parse_args()
    figures = startup_figures(args.runs)
    table = Table(title=f"CLI startup, {args.runs} runs each (seconds)")
    for column in ("command", "wall p50", "wall min", "CPU p50"):
        table.add_column(column)
    for name, label in (("help", "memos --help"), ("cubes_help", "memos cubes --help"),
                        ("python", "python -c pass")):
        table.add_row(label, f"{figures[f'{name}_p50_s']:.3f}", f"{figures[f'{name}_min_s']:.3f}",
                      f"{figures[f'{name}_cpu_p50_s']:.3f}")
    Console().print(table)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
