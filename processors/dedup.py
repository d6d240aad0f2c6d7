"""Write-time dedup and conflicts (pure): duplicates become revisions, conflicting facts supersede old ones.

The shell loads a view (similar existing memories of the same cube with their cosine similarity) for
every candidate and calls :func:`resolve_candidates`; history stays visible because a superseded
memory is retired, not deleted, and still resolves by id.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from processors.chunking import token_spans
from schemas.events import (
    ConversationRecorded,
    Event,
    MemoryAdded,
    MemoryRetired,
    MemoryRevised,
    RelationAdded,
    derive_id,
    derived_header,
)
from schemas.memory import MemoryRecord

__all__ = ["DedupResult", "DedupSettings", "conflict_key", "cosine", "resolve_candidates", "token_overlap"]

logger = logging.getLogger(__name__)

_FACTS = {"UserMemory", "LongTermMemory", "WorkingMemory"}
_NOT_ATTRIBUTES = ("question:", "statement:", "request:", "assistant:", "tool use:", "image:")


@dataclass(frozen=True, slots=True)
class DedupSettings:
    """Thresholds: a duplicate needs both a high cosine and a high token overlap (Jaccard)."""

    duplicate_cosine: float = 0.92
    duplicate_overlap: float = 0.6
    conflicts: bool = True


@dataclass(frozen=True, slots=True)
class DedupResult:
    """Events to append, and for each candidate id the id that now holds its content."""

    events: list[Event] = field(default_factory=list)
    resolved: dict[str, str] = field(default_factory=dict)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two vectors (0.0 when either is empty or zero)."""
    if not a or not b or len(a) != len(b):
        return 0.0
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def _tokens(text: str) -> set[str]:
    return {text[s:e].casefold() for s, e in token_spans(text) if text[s:e].strip(".,;:!?\"'()[]")}


def token_overlap(a: str, b: str) -> float:
    """Jaccard overlap of the two texts' token sets (case-folded, punctuation ignored)."""
    ta, tb = _tokens(a), _tokens(b)
    if not ta and not tb:
        return 1.0
    return len(ta & tb) / len(ta | tb)


def conflict_key(memory_type: str, title: str, extractor: str) -> str | None:
    """The key two memories must share to conflict; None for memories that never conflict.

    Only extracted facts and preferences conflict (not fast windows, file chunks or tool memories), and
    only when the title names an attribute (not a quoted question, request or statement).
    """
    if extractor == "fast" or not title.strip():
        return None
    family = (
        "preference" if memory_type == "PreferenceMemory" else ("fact" if memory_type in _FACTS else None)
    )
    normalized = " ".join(title.casefold().split())
    if family is None or normalized.startswith(_NOT_ATTRIBUTES):
        return None
    return f"{family}|{normalized}"


def _is_duplicate(candidate: MemoryAdded, text: str, similarity: float, settings: DedupSettings) -> bool:
    if " ".join(candidate.memory.split()) == " ".join(text.split()):
        return True
    return (
        similarity >= settings.duplicate_cosine
        and token_overlap(candidate.memory, text) >= settings.duplicate_overlap
    )


