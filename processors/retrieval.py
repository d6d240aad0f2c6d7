"""Search as pure steps: the MemOS request and candidate scoring (settings: search_settings; shaping: search_response).

Shapes followed, read from MemTensor/MemOS (``src/memos/api/product_models.py`` at commit 98e882d2,
``src/memos/api/handlers/search_handler.py``, ``src/memos/api/handlers/formatters_handler.py``,
``src/memos/multi_mem_cube/single_cube.py``, ``src/memos/templates/instruction_completion.py``,
``src/memos/graph_dbs/polardb/filters.py``) and the MemOS docs' search example:

- Request (``APISearchRequest``): ``query``, ``user_id``, ``readable_cube_ids`` (deprecated
  ``mem_cube_id`` becomes ``[mem_cube_id]``), ``mode`` fast|fine|mixture (fast), ``session_id`` (a soft
  signal, never a hard filter), ``top_k`` (10), ``relativity`` (MemOS 0.57, later 0.45; :class:`SearchQuery` defaults to 0 = no
  threshold, the API layer passes what the caller sent), ``dedup`` no|sim|mmr|None
  (mmr), ``include_preference`` (True) with ``pref_top_k`` (6), ``search_tool_memory`` (True) with
  ``tool_mem_top_k`` (6), ``include_skill_memory`` (True) with ``skill_mem_top_k`` (3), ``filter``
  (see ``processors.filters``), ``internet_search`` (accepted, not supported: no network),
  ``search_memory_type`` ("All" or one text memory type). ``top_k`` caps each cube's bucket.
- Response ``data`` dict: ``text_mem``, ``pref_mem``, ``tool_mem``, ``skill_mem`` are lists with one
  ``{"cube_id", "memories", "total_nodes"}`` bucket per readable cube (``pref_mem`` is ``[]`` when
  preferences are not asked for); ``act_mem`` and ``para_mem`` are ``[]``; ``pref_string`` lists the
  preferences found ("Explicit Preference:\\n1. ...") followed by ``pref_note``, a short instruction.
- Memory item: ``{"id", "memory", "ref_id", "metadata"}`` with ``ref_id`` = ``"[<first uuid group>]"`` and
  metadata ``user_id, session_id, status, type, key, confidence, source, tags, visibility, updated_at,
  info, covered_history, memory_type, sources, embedding ([] unless asked for), created_at, usage,
  background, file_ids, relativity, ref_id, id, memory`` and ``score_parts`` (this system: each
  ranking's RRF contribution ``dense``, ``keyword``, ``graph``, ``time``; ``recency`` (0: search does not
  rank by age), ``boost`` (session, own-words and length factors), the raw ``cosine``, ``keyword_coverage``, ``fused`` and, when reranked,
  ``rerank``) plus ``cube_id`` and this system's history
  fields (``revision``, ``extractor``, ``retire_reason``, ``successor_ids``, ``valid_from``, ``valid_to``,
  ``origin_event_id``), then the record's own metadata (preference_type, preference, tool fields, ...).

Scoring (every constant lives in :class:`SearchSettings`): per cube and bucket, the dense and keyword
rankings and, for text, a graph ranking (neighbours of the strongest fused hits, scored by the seed's
fused score times the edge's relation weight) and a time ranking (``processors.timeparse``: memories
whose times match a time the query names, or that state a time when it asks when) are fused by
weighted reciprocal-rank fusion. Memories of the request's session get a multiplicative boost, and text
memories a factor for brevity (``length_prior``). ``relativity`` in [0, 1] is an absolute relevance
estimate, comparable across queries: the query-memory cosine mapped from [dense_floor, dense_ceiling]
onto [0, dense_knee] and from there linearly to 1 at cosine 1 (so 1.000 means an exact match), raised
by the share of query terms the memory contains (``dense_calibration`` holds the cosine range per embedder:
e5 squeezes every cosine into about 0.7-0.9). A graph neighbour is at least as relevant as its seed
times the link factor. Then an optional reranker, and in ``processors.search_response`` the relativity
threshold, dedup (MMR over the stored embeddings by default), the per-cube caps and the shaping.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from processors.expansion import Expansion, expansion_seeds, graph_expansion, rank_weights
from processors.filters import Filter, matches
from processors.fusion import (
    cosine_to,
    normalised,
    reciprocal_rank_fusion,
    term_coverage,
    term_patterns,
)
from processors.intent import asks_preference, asks_recommendation, first_person, is_source_error, own_words
from processors.relevance import dense_relativity, lexical_text, relativity
from processors.search_settings import SearchSettings
from processors.timeparse import query_time, time_ranking
from schemas.events import MemoryType
from schemas.memory import MemoryRecord

__all__ = [
    "BUCKET_TYPES",
    "Bucket",
    "Hit",
    "SearchQuery",
    "SearchSettings",
    "bucket_limit",
    "bucket_types",
    "candidate_k",
    "rank_weights",
    "expansion_seeds",
    "Expansion",
    "graph_expansion",
    "apply_rerank",
    "dense_relativity",
    "relativity",
    "score_hits",
    "length_factors",
    "spread_sessions",
]

logger = logging.getLogger(__name__)

Bucket = Literal["text", "pref", "tool", "skill"]
BUCKET_TYPES: dict[Bucket, tuple[MemoryType, ...]] = {
    "text": ("WorkingMemory", "LongTermMemory", "UserMemory", "OuterMemory"),
    "pref": ("PreferenceMemory",),
    "tool": ("ToolSchemaMemory", "ToolTrajectoryMemory"),
    "skill": ("SkillMemory",),
}
"""Memory types that go into each response bucket (MemOS ``post_process_textual_mem``)."""


class SearchQuery(BaseModel):
    """A MemOS ``APISearchRequest`` as the search service takes it (cube permissions already checked)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    query: str = Field(description="User search query.")
    user_id: str = Field(default="", description="User asking.")
    today: date | None = Field(
        default=None, description="The asker's date (UTC): relative times in the query resolve against it."
    )
    readable_cube_ids: tuple[str, ...] = Field(default=(), description="Cubes to search, in response order.")
    mem_cube_id: str | None = Field(
        default=None, description="(Deprecated) one cube; becomes readable_cube_ids."
    )
    mode: Literal["fast", "fine", "mixture"] = Field(default="fast", description="Search mode.")
    session_id: str | None = Field(
        default=None, description="Soft signal: this session's memories rank higher."
    )
    top_k: int = Field(default=10, ge=1, description="Text memories per cube.")
    relativity: float = Field(
        default=0.0, ge=0, le=1, description="Drop memories with relativity below this."
    )
    dedup: Literal["no", "sim", "mmr"] | None = Field(
        default="mmr", description="Dedup of text memories; None = exact-text dedup."
    )
    include_preference: bool = Field(default=True, description="Search PreferenceMemory too.")
    pref_top_k: int = Field(default=6, ge=0, description="Preference memories per cube.")
    search_tool_memory: bool = Field(default=True, description="Search tool schema and trajectory memories.")
    tool_mem_top_k: int = Field(default=6, ge=0, description="Tool memories per cube.")
    include_skill_memory: bool = Field(default=True, description="Search SkillMemory too.")
    skill_mem_top_k: int = Field(default=3, ge=0, description="Skill memories per cube.")
    filter: dict[str, Any] | None = Field(default=None, description="MemOS filter (processors.filters).")
    internet_search: bool = Field(default=False, description="Accepted for compatibility; not supported.")
    search_memory_type: str = Field(default="All", description="'All' or one text memory type to search.")
    include_history: bool = Field(default=False, description="Also return retired (superseded) memories.")
    include_embedding: bool = Field(default=False, description="Keep embeddings in the response metadata.")

    @model_validator(mode="after")
    def _cubes(self) -> SearchQuery:
        cubes = tuple(dict.fromkeys(self.readable_cube_ids))
        if not cubes and self.mem_cube_id:
            cubes = (self.mem_cube_id,)
        object.__setattr__(self, "readable_cube_ids", cubes)
        return self

    @classmethod
    def from_memos(cls, request: Mapping[str, Any], **overrides: Any) -> SearchQuery:
        """Build from a MemOS request dict, ignoring MemOS fields this service does not use."""
        data = {k: v for k, v in request.items() if k in cls.model_fields and v is not None}
        data.update(overrides)
        return cls.model_validate(data)


