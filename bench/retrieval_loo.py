"""Leave-one-conversation-out tuning for bench.retrieval: candidates read once, settings scored cheaply.

For every question the candidates that search reads (dense and BM25 rankings, their records and graph
edges) are read once from the built cubes; each candidate :class:`SearchSettings` is then scored by
the same pure steps ``SearchService`` runs (``graph_expansion``, ``score_hits``, ``select_hits``), so a
setting costs milliseconds per question, not a rebuild. Leave-one-out: for each conversation, the
setting with the best mean recall on the other conversations is chosen and scored on this one; the
held-out recalls of all questions are pooled (overall and per category). In-sample: the single best
setting scored on all questions. Embeddings of turns and questions are cached in a file under /tmp.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import sqlite3
import statistics
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memory_store.embedding.base import Embedder, Embeddings, EmbedKind
from processors.fusion import keyword_query, query_terms
from processors.retrieval import (
    BUCKET_TYPES,
    SearchQuery,
    SearchSettings,
    apply_rerank,
    graph_expansion,
    score_hits,
)
from processors.search_response import select_hits
from processors.speakers import speaker_free_query
from schemas.memory import MemoryRecord, RelationRecord

__all__ = [
    "Candidates",
    "EmbeddingCache",
    "LooResult",
    "collect",
    "interval",
    "leave_one_out",
    "ranked",
    "settings_grid",
]

logger = logging.getLogger(__name__)

CACHE_DIR = Path(os.environ.get("MEMOS_BENCH_CACHE", "/tmp/memos-bench-cache"))
RERANK_BATCH = 32
"""Documents per reranker request while collecting (TEI's default client batch limit)."""


class EmbeddingCache:
    """Wraps an embedder's ``embed`` with a SQLite file of (model, kind, text) -> float32 vector."""

    def __init__(self, embedder: Embedder, path: Path | None = None) -> None:
        self.embedder = embedder
        self.inner = embedder.embed
        # the bundled model's kernels give vectors equal to cosine 0.999, not bit for bit: one file each
        runtime = f"{embedder.model_id}|{getattr(embedder, 'kernels', '')}"
        name = hashlib.sha256(runtime.encode()).hexdigest()[:12]
        self.path = path or CACHE_DIR / f"embeddings-{name}.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False)
        self._conn.execute("CREATE TABLE IF NOT EXISTS vec (key TEXT PRIMARY KEY, v BLOB NOT NULL)")
        self.hits = 0
        self.misses = 0

    def install(self) -> None:
        """Replace the embedder's ``embed`` on this instance (the deriver and search share it)."""
        self.embedder.embed = self.embed  # type: ignore[method-assign]

    @staticmethod
    def _key(kind: str, text: str) -> str:
        return hashlib.sha256(f"{kind}\0{text}".encode()).hexdigest()

    async def embed(self, texts: Sequence[str], *, kind: EmbedKind = "passage") -> Embeddings:
        keys = [self._key(kind, t) for t in texts]
        with self._lock:
            found: dict[str, list[float]] = {}
            for n in range(0, len(keys), 500):
                part = keys[n : n + 500]
                marks = ",".join("?" * len(part))
                for key, blob in self._conn.execute(f"SELECT key, v FROM vec WHERE key IN ({marks})", part):
                    found[key] = np.frombuffer(blob, dtype=np.float32).astype(np.float64).tolist()
        missing = [t for t, k in zip(texts, keys, strict=True) if k not in found]
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        if missing:
            fresh = await self.inner(list(dict.fromkeys(missing)), kind=kind)
            with self._lock:
                for text, vector in zip(dict.fromkeys(missing), fresh.vectors, strict=True):
                    key = self._key(kind, text)
                    blob = np.asarray(vector, dtype=np.float32)
                    found[key] = blob.astype(np.float64).tolist()
                    self._conn.execute("INSERT OR REPLACE INTO vec VALUES (?, ?)", (key, blob.tobytes()))
                self._conn.commit()
        vectors = [found[k] for k in keys]
        dim = len(vectors[0]) if vectors else self.embedder.dimension
        return Embeddings(vectors, self.embedder.model_id, dim)


@dataclass(slots=True)
class Candidates:
    """What search reads for one question of one cube, read once."""

    question: str
    category: int
    evidence: tuple[str, ...]
    cube: str
    vector: list[float]
    rankings: dict[str, list[str]]
    records: dict[str, MemoryRecord]
    relations: list[RelationRecord]
    speaker_free_vector: list[float] | None = None
    """The query without the speakers it names, embedded (``processors.speakers``); None: names none."""
    speaker_free_dense: list[str] = field(default_factory=list)
    """The dense ranking of ``speaker_free_vector``."""
    rerank: dict[str, float] | None = None
    """The configured reranker's score of every text record (None: no reranker configured)."""


async def collect(
    runtime: Any, cube: str, question: str, *, category: int, evidence: Sequence[str], k: int
) -> Candidates:
    """Read the dense and BM25 rankings of ``question`` (``k`` each), their edges and all records."""
    types = list(BUCKET_TYPES["text"])
    settings: SearchSettings = runtime.search_service.settings
    vector = (await runtime.embedder.embed([question], kind="query")).vectors[0]
    keyword = await runtime.keyword.search(
        cube, keyword_query(question, strip_stopwords=settings.strip_stopwords), k=k, memory_types=types
    )
    dense = await runtime.vector.search(cube, vector, k=k, memory_types=types)
    rankings = {"dense": [m.memory_id for m in dense], "keyword": [m.memory_id for m in keyword]}
    ids = list(dict.fromkeys(i for r in rankings.values() for i in r))
    relations = [r for r in settings.relation_weights if r != "SUPERSEDES"]  # any a grid setting may follow
    edges = await runtime.graph.neighbors(ids, relations=relations, limit=50 * len(ids) + 100)
    wanted = list(dict.fromkeys(ids + [e.source_id for e in edges] + [e.target_id for e in edges]))
    records = {r.id: r for r in await runtime.graph.get(wanted, cube_id=cube)}
    share = settings.speaker_share or SearchSettings().speaker_share  # a grid may switch it on
    texts = [records[i].memory for i in rankings["keyword"] if i in records]
    stripped = speaker_free_query(question, texts, share=share)
    cand = Candidates(question, category, tuple(evidence), cube, vector, rankings, records, edges)
    if stripped is not None:  # what search reads when it embeds the query without the speaker
        cand.speaker_free_vector = (await runtime.embedder.embed([stripped], kind="query")).vectors[0]
        alt = await runtime.vector.search(cube, cand.speaker_free_vector, k=k, memory_types=types)
        cand.speaker_free_dense = [m.memory_id for m in alt]
        more = [m for m in cand.speaker_free_dense if m not in records]
        alt_edges = await runtime.graph.neighbors(more, relations=relations, limit=50 * len(more) + 100)
        cand.relations = list({e.id: e for e in [*edges, *alt_edges]}.values())
        extra = [*more, *(e.source_id for e in alt_edges), *(e.target_id for e in alt_edges)]
        records.update((r.id, r) for r in await runtime.graph.get(list(dict.fromkeys(extra)), cube_id=cube))
    if (reranker := runtime.search_service.reranker) is not None:  # every record a setting may put in its head
        scored = [r for r in records.values() if r.memory_type in types]
        cand.rerank = {}
        for at in range(0, len(scored), RERANK_BATCH):
            batch = scored[at : at + RERANK_BATCH]
            scores = await reranker.rerank(question, [r.memory for r in batch])
            cand.rerank.update(zip((r.id for r in batch), scores, strict=True))
    return cand


def ranked(
    cand: Candidates, settings: SearchSettings, *, top_k: int, query_model: str
) -> list[dict[str, Any]]:
    """The text memories search would return for ``cand`` under ``settings`` (memory, metadata subset)."""
    query = SearchQuery(query=cand.question, readable_cube_ids=(cand.cube,), top_k=top_k)
    rankings = {name: list(ids) for name, ids in cand.rankings.items()}
    vector = cand.vector
    if settings.speaker_share > 0 and cand.speaker_free_vector is not None:
        rankings["dense"] = list(cand.speaker_free_dense)
        vector = cand.speaker_free_vector
    expansion = graph_expansion(rankings, cand.relations, settings)
    rankings["graph"] = list(expansion.ranking)
    hits = score_hits(
        "text",
        rankings,
        cand.records,
        query=query,
        query_vector=vector,
        terms=query_terms(cand.question),
        flt=None,
        settings=settings,
        links=expansion.links,
        query_model=query_model,
    )
    if cand.rerank is not None:  # as SearchService._rerank does with the reranker's answers
        head = [cand.rerank.get(h.record.id, 0.0) for h in hits[: settings.rerank_pool]]
        hits = apply_rerank(hits, head, settings)
    chosen = select_hits({cand.cube: hits}, limit=top_k, dedup="mmr", min_relativity=0.0, settings=settings)
    out = []
    for hit in chosen[cand.cube]:
        meta = dict(hit.record.metadata)
        meta["sources"] = [{"message_id": s.message_id} for s in hit.record.sources]
        out.append({"memory": hit.record.memory, "metadata": meta})
    return out


def settings_grid(base: SearchSettings, grid: Mapping[str, Sequence[Any]]) -> list[SearchSettings]:
    """Every combination of ``grid`` values applied to ``base`` (the base itself first).

    A name ``relation_weights.RELATES`` sets one entry of the relation-weight map.
    """
    names = list(grid)
    out = [base]
    for values in itertools.product(*(grid[n] for n in names)):
        update: dict[str, Any] = {}
        relations = dict(base.relation_weights)
        for name, value in zip(names, values, strict=True):
            if name.startswith("relation_weights."):
                relations[name.split(".", 1)[1]] = float(value)
            else:
                update[name] = value
        update["relation_weights"] = relations
        variant = SearchSettings.model_validate({**base.model_dump(), **update})
        if variant != base and variant not in out:
            out.append(variant)
    return out


@dataclass(slots=True)
class LooResult:
    """Recall per question of the held-out choice (LOO), of the in-sample best and of the base setting."""

    loo: dict[int, list[float]] = field(default_factory=dict)
    in_sample: dict[int, list[float]] = field(default_factory=dict)
    base: dict[int, list[float]] = field(default_factory=dict)
    chosen: dict[str, dict[str, Any]] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)
    held_out: dict[str, float] = field(default_factory=dict)
    """Mean recall of each conversation's questions under the setting chosen without it."""


