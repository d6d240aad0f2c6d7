"""Keyword benchmark: BM25 latency with one large cube (tantivy by default, or SQLite FTS5).

    python -m bench.keyword [--memories 1000000] [--queries 300] [--k 50] [--engine tantivy|fts5] [--dir PATH]

Builds ``--memories`` synthetic memories (Zipf-distributed words from a 20k-word vocabulary, 12-30 words
each) into one cube, then times ``search`` for ``--queries`` 3-6-word queries drawn from the same
distribution without its 100 most frequent words (the search layer strips stopwords before BM25), a
third of them restricted to two memory types as the search layer asks. Without ``--dir`` the store
lives in a temporary folder; with it, the built store is kept there (``<engine>-<memories>.db``) and
reused by the next run. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from memory_store.embedded.keyword import EmbeddedKeywordIndex
from memory_store.embedded.keyword_tantivy import TantivyKeywordIndex
from schemas.envelope import Position
from schemas.memory import MemoryRecord
from schemas.ops import UpsertMemory
from schemas.topics import MEMORIES

__all__ = ["main", "measure", "size_suffix"]

logger = logging.getLogger(__name__)

_CUBE = "bench-keyword"


def _vocabulary(size: int) -> list[str]:
    """Pronounceable distinct words: consonant-vowel syllables (the stemmer leaves them apart)."""
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    syllables = [c + v for c in consonants for v in vowels]
    words = [a + b + c for a in syllables for b in syllables for c in syllables]
    rng = np.random.default_rng(3)
    return [str(w) for w in rng.choice(words, size=size, replace=False)]


def _sampler(vocabulary: list[str], seed: int) -> tuple[np.random.Generator, np.ndarray]:
    ranks = np.arange(1, len(vocabulary) + 1, dtype=np.float64)
    weights = 1.0 / ranks**1.05
    return np.random.default_rng(seed), weights / weights.sum()


def _texts(vocabulary: list[str], n: int, rng: np.random.Generator, p: np.ndarray) -> list[str]:
    lengths = rng.integers(12, 31, size=n)
    words = rng.choice(len(vocabulary), size=int(lengths.sum()), p=p)
    out, at = [], 0
    for length in lengths:
        out.append(" ".join(vocabulary[w] for w in words[at : at + length]))
        at += length
    return out


Keyword = TantivyKeywordIndex | EmbeddedKeywordIndex


async def _build(index: Keyword, vocabulary: list[str], n: int, chunk: int = 20_000) -> float:
    rng, p = _sampler(vocabulary, 11)
    now = datetime.now(UTC)
    started = time.perf_counter()
    for lo in range(0, n, chunk):
        texts = _texts(vocabulary, min(chunk, n - lo), rng, p)
        ops = [
            UpsertMemory(
                memory=MemoryRecord(
                    id=f"m{lo + i}", cube_id=_CUBE, user_id="u", memory=text, created_at=now, updated_at=now
                )
            )  # fmt: skip
            for i, text in enumerate(texts)
        ]
        await index.apply_many([(ops, Position(MEMORIES, 0, lo + len(ops) - 1))])
        if lo and lo % 200_000 == 0:
            logger.warning("built %d of %d memories", lo, n)
    return time.perf_counter() - started


def _queries(vocabulary: list[str], n: int, stopwords: int = 100) -> list[str]:
    """3-6 words from the same distribution less its ``stopwords`` most frequent words (the search layer
    strips stopwords before BM25: ``settings.strip_stopwords``)."""
    rng, p = _sampler(vocabulary, 29)
    p = p[stopwords:] / p[stopwords:].sum()
    return [" ".join(vocabulary[stopwords + w] for w in rng.choice(len(p), size=int(rng.integers(3, 7)), p=p))
            for _ in range(n)]  # fmt: skip


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _timed(index: Keyword, args: argparse.Namespace, vocabulary: list[str]) -> dict[str, float]:
    queries = _queries(vocabulary, args.queries)
    types = (["LongTermMemory", "UserMemory"], None, None)
    for query in queries[:10]:  # warm-up: page cache, statement cache
        await index.search(_CUBE, query, k=args.k)
    latencies, cpu = [], time.process_time()
    for i, query in enumerate(queries):
        started = time.perf_counter()
        await index.search(_CUBE, query, k=args.k, memory_types=types[i % 3])
        latencies.append((time.perf_counter() - started) * 1e3)
    cpu_ms = (time.process_time() - cpu) / len(queries) * 1e3
    size = size_suffix(args.memories)
    return {
        "bm25_memories": args.memories,
        f"bm25_p50_ms_{size}": round(_pct(latencies, 0.5), 2),
        f"bm25_p95_ms_{size}": round(_pct(latencies, 0.95), 2),
        f"bm25_mean_ms_{size}": round(statistics.mean(latencies), 2),
        "bm25_cpu_ms_per_query": round(cpu_ms, 2),
    }


def size_suffix(memories: int) -> str:
    """The figures' key suffix for a cube of that many memories: ``1m``, ``100k``, or the number."""
    for unit, name in ((1_000_000, "m"), (1_000, "k")):
        if memories >= unit and memories % unit == 0:
            return f"{memories // unit}{name}"
    return str(memories)