@dataclass(frozen=True, slots=True)
class Hit:
    """A memory found for a query: final score (for ordering), relativity in [0, 1], who found it."""

    record: MemoryRecord
    score: float
    relativity: float
    retrievers: tuple[str, ...] = ()
    parts: Mapping[str, float] = field(default_factory=dict)
    """What the score is made of (``score_parts`` in the response metadata)."""


def bucket_types(bucket: Bucket, query: SearchQuery) -> tuple[MemoryType, ...]:
    """Memory types searched for a bucket (``search_memory_type`` narrows the text bucket)."""
    types = BUCKET_TYPES[bucket]
    if bucket == "text" and query.search_memory_type not in ("All", ""):
        return tuple(t for t in types if t == query.search_memory_type)
    return types


def bucket_limit(bucket: Bucket, query: SearchQuery) -> int:
    """How many memories a cube's bucket may return (0: the bucket is not searched)."""
    if bucket == "text":
        return query.top_k if bucket_types("text", query) else 0
    if bucket == "pref":
        return query.pref_top_k if query.include_preference else 0
    if bucket == "tool":
        return query.tool_mem_top_k if query.search_tool_memory else 0
    return query.skill_mem_top_k if query.include_skill_memory else 0


def candidate_k(limit: int, settings: SearchSettings, *, filtered: bool) -> int:
    """Candidates to ask each retriever for, for a bucket returning ``limit`` memories."""
    k = max(settings.candidate_min, limit * settings.candidate_multiplier)
    if filtered:
        k *= settings.filter_multiplier
    return min(k, max(settings.candidate_max, limit))