def _diff(setting: SearchSettings, base: SearchSettings) -> dict[str, Any]:
    a, b = setting.model_dump(), base.model_dump()
    return {k: v for k, v in a.items() if v != b[k]}


def leave_one_out(
    scores: np.ndarray,
    cubes: Sequence[str],
    categories: Sequence[int],
    settings: Sequence[SearchSettings],
) -> LooResult:
    """``scores[s, q]``: recall of question q under setting s (setting 0 is the base)."""
    out = LooResult()
    cube_arr = np.asarray(cubes)
    cats = np.asarray(categories)
    best = int(np.argmax(scores.mean(axis=1)))
    out.best = _diff(settings[best], settings[0])
    for cube in dict.fromkeys(cubes):
        train = cube_arr != cube
        pick = int(np.argmax(scores[:, train].mean(axis=1)))
        out.chosen[cube] = _diff(settings[pick], settings[0])
        out.held_out[cube] = float(scores[pick, ~train].mean())
        for q in np.flatnonzero(~train):
            out.loo.setdefault(int(cats[q]), []).append(float(scores[pick, q]))
    for n in range(scores.shape[1]):
        out.in_sample.setdefault(int(cats[n]), []).append(float(scores[best, n]))
        out.base.setdefault(int(cats[n]), []).append(float(scores[0, n]))
    return out


def interval(
    values: Mapping[int, Sequence[float]],
    category: int | None = None,
    *,
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean recall: questions resampled with replacement (fixed seed).

    It says how far the figure could move on other questions like these; the fold choices are taken as
    fixed, so it is a little narrow for leave-one-out.
    """
    pooled = np.asarray([v for c, vs in values.items() if category in (None, c) for v in vs], dtype=float)
    if pooled.size == 0:
        return 0.0, 0.0
    draws = np.random.default_rng(seed).integers(0, pooled.size, size=(resamples, pooled.size))
    lo, hi = np.quantile(pooled[draws].mean(axis=1), [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def mean(values: Mapping[int, Sequence[float]], category: int | None = None) -> float:
    """Mean recall over one category or all."""
    pooled = [v for c, vs in values.items() if category in (None, c) for v in vs]
    return statistics.fmean(pooled) if pooled else 0.0