def resolve_candidates(
    event: ConversationRecorded,
    candidates: Sequence[MemoryAdded],
    views: Mapping[str, Sequence[tuple[MemoryRecord, float]]],
    settings: DedupSettings | None = None,
) -> DedupResult:
    """Turn candidate memories into the events to append, given each one's view of similar memories.

    For each candidate (in order): a duplicate of an earlier candidate of the same add is dropped and
    its sources merged into that one; a duplicate of an existing memory becomes a ``MemoryRevised``
    (reason "duplicate", sources appended); a conflicting fact or preference (same key, different text)
    is added with ``valid_from`` and the old one is retired as superseded, with a SUPERSEDES edge;
    anything else is added as is. Existing memories of this very event (a redelivery) are ignored, so
    deriving an event twice gives the same events.
    """
    settings = settings or DedupSettings()
    origin = str(event.event_id)
    kept: list[MemoryAdded] = []
    kept_rows: list[int] = []
    sims = _similarities(candidates)
    resolved: dict[str, str] = {}
    tail: list[Event] = []
    revisions: dict[str, int] = {}
    retired: set[str] = set()
    for row, candidate in enumerate(candidates):
        twin = _batch_twin(
            candidate, [(kept_rows[k], kept[k]) for k in range(len(kept))], sims[row], settings
        )
        if twin is not None:
            index = twin
            other = kept[index]
            merged = [*other.sources, *(s for s in candidate.sources if s not in other.sources)]
            kept[index] = other.model_copy(update={"sources": merged})
            resolved[candidate.memory_id] = other.memory_id
            continue
        view = [
            (record, similarity)
            for record, similarity in views.get(candidate.memory_id, ())
            if record.status == "activated"
            and record.cube_id == candidate.cube_id
            and record.id != candidate.memory_id
            and record.origin_event_id != origin
            and record.id not in retired
        ]
        duplicate = next((r for r, sim in view if _is_duplicate(candidate, r.memory, sim, settings)), None)
        if duplicate is not None:
            revision = revisions.get(duplicate.id, duplicate.revision) + 1
            revisions[duplicate.id] = revision
            tail.append(_revision(event, candidate, duplicate, revision))
            resolved[candidate.memory_id] = duplicate.id
            continue
        key = (
            conflict_key(candidate.memory_type, candidate.title, candidate.extractor)
            if settings.conflicts
            else None
        )
        old = None
        if key is not None:
            old = next((r for r, _ in view if conflict_key(r.memory_type, r.key, r.extractor) == key), None)
        if old is not None:
            retired.add(old.id)
            kept.append(
                candidate.model_copy(
                    update={
                        "valid_from": candidate.valid_from or event.occurred_at,
                        "metadata": {**candidate.metadata, "supersedes": old.id},
                    }
                )
            )
            tail += _supersede(event, candidate, old)
        else:
            kept.append(candidate)
        kept_rows.append(row)
        resolved[candidate.memory_id] = candidate.memory_id
    return DedupResult(events=[*kept, *tail], resolved=resolved)


def _similarities(candidates: Sequence[MemoryAdded]) -> np.ndarray:
    """Pairwise cosine similarities of the candidates' embeddings (zeros where missing or mismatched)."""
    n = len(candidates)
    dims = {len(c.embedding) for c in candidates}
    if n == 0 or len(dims) != 1 or 0 in dims:
        return np.zeros((n, n), dtype=np.float32)
    matrix = np.asarray([c.embedding for c in candidates], dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit = (matrix / np.where(norms == 0, 1.0, norms)).astype(np.float32)
    return unit @ unit.T


def _batch_twin(
    candidate: MemoryAdded, kept: Sequence[tuple[int, MemoryAdded]], sims: np.ndarray, settings: DedupSettings
) -> int | None:
    """Index in ``kept`` of an earlier candidate of the same add that ``candidate`` duplicates."""
    for index, (row, other) in enumerate(kept):
        if other.memory_type == candidate.memory_type and _is_duplicate(
            candidate, other.memory, float(sims[row]), settings
        ):
            return index
    return None


def _revision(
    event: ConversationRecorded, candidate: MemoryAdded, existing: MemoryRecord, revision: int
) -> MemoryRevised:
    count = existing.metadata.get("duplicate_count", 0)
    return MemoryRevised(
        **derived_header(event, f"{candidate.memory_id}:duplicate"),
        memory_id=existing.id,
        cube_id=existing.cube_id,
        revision=revision,
        memory=existing.memory,
        tags=list(dict.fromkeys([*existing.tags, *candidate.tags])),
        metadata={
            "duplicate_count": (count if isinstance(count, int) else 0) + 1,
            "last_duplicate_event": str(event.event_id),
        },
        sources=list(candidate.sources),
        reason="duplicate",
        origin_event_id=event.event_id,
        usage=list(candidate.usage),
    )


def _supersede(event: ConversationRecorded, new: MemoryAdded, old: MemoryRecord) -> list[Event]:
    return [
        MemoryRetired(
            **derived_header(event, f"{new.memory_id}:supersedes:{old.id}:retired"),
            memory_id=old.id,
            cube_id=old.cube_id,
            reason="superseded",
            successor_ids=[new.memory_id],
            valid_to=event.occurred_at,
        ),
        RelationAdded(
            **derived_header(event, f"{new.memory_id}:supersedes:{old.id}:relation"),
            relation_id=str(derive_id(event.event_id, f"{new.memory_id}:supersedes:{old.id}")),
            cube_id=new.cube_id,
            source_id=new.memory_id,
            target_id=old.id,
            relation="SUPERSEDES",
            metadata={"key": new.title},
        ),
    ]