def score_hits(
    bucket: Bucket,
    rankings: Mapping[str, Sequence[str]],
    records: Mapping[str, MemoryRecord],
    *,
    query: SearchQuery,
    query_vector: Sequence[float],
    terms: Sequence[str],
    flt: Filter | None,
    settings: SearchSettings,
    links: Mapping[str, tuple[str, float]] | None = None,
    query_model: str = "",
) -> list[Hit]:
    """Fuse one cube's rankings for one bucket into hits, best first.

    Dropped: ids without a record, records of another type than the bucket's, retired records (unless
    ``include_history``) and records failing the filter. Ranks are recounted over what is left, so a
    filter does not leave holes in a ranking. A graph neighbour (``links``) is at least as relevant as
    its seed times the link factor times ``graph_relativity``. A record embedded by another model than
    ``query_model`` gets no dense relativity (its cosine would mean nothing).
    """
    types = set(bucket_types(bucket, query))

    def keep(memory_id: str) -> bool:
        record = records.get(memory_id)
        if record is None or record.memory_type not in types:
            return False
        if record.status == "retired" and not query.include_history:
            return False
        return matches(flt, record)

    kept = {name: [i for i in dict.fromkeys(ids) if keep(i)] for name, ids in rankings.items()}
    weights = rank_weights(settings)
    fused = reciprocal_rank_fusion(kept, weights=weights, k=settings.rrf_k)
    if not fused:
        return []
    if settings.weight_time > 0 and "time" not in kept:
        ordered = sorted(fused, key=lambda i: (-fused[i], i))
        kept["time"] = time_ranking(query_time(query.query, query.today), ordered, records)
        if kept["time"]:
            fused = reciprocal_rank_fusion(kept, weights=weights, k=settings.rrf_k)
    contributions: dict[str, dict[str, float]] = {}
    for name, ids_ in kept.items():
        w = weights.get(name, 1.0)
        for rank, memory_id in enumerate(ids_, start=1):
            contributions.setdefault(memory_id, {})[name] = round(w / (settings.rrf_k + rank), 6)
    found_by: dict[str, list[str]] = {}
    for name, ids in kept.items():
        for memory_id in ids:
            found_by.setdefault(memory_id, []).append(name)
    ids = sorted(fused)
    qvec = normalised(query_vector)
    vectors = [records[i].embedding if _same_model(records[i], query_model) else () for i in ids]
    patterns = term_patterns(terms)
    cosines = dict(zip(ids, cosine_to(qvec, vectors), strict=True))
    coverage = {i: term_coverage(patterns, lexical_text(records[i])) for i in ids}
    rel = {i: relativity(cosines[i], records[i], patterns, settings, coverage=coverage[i]) for i in ids}
    if links:
        own = dict(rel)
        for memory_id in ids:
            link = links.get(memory_id)
            if link is not None and link[0] in own:
                rel[memory_id] = max(
                    rel[memory_id], round(own[link[0]] * link[1] * settings.graph_relativity, 6)
                )
    if bucket == "pref" and asks_preference(query.query):
        rel = {i: max(r, settings.preference_relativity) for i, r in rel.items()}
    about_user = first_person(query.query) or asks_recommendation(query.query)
    speaks_as_user = settings.own_words_boost > 0 and about_user
    length = length_factors(records, ids, settings.length_prior if bucket == "text" else 0.0)
    hits = []
    for memory_id in ids:
        record = records[memory_id]
        score = fused[memory_id]
        boost = length.get(memory_id, 1.0)
        if query.session_id and record.session_id == query.session_id:
            boost *= 1.0 + settings.session_boost
        if speaks_as_user and own_words(record) and _asked_by_writer(record, query):
            boost *= 1.0 + settings.own_words_boost
        if is_source_error(record):
            boost *= settings.source_error_factor
        score *= boost
        own = contributions.get(memory_id, {})
        cos = cosines[memory_id]
        parts = {
            "dense": own.get("dense", 0.0),
            "keyword": own.get("keyword", 0.0),
            "graph": own.get("graph", 0.0),
            "time": own.get("time", 0.0),
            "recency": 0.0,
            "boost": round(boost, 6),
            "cosine": round(cos, 6) if cos is not None else 0.0,
            "keyword_coverage": round(coverage[memory_id], 6),
            "fused": round(score, 6),
        }
        hits.append(Hit(record, score, rel[memory_id], tuple(found_by.get(memory_id, ())), parts))
    hits.sort(key=lambda h: (-h.score, h.record.id))
    return spread_sessions(hits, settings.session_spread) if bucket == "text" else hits


