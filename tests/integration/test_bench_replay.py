"""bench.replay on a small log: the replay rebuilds the cube, and --replay-phases times each part of it."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from rich.table import Table

from bench.charts import replay_chart, retrieval_chart
from bench.replay import replay_figures
from bench.retrieval_report import CATEGORIES


def test_replay_figures_with_phases(tmp_path: Path) -> None:
    table = Table()
    for column in ("log", "a", "b", "c", "rate", "note"):
        table.add_column(column)
    args = argparse.Namespace(replay=300, dir=str(tmp_path), replay_phases=True)
    figures = asyncio.run(replay_figures(args, table))
    assert figures["replay_eps"] is not None and figures["replay_eps"] > 0
    assert figures["replay_eps_populated"] is not None and figures["replay_eps_populated"] > 0
    assert figures["replay_eps_one_process"] is not None and figures["replay_eps_one_process"] > 0
    # the helper is started with the runtime and waited for: both timed replays lent it the keyword index
    assert figures["replay_helper_warm"] and figures["replay_helper_jobs"] == 2
    assert figures["replay_helper_cpu_us_per_event"] is not None  # /proc's clock ticks: may read 0 for 300 events
    phases = ("read", "decode_project", "fold", "by_kind", "apply_graph", "apply_vector", "apply_keyword")
    for phase in phases:
        assert (figures[f"replay_cpu_us_{phase}"] or 0) > 0, phase
    # 300 events: 240 adds, 30 revisions and 30 retirements of added memories
    assert "210 current memories" in str(table.columns[-1]._cells[0])
    assert "210 memories dropped first, 210 rebuilt" in str(table.columns[-1]._cells[1])
    assert "replayed by the helper process" in str(table.columns[-1]._cells[0])
    chart = replay_chart(figures, tmp_path / "replay.png")
    assert chart is not None and chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_retrieval_chart_draws_every_category(tmp_path: Path) -> None:
    figures = {"loo_recall": 0.9, "in_sample_recall": 0.91}
    for category in CATEGORIES.values():
        figures[f"loo_{category}"] = 0.6
        figures[f"in_sample_{category}"] = 0.62
    chart = retrieval_chart(figures, list(CATEGORIES.values()), tmp_path / "retrieval.png")
    assert chart is not None and chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
