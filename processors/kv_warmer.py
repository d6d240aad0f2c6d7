"""Which memories a cube's warm KV cache should hold: scoring, selection under a token budget, rebuild decision.

Pure: the shell passes in the cube's memories, recent query signals, retrieval counts, the current warm
composition and the current time (from an event, never a clock).

Score of a memory (weights and half-lives live in :class:`WarmPolicy`)::

    score = 0.5 * relevance + 0.3 * frequency + 0.2 * recency

- ``relevance``: the best similarity (clamped to [0, 1]) of the memory to any recent query, each query
  weighted by ``0.5 ** (query_age / query_half_life_s)``, so old queries fade.
- ``frequency``: ``log1p(retrievals) / log1p(max retrievals in the cube)``, 0 when nothing was retrieved.
- ``recency``: ``0.5 ** (memory_age / recency_half_life_s)`` from the memory's ``created_at``.

Selection takes memories by descending score (ties by id) while their tokens fit the budget (a memory
too large for what is left is skipped, smaller ones may still fit). The prefix lists the selected
memories in chronological order (created_at, then id), so a composition is stable however scores move.
The prefix hash is the sha256 of the model id, the composition format version and the ordered texts;
it is the cache key together with the model id. A rebuild is needed when there is no warm cache, when
a memory of it no longer exists or changed, or when the hash changed and the new selection's score
exceeds the current one's by more than ``hysteresis`` (relative).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

__all__ = [
    "COMPOSITION_VERSION",
    "MEMORY_HEADER",
    "MemoryCandidate",
    "QuerySignal",
    "ScoredMemory",
    "WarmComposition",
    "WarmPlan",
    "WarmPolicy",
    "compose_memory_text",
    "estimate_tokens",
    "plan_warm_cache",
    "prefix_hash",
    "score_memories",
    "select_within_budget",
]

logger = logging.getLogger(__name__)

COMPOSITION_VERSION = 1
"""Bumped whenever :func:`compose_memory_text` changes, so old caches never match new prefixes."""

MEMORY_HEADER = "Memories of this user (most relevant facts):"
"""First line of the composed memory text."""


@dataclass(frozen=True, slots=True)
class MemoryCandidate:
    """A live memory of the cube; ``tokens`` is its exact token count when the shell knows it."""

    memory_id: str
    text: str
    created_at: datetime
    tokens: int | None = None


@dataclass(frozen=True, slots=True)
class QuerySignal:
    """A recent query and the similarity of each memory to it (memory id -> cosine in [-1, 1])."""

    text: str
    occurred_at: datetime
    similarities: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class WarmPolicy:
    """Weights, decays and limits of warm-cache selection."""

    token_budget: int = 2048
    w_relevance: float = 0.5
    w_frequency: float = 0.3
    w_recency: float = 0.2
    query_half_life_s: float = 3600.0
    recency_half_life_s: float = 7 * 24 * 3600.0
    max_memories: int = 64
    min_score: float = 0.0
    hysteresis: float = 0.0


@dataclass(frozen=True, slots=True)
class ScoredMemory:
    """A memory with its score and the three parts of it."""

    memory_id: str
    text: str
    created_at: datetime
    tokens: int
    score: float
    relevance: float
    frequency: float
    recency: float


@dataclass(frozen=True, slots=True)
class WarmComposition:
    """What a warm cache was built from: its ordered memories and prefix hash."""

    memory_ids: tuple[str, ...]
    texts: tuple[str, ...]
    prefix_hash: str


RebuildReason = Literal["cold", "unchanged", "stale", "composition_changed", "within_hysteresis", "empty"]


@dataclass(frozen=True, slots=True)
class WarmPlan:
    """The composition the cache should have, and whether it must be (re)built."""

    memory_ids: tuple[str, ...]
    texts: tuple[str, ...]
    tokens: int
    prefix_hash: str
    rebuild: bool
    reason: RebuildReason
    scored: tuple[ScoredMemory, ...]


def estimate_tokens(text: str) -> int:
    """A token count estimate for budgeting when the exact count is unknown (about 4 chars a token)."""
    return max(1, math.ceil(len(text) / 4)) + 2


def compose_memory_text(texts: Sequence[str]) -> str:
    """The text a warm cache holds for these memories, in order: a header, then one ``- `` line each."""
    lines = [MEMORY_HEADER, *(f"- {' '.join(t.split())}" for t in texts)]
    return "\n".join(lines)


def prefix_hash(model_id: str, texts: Sequence[str]) -> str:
    """sha256 hex of the model id, :data:`COMPOSITION_VERSION` and the ordered texts (length-prefixed)."""
    digest = hashlib.sha256()
    for part in (model_id, str(COMPOSITION_VERSION), *texts):
        raw = part.encode("utf-8")
        digest.update(len(raw).to_bytes(8, "big"))
        digest.update(raw)
    return digest.hexdigest()


def _decay(age_s: float, half_life_s: float) -> float:
    if half_life_s <= 0:
        return 1.0 if age_s <= 0 else 0.0
    return float(0.5 ** (max(age_s, 0.0) / half_life_s))


def score_memories(
    memories: Sequence[MemoryCandidate],
    queries: Sequence[QuerySignal],
    retrieval_counts: Mapping[str, int],
    now: datetime,
    policy: WarmPolicy = WarmPolicy(),
) -> list[ScoredMemory]:
    """Every memory scored as the module doc says, best first (ties by memory id)."""
    weights = [_decay((now - q.occurred_at).total_seconds(), policy.query_half_life_s) for q in queries]
    max_count = max((max(c, 0) for c in retrieval_counts.values()), default=0)
    scored: list[ScoredMemory] = []
    for m in memories:
        relevance = max(
            (
                w * min(max(q.similarities.get(m.memory_id, 0.0), 0.0), 1.0)
                for q, w in zip(queries, weights, strict=True)
            ),
            default=0.0,
        )
        count = max(retrieval_counts.get(m.memory_id, 0), 0)
        frequency = math.log1p(count) / math.log1p(max_count) if max_count > 0 else 0.0
        recency = _decay((now - m.created_at).total_seconds(), policy.recency_half_life_s)
        score = policy.w_relevance * relevance + policy.w_frequency * frequency + policy.w_recency * recency
        tokens = m.tokens if m.tokens is not None else estimate_tokens(m.text)
        scored.append(
            ScoredMemory(m.memory_id, m.text, m.created_at, tokens, score, relevance, frequency, recency)
        )
    scored.sort(key=lambda s: (-s.score, s.memory_id))
    return scored


def select_within_budget(
    scored: Sequence[ScoredMemory], policy: WarmPolicy = WarmPolicy()
) -> list[ScoredMemory]:
    """Best-scored memories whose tokens fit ``policy.token_budget``, in prefix (chronological) order."""
    budget = policy.token_budget - estimate_tokens(MEMORY_HEADER)
    chosen: list[ScoredMemory] = []
    for s in sorted(scored, key=lambda s: (-s.score, s.memory_id)):
        if len(chosen) >= policy.max_memories:
            break
        if s.score < policy.min_score or s.tokens > budget:
            continue
        chosen.append(s)
        budget -= s.tokens
    chosen.sort(key=lambda s: (s.created_at, s.memory_id))
    return chosen


def plan_warm_cache(
    model_id: str,
    memories: Sequence[MemoryCandidate],
    queries: Sequence[QuerySignal],
    retrieval_counts: Mapping[str, int],
    now: datetime,
    current: WarmComposition | None = None,
    policy: WarmPolicy = WarmPolicy(),
) -> WarmPlan:
    """The composition a cube's warm cache should have now, and whether to rebuild it.

    With ``hysteresis`` > 0 a changed selection replaces a still-valid current composition only when
    its total score is more than ``(1 + hysteresis)`` times the current one's.
    """
    scored = score_memories(memories, queries, retrieval_counts, now, policy)
    chosen = select_within_budget(scored, policy)
    ids = tuple(s.memory_id for s in chosen)
    texts = tuple(s.text for s in chosen)
    digest = prefix_hash(model_id, texts)
    tokens = estimate_tokens(MEMORY_HEADER) + sum(s.tokens for s in chosen)
    full = tuple(scored)

    def plan(rebuild: bool, reason: RebuildReason) -> WarmPlan:
        return WarmPlan(ids, texts, tokens, digest, rebuild, reason, full)

    if not chosen:
        return plan(False, "empty")
    if current is None:
        return plan(True, "cold")
    if current.prefix_hash == digest:
        return plan(False, "unchanged")
    live = {m.memory_id: m.text for m in memories}
    if any(live.get(i) != t for i, t in zip(current.memory_ids, current.texts, strict=True)):
        return plan(True, "stale")
    if policy.hysteresis > 0:
        by_id = {s.memory_id: s for s in scored}
        kept = sum(by_id[i].score for i in current.memory_ids if i in by_id)
        if sum(s.score for s in chosen) <= kept * (1.0 + policy.hysteresis):
            kept_tokens = estimate_tokens(MEMORY_HEADER) + sum(by_id[i].tokens for i in current.memory_ids)
            return WarmPlan(
                current.memory_ids,
                current.texts,
                kept_tokens,
                current.prefix_hash,
                False,
                "within_hysteresis",
                full,
            )
    return plan(True, "composition_changed")
