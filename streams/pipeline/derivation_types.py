"""Shared pieces of the derivation step: its settings, progress reports, a planned event and failures."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from memory_store.base import GraphStore, VectorStore
from processors.dedup import DedupSettings
from processors.documents import DocumentBudget
from processors.fast import FastSettings, MemoryDraft
from processors.search_settings import SearchSettings
from schemas.events import ConversationRecorded, DerivationFailed, ModelUsage, derived_header
from schemas.memory import MemoryRecord
from streams.pipeline.sandbox import SandboxLimits
from streams.settings import DerivationSettings

__all__ = ["DeriverSettings", "Phase", "Plan", "Progress", "ProgressSink", "SimilarFn", "failed", "similar_in"]

logger = logging.getLogger(__name__)

Phase = Literal["fast", "fine", "both"]
SimilarFn = Callable[[str, Sequence[Sequence[float]], int], Awaitable[list[list[tuple[MemoryRecord, float]]]]]
"""``async (cube_id, vectors, k) -> [[(record, cosine similarity)] per vector]``: the dedup view from the stores."""


def similar_in(vector: VectorStore, graph: GraphStore) -> SimilarFn:
    """The dedup view of a slice of an add's memories from the stores: one k-NN call for all its vectors and
    one read of the records found (two calls per memory had cost the LoCoMo dev ingest about 0.5 s of 31)."""

    async def similar(cube_id: str, vectors: Sequence[Sequence[float]],
                      k: int) -> list[list[tuple[MemoryRecord, float]]]:
        found = await vector.search_many(cube_id, vectors, k=k)
        ids = list(dict.fromkeys(h.memory_id for hits in found for h in hits))
        records = {r.id: r for r in await graph.get(ids, cube_id=cube_id)}
        return [[(records[h.memory_id], h.score) for h in hits if h.memory_id in records] for hits in found]

    return similar


@dataclass(frozen=True, slots=True)
class Progress:
    """Where one add's derivation stands: ``step`` ("reading", "embedding", "deduplicating", "done"), done of
    total (memories of the step; "done": every memory of the add)."""

    step: str
    done: int
    total: int


ProgressSink = Callable[[ConversationRecorded, Progress], Awaitable[None]]
"""``async (event, progress)``: told at every step of every add of one ``derive_many`` call (the derivation
stage publishes it to the task's status)."""


@dataclass(frozen=True, slots=True)
class DeriverSettings:
    """Knobs of derivation; sizes are in tokens of the simple tokenizer (processors.chunking)."""

    fast: FastSettings = FastSettings()
    dedup: DedupSettings = DedupSettings()
    dedup_k: int = 5
    llm_retries: int = 2
    llm_max_tokens: int = 1024
    llm_concurrency: int = 4
    fetch_concurrency: int = 4
    fetch_images: bool = True
    describe_images: bool = True
    slice_size: int = 256
    keep_windows: bool = False
    """Fine mode keeps the fast windows beside what it extracts from them, instead of retiring them as refined
    (the app's ``derivation.keep_windows``, true by default, sets it; a bare Deriver does as MemOS does)."""
    """Memories embedded and looked up per step of a large add (progress is reported per step)."""
    batch_view: int = 256
    """Memories of earlier events of the same batch compared with each candidate (the most recent ones)."""
    sandbox: SandboxLimits = SandboxLimits()
    documents: DocumentBudget = DocumentBudget()
    fine_window_tokens: int = 4096
    """Longest window sent to extraction (rules or LLM); a longer one (one huge message) stays fast chunks."""
    fine_total_tokens: int = 100_000
    """Most tokens of one add sent to extraction; windows past it stay fast chunks (a 1 MB add: minutes)."""

    @classmethod
    def from_config(cls, config: DerivationSettings, *, model_id: str = "") -> DeriverSettings:
        """Settings from the ``derivation`` section of the app config, for the embedder ``model_id``: write-time
        dedup's cosine is search's ``sim_dedup_threshold`` for that embedder (both MemOS's 0.92 for e5, moved
        to the same percentile of the embedder's cosines by ``SearchSettings.embedder_profiles``)."""
        return cls(
            fast=FastSettings(window_tokens=config.window_tokens, window_overlap=config.window_overlap),
            dedup=DedupSettings(duplicate_cosine=SearchSettings().for_model(model_id).sim_dedup_threshold),
            slice_size=config.slice_size,
            keep_windows=config.keep_windows,
            sandbox=SandboxLimits(
                memory_bytes=config.parse_memory_mb * 1024 * 1024,
                cpu_s=max(1, int(config.parse_timeout_s)),
                wall_s=config.parse_timeout_s,
                per_add_s=config.parse_budget_per_add_s,
                per_user_s=config.parse_budget_per_user_s,
                user_window_s=config.parse_budget_window_s,
            ),
            documents=DocumentBudget(max_chars=config.parse_max_chars),
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """What one event will produce, before embedding."""

    event: ConversationRecorded
    drafts: list[MemoryDraft]
    retire: dict[str, list[str]]
    failures: list[DerivationFailed]
    nothing: DerivationFailed | None


def failed(
    event: ConversationRecorded, key: str, stage: str, error: str, fallback: str, usage: list[ModelUsage]
) -> DerivationFailed:
    """The DerivationFailed of ``event`` for one failing part (``key``: its deterministic id within the event)."""
    return DerivationFailed(
        **derived_header(event, f"failed:{key}"),
        cube_id=event.cube_id,
        origin_event_id=event.event_id,
        task_id=event.task_id,
        stage=stage,
        error=error,
        fallback=fallback,
        usage=usage,
    )
