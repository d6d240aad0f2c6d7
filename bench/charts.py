"""PNG charts of the benchmarks' figures with matplotlib (headless Agg), written beside their tables.

``search_chart`` (latency against number of memories), ``ingest_chart`` (throughput), ``kv_chart``
(time to first token against prefix length), ``replay_chart`` (replay rates and parts), ``retrieval_chart``
(recall per question category against the targets) and the generic ``line_chart`` / ``bar_chart`` any other
benchmark may call. matplotlib is a dev extra; without it a chart is skipped with a log line, never
failing the benchmark.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "RETRIEVAL_TARGETS",
    "bar_chart",
    "ingest_chart",
    "kv_chart",
    "line_chart",
    "replay_chart",
    "retrieval_chart",
    "search_chart",
]

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


def replay_chart(figures: Mapping[str, Any], path: Path) -> Path | None:
    """bench.log: replay rates (into empty and into populated projections, with the replay helper, and without
    it) against the target, and, when timed, each part of a replay in CPU-us per event."""
    plt = _pyplot()
    if plt is None:
        return None
    phases = {k.removeprefix("replay_cpu_us_"): float(v) for k, v in figures.items()
              if k.startswith("replay_cpu_us_") and k != "replay_cpu_us_per_event" and v is not None}  # fmt: skip
    fig, axes = plt.subplots(1, 2 if phases else 1, figsize=(10 if phases else 6, 4.2), squeeze=False)
    rates = {"into empty\nprojections": figures.get("replay_eps"),
             "into populated\nprojections": figures.get("replay_eps_populated"),
             "populated,\none process": figures.get("replay_eps_one_process")}  # fmt: skip
    labels = [k for k, v in rates.items() if v is not None]
    ax = axes[0][0]
    drawn = ax.bar(labels, [float(rates[k] or 0) for k in labels], color=["C0", "C1", "C7"][: len(labels)])
    ax.bar_label(drawn, fmt="%.0f", fontsize=8)
    ax.axhline(20_000, linestyle="--", linewidth=1, color="C3", label="target (20,000 events/s)")
    ax.set(title="Replay of memory events into the embedded stores", ylabel="memory events per second")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    if phases:
        ax = axes[0][1]
        drawn = ax.bar(list(phases), list(phases.values()), color=[f"C{i}" for i in range(len(phases))])
        ax.bar_label(drawn, fmt="%.1f", fontsize=8)
        ax.set(title="Each part alone, in turn", ylabel="CPU-us per event")
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    total = figures.get("replay_cpu_us_per_event")
    if total is not None:
        fig.text(0.01, 0.01, f"whole replay: {float(total):.0f} CPU-us per event, all threads", fontsize=7, alpha=0.7)
    return _save(plt, fig, path)


RETRIEVAL_TARGETS = {"all": 0.88, "temporal": 0.90, "multi_hop": 0.65, "open_domain": 0.60}
"""Leave-one-out targets of issue 12, by category."""


def retrieval_chart(figures: Mapping[str, Any], names: Sequence[str], path: Path) -> Path | None:
    """bench.retrieval: evidence recall within the word budget overall and per question category (``names``,
    as in its figures' keys), in-sample and leave-one-conversation-out, with the targets marked over them."""
    plt = _pyplot()
    if plt is None:
        return None
    categories = ["all", *names]

    def value(prefix: str, category: str) -> float:
        key = f"{prefix}_recall" if category == "all" else f"{prefix}_{category}"
        found = figures.get(key)
        return float(found) if isinstance(found, int | float) else 0.0

    fig, ax = plt.subplots(figsize=(9, 4.2))
    xs = list(range(len(categories)))
    width = 0.38
    for n, (prefix, label) in enumerate((("in_sample", "in-sample best"), ("loo", "leave-one-out"))):
        drawn = ax.bar([x + (n - 0.5) * width for x in xs], [value(prefix, c) for c in categories], width,
                       label=label, color=f"C{n}")  # fmt: skip
        ax.bar_label(drawn, fmt="%.3f", fontsize=7)
    for x, category in zip(xs, categories, strict=True):
        target = RETRIEVAL_TARGETS.get(category)
        if target is not None:
            ax.hlines(target, x - width, x + width, colors="C3", linestyles="--", linewidth=1.2,
                      label="target" if category == "all" else None)  # fmt: skip
    ax.set_xticks(xs, [c.replace("_", "-") for c in categories])
    ax.set(title="LoCoMo dev: evidence recall within 1,000 words", ylabel="recall", ylim=(0, 1.08))
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(True, axis="y", alpha=0.3)
    return _save(plt, fig, path)
