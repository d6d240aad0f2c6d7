"""PNG charts of the benchmarks' figures with matplotlib (headless Agg), written beside their tables.

``search_chart`` (latency against number of memories), ``ingest_chart`` (throughput), ``kv_chart``
(time to first token against prefix length) and the generic ``line_chart`` / ``bar_chart`` any other
benchmark may call. matplotlib is a dev extra; without it a chart is skipped with a log line, never
failing the benchmark.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["bar_chart", "ingest_chart", "kv_chart", "line_chart", "search_chart"]

logger = logging.getLogger(__name__)

Series = Mapping[str, Sequence[tuple[float, float]]]
"""Label -> (x, y) points."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        logger.warning('no chart: matplotlib is not installed (pip install "memos-stream[dev]")')
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    logger.info("chart written path=%s", path)
    return path


def line_chart(
    path: Path,
    series: Series,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    targets: Mapping[str, float] | None = None,
    note: str = "",
) -> Path | None:
    """One line per series, dashed horizontal lines for ``targets`` (label -> y). Returns the path written."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, points in series.items():
        if points:
            xs, ys = zip(*sorted(points), strict=True)
            ax.plot(xs, ys, marker="o", label=label)
    for n, (label, y) in enumerate((targets or {}).items()):
        ax.axhline(y, linestyle="--", linewidth=1, color=f"C{(n + len(series)) % 10}", label=label)
    if logx:
        ax.set_xscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, alpha=0.7)
    return _save(plt, fig, path)


def bar_chart(
    path: Path,
    bars: Mapping[str, float],
    *,
    title: str,
    ylabel: str,
    targets: Mapping[str, float] | None = None,
    note: str = "",
) -> Path | None:
    """Labelled bars with their values printed on top, dashed lines for ``targets``."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    labels, values = list(bars), [float(v) for v in bars.values()]
    drawn = ax.bar(labels, values, color=[f"C{i}" for i in range(len(labels))])
    ax.bar_label(drawn, fmt="%.1f", fontsize=8)
    for n, (label, y) in enumerate((targets or {}).items()):
        ax.axhline(y, linestyle="--", linewidth=1, color=f"C{(n + 5) % 10}", label=label)
    if targets:
        ax.legend(fontsize=8)
    ax.set(title=title, ylabel=ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, alpha=0.7)
    return _save(plt, fig, path)


def _load_note(figures: Mapping[str, Any]) -> str:
    load = figures.get("loadavg", figures.get("load_avg_1m"))
    return f"1-min load average while measuring: {float(load):.1f} (2 cores)" if load is not None else ""


def search_chart(figures: Mapping[str, Any], sizes: Sequence[int], path: Path) -> Path | None:
    """bench.search: p50/p95 latency (embed + k-NN, and the whole search) against memories in one cube."""
    series: dict[str, list[tuple[float, float]]] = {}
    for key, label in (
        ("p50_ms", "embed + k-NN p50"),
        ("p95_ms", "embed + k-NN p95"),
        ("full_p50_ms", "whole search p50"),
        ("full_p95_ms", "whole search p95"),
        ("kw_p95_ms", "BM25 p95"),
    ):
        points = []
        for n in sizes:
            name = f"{n // 1_000_000}m" if n >= 1_000_000 else f"{n // 1000}k"
            value = figures.get(f"{key}_{name}")
            if isinstance(value, int | float):
                points.append((float(n), float(value)))
        if points:
            series[label] = points
    locomo = figures.get("full_p95_ms_locomo")
    memories = figures.get("locomo_memories_per_cube")
    if isinstance(locomo, int | float) and isinstance(memories, int | float):
        series["whole search p95, LoCoMo cubes"] = [(float(memories), float(locomo))]
    targets = {
        "target: whole search p95 100k (45 ms)": 45.0,
        "target: whole search p95 LoCoMo (25 ms)": 25.0,
        "target: embed + k-NN p50 100k (15 ms)": 15.0,
    }
    return line_chart(
        path, series, title="Search latency against memories in one cube", xlabel="memories in the cube",
        ylabel="milliseconds", logx=True, targets=targets, note=_load_note(figures),
    )  # fmt: skip


def ingest_chart(figures: Mapping[str, Any], path: Path) -> Path | None:
    """bench.ingest: pipeline and raw-embedder throughput in turns/s against the target."""
    bars = {
        "fast-mode ingest\n(add -> searchable)": float(figures.get("turns_per_s") or 0.0),
        "embedder alone,\nsame batches": float(figures.get("embedder_raw_per_s") or 0.0),
    }
    data = figures.get("data", "synthetic")
    return bar_chart(
        path, bars, title=f"Ingest throughput ({data} conversations, {figures.get('turns')} turns)",
        ylabel="turns per second", targets={"target (100 turns/s)": 100.0}, note=_load_note(figures),
    )  # fmt: skip


def kv_chart(rows: Sequence[Mapping[str, Any]], figures: Mapping[str, Any], path: Path) -> Path | None:
    """bench.kv: time to first token, warm cache vs memories injected, against the prefix length."""
    series: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        q = r["query"]
        series.setdefault(f"warm cache, query {q} tokens", []).append((r["prefix"], r["warm_ttft_s"] * 1000))
        series.setdefault(f"injected, query {q} tokens", []).append(
            (r["prefix"], r["injected_ttft_s"] * 1000)
        )
    return line_chart(
        path, series, title="Time to first token against memory prefix length (CPU)",
        xlabel="memory prefix tokens", ylabel="milliseconds to first token", note=_load_note(figures),
    )  # fmt: skip
