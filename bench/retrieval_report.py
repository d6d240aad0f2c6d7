"""Tables and headline figures of bench.retrieval (in-sample per relativity setting, leave-one-out)."""

from __future__ import annotations

import argparse
import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.retrieval_loo import LooResult, interval, mean

__all__ = ["CATEGORIES", "Run", "figures_of", "pct", "print_loo", "print_table"]

logger = logging.getLogger(__name__)

CATEGORIES = {1: "multi_hop", 2: "temporal", 3: "open_domain", 4: "single_hop", 5: "adversarial"}


def pct(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


@dataclass(slots=True)
class Run:
    """Results of one relativity setting."""

    label: str
    relativity: float | None
    recalls: dict[int, list[float]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    words: list[int] = field(default_factory=list)
    returned: list[int] = field(default_factory=list)
    others: int = 0
    """pref_mem, tool_mem and skill_mem items returned (not counted: fast mode makes none from chat)."""

    def recall(self, category: int | None = None) -> float:
        values = [r for c, rs in self.recalls.items() if category in (None, c) for r in rs]
        return statistics.fmean(values) if values else 0.0


def print_loo(result: LooResult, n_settings: int, elapsed: float) -> None:
    table = Table(title=f"Leave-one-conversation-out over {n_settings} settings ({elapsed:.0f} s to score)")
    table.add_column("category")
    table.add_column("questions", justify="right")
    for name in ("leave-one-out", "95% interval", "in-sample best", "base (defaults)"):
        table.add_column(name, justify="right")
    for category, name in CATEGORIES.items():
        lo, hi = interval(result.loo, category)
        table.add_row(
            f"{category} {name}",
            str(len(result.base.get(category, []))),
            f"{mean(result.loo, category):.3f}",
            f"{lo:.3f}-{hi:.3f}",
            *(f"{mean(v, category):.3f}" for v in (result.in_sample, result.base)),
        )
    lo, hi = interval(result.loo)
    table.add_row(
        "all",
        str(sum(len(v) for v in result.base.values())),
        f"{mean(result.loo):.3f}",
        f"{lo:.3f}-{hi:.3f}",
        *(f"{mean(v):.3f}" for v in (result.in_sample, result.base)),
    )
    console = Console(width=120)
    console.print(table)
    console.print(f"in-sample best differs from the defaults in: {result.best or 'nothing'}")
    console.print("95% interval: bootstrap over the questions, the folds' choices fixed")
    for cube, diff in result.chosen.items():
        console.print(f"  held out {cube} ({result.held_out[cube]:.3f}): chose {diff or 'the defaults'}")


def print_table(
    runs: Sequence[Run],
    *,
    ingest_s: float,
    turns: int,
    memories: int,
    skipped: int,
    args: argparse.Namespace,
) -> None:
    table = Table(
        title=f"LoCoMo evidence recall within {args.budget_words} words (top_k={args.top_k}, "
        f"roles={args.roles})"
    )
    table.add_column("category")
    table.add_column("questions", justify="right")
    for run in runs:
        table.add_column(f"recall {run.label}", justify="right")
    head = runs[0]
    for category, name in CATEGORIES.items():
        count = len(head.recalls.get(category, []))
        table.add_row(f"{category} {name}", str(count), *(f"{r.recall(category):.3f}" for r in runs))
    table.add_row(
        "all", str(sum(len(v) for v in head.recalls.values())), *(f"{r.recall():.3f}" for r in runs)
    )
    table.add_row(
        "search p50 / p95 ms",
        "",
        *(f"{pct(r.latencies, 0.5):.1f} / {pct(r.latencies, 0.95):.1f}" for r in runs),
    )
    table.add_row(
        "mean words / returned",
        "",
        *(
            f"{statistics.fmean(r.words or [0]):.0f} / {statistics.fmean(r.returned or [0]):.1f}"
            for r in runs
        ),
    )
    console = Console(width=120)
    console.print(table)
    console.print(
        (
            f"ingest: {turns} turns -> {memories} memories in {ingest_s:.1f} s "
            f"({turns / ingest_s if ingest_s else 0:.1f} turns/s, sync fast adds); "
            if turns
            else "ingest: none (every conversation was already in --home); "
        )
        + f"questions skipped (no valid evidence): {skipped}; pref/tool/skill items returned: "
        f"{sum(r.others for r in runs)}"
    )


def figures_of(
    runs: Sequence[Run], *, ingest_s: float, turns: int, memories: int, skipped: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n, run in enumerate(runs):
        suffix = "" if n == 0 else "_" + run.label.replace("=", "")
        out[f"recall_at_1000w{suffix}"] = round(run.recall(), 4)
        for category, name in CATEGORIES.items():
            out[f"recall_{name}{suffix}"] = round(run.recall(category), 4)
        out[f"search_p50_ms{suffix}"] = round(pct(run.latencies, 0.5), 2)
        out[f"search_p95_ms{suffix}"] = round(pct(run.latencies, 0.95), 2)
        out[f"mean_words{suffix}"] = round(statistics.fmean(run.words or [0]), 1)
        out[f"pref_tool_items{suffix}"] = run.others
    out["relativity"] = runs[0].label
    out["questions"] = sum(len(v) for v in runs[0].recalls.values())
    out["questions_skipped"] = skipped
    out["turns"] = turns
    out["memories"] = memories
    out["ingest_s"] = round(ingest_s, 2)
    return out