async def _run(path: Path, args: argparse.Namespace, vocabulary: list[str]) -> dict[str, Any]:
    index: Keyword
    if args.engine == "fts5":
        index = EmbeddedKeywordIndex(f"sqlite:///{path}", synchronous="NORMAL")
    else:
        index = TantivyKeywordIndex(f"tantivy:///{path}", synchronous="NORMAL")
    await index.start()
    try:
        built = await index.checkpoint(MEMORIES, 0)
        build_s = None
        if built is None or built < args.memories - 1:  # a kept store is reused only when complete
            build_s = await _build(index, vocabulary, args.memories)
        figures: dict[str, Any] = {"bm25_engine": args.engine, **await _timed(index, args, vocabulary)}
    finally:
        await index.aclose()
    figures["bm25_build_memories_per_s"] = None if build_s is None else round(args.memories / build_s)
    return figures


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Build the cube (or reuse the one kept in ``--dir``), then time the queries; the headline figures."""
    vocabulary = _vocabulary(20_000)
    name = f"{args.engine}-{args.memories}.db"
    if args.dir:
        Path(args.dir).mkdir(parents=True, exist_ok=True)
        return await _run(Path(args.dir).resolve() / name, args, vocabulary)
    with tempfile.TemporaryDirectory(prefix="bench-keyword-") as tmp:
        return await _run(Path(tmp) / name, args, vocabulary)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.keyword", description=__doc__.splitlines()[0])
    parser.add_argument("--memories", type=int, default=1_000_000, help="memories in the one cube")
    parser.add_argument("--queries", type=int, default=300, help="queries timed")
    parser.add_argument("--k", type=int, default=50, help="results per query")
    parser.add_argument(
        "--engine", choices=("tantivy", "fts5"), default="tantivy", help="keyword index adapter"
    )
    parser.add_argument("--dir", default=None, help="folder that keeps the built store between runs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    figures = asyncio.run(measure(args))
    table = Table(
        title=f"BM25 ({args.engine}), one cube of {args.memories:,} memories (k={args.k}, {args.queries} queries)"
    )
    for column in ("p50 ms", "p95 ms", "mean ms", "CPU ms/query", "build memories/s"):
        table.add_column(column, justify="right")
    size = size_suffix(args.memories)
    table.add_row(*(str(figures[key]) for key in (f"bm25_p50_ms_{size}", f"bm25_p95_ms_{size}", f"bm25_mean_ms_{size}",
                                                 "bm25_cpu_ms_per_query", "bm25_build_memories_per_s")))  # fmt: skip
    Console(width=120).print(table)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