def _asked_by_writer(record: MemoryRecord, query: SearchQuery) -> bool:
    """Whether the asker wrote ``record`` (in a shared cube another user's own words are not the asker's)."""
    return not query.user_id or not record.user_id or record.user_id == query.user_id


@lru_cache(maxsize=32_768)
def _word_count(text: str) -> int:
    """Whitespace-separated words of a memory's text (cached: searches read the same memories again)."""
    return len(text.split())


def length_factors(records: Mapping[str, MemoryRecord], ids: Sequence[str], prior: float) -> dict[str, float]:
    """Per id, (words / median words of ``ids``) ^ -``prior``: shorter memories gain, longer ones lose
    (empty when ``prior`` is 0). The median keeps a typical memory's factor near 1."""
    if prior <= 0.0 or not ids:
        return {}
    words = {i: max(_word_count(records[i].memory), 1) for i in ids}
    middle = statistics.median(words.values())
    return {i: (n / middle) ** -prior for i, n in words.items()}


def spread_sessions(hits: Sequence[Hit], spread: float) -> list[Hit]:
    """Hits (best first) with score / (1 + spread x n), n = better hits of the same session, re-sorted."""
    if spread <= 0.0:
        return list(hits)
    seen: dict[str, int] = {}
    out = []
    for hit in hits:
        n = seen.get(hit.record.session_id or "", 0)
        seen[hit.record.session_id or ""] = n + 1
        out.append(replace(hit, score=hit.score / (1.0 + spread * n)) if n else hit)
    out.sort(key=lambda h: (-h.score, h.record.id))
    return out


def _same_model(record: MemoryRecord, query_model: str) -> bool:
    return not (record.embedding_model and query_model and record.embedding_model != query_model)


def apply_rerank(hits: Sequence[Hit], scores: Sequence[float], settings: SearchSettings) -> list[Hit]:
    """Blend reranker scores (in [0, 1]) for the first ``len(scores)`` hits into the order.

    New score = w x rerank + (1 - w) x the hit's score normalised by the best one, so both parts are in
    [0, 1]; hits beyond the reranked head count with a rerank score of 0. Relativity of a reranked hit
    becomes the mean of its old value and the reranker's score.
    """
    if not hits:
        return []
    top = max(h.score for h in hits) or 1.0
    w = settings.rerank_weight
    blended = []
    for n, h in enumerate(hits):
        if n < len(scores):
            s = min(1.0, max(0.0, scores[n]))
            blended.append(
                replace(
                    h,
                    score=w * s + (1.0 - w) * (h.score / top),
                    relativity=round((h.relativity + s) / 2.0, 6),
                    parts={**h.parts, "rerank": round(s, 6)},
                )
            )
        else:
            blended.append(replace(h, score=(1.0 - w) * (h.score / top)))
    blended.sort(key=lambda h: (-h.score, h.record.id))
    return blended
