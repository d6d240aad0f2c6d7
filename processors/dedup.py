"""Write-time dedup and conflicts (pure): duplicates become revisions, conflicting facts supersede old ones.

The shell loads a view (similar existing memories of the same cube with their cosine similarity) for
every candidate and calls :func:`resolve_candidates`; history stays visible because a superseded
memory is retired, not deleted, and still resolves by id.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

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
from schemas.memory import MemoryRecord, capped_sources

__all__ = ["DedupResult", "DedupSettings", "conflict_key", "cosine", "resolve_candidates", "says_nothing_new",
           "token_overlap"]

logger = logging.getLogger(__name__)

_FACTS = {"UserMemory", "LongTermMemory", "WorkingMemory"}
_NOT_ATTRIBUTES = ("question:", "statement:", "request:", "answer:", "assistant:", "tool use:", "image:")


@dataclass(frozen=True, slots=True)
class DedupSettings:
    """Thresholds: a duplicate needs a high cosine and a high token overlap (Jaccard), and says nothing new
    (``says_nothing_new``): dedup never drops words the stored memory lacks."""

    duplicate_cosine: float = 0.92
    duplicate_overlap: float = 0.6
    conflicts: bool = True
    batch_window: int = 512
    """Near duplicates within one add are looked for among the last this many kept memories (exact
    duplicates among all): bounded work for any input size."""


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


CACHED_CHARS = 2000
"""Texts up to this long (a window, a fact) have their token sets and names cached: a stored memory is compared with
many new ones. Longer ones (file chunks) are not kept, so the caches stay within a few tens of MB."""


_TIME_LABEL = re.compile(r"^\[(?=[^\]\n]*\d)[^\]\n]{1,40}\] ", re.MULTILINE)
"""A line's chat-time label ("[2023-05-08 13:56] user: ..."): when a message was said, not what was said."""


def _words(text: str) -> tuple[str, ...]:
    """``text``'s tokens in order, case-folded, without punctuation and chat-time labels."""
    text = _TIME_LABEL.sub("", text)
    return tuple(text[s:e].casefold() for s, e in token_spans(text) if text[s:e].strip(".,;:!?\"'()[]"))


_cached_words = lru_cache(maxsize=4096)(_words)


def _word_list(text: str) -> tuple[str, ...]:
    """``_words`` (cached up to ``CACHED_CHARS``)."""
    return _cached_words(text) if len(text) <= CACHED_CHARS else _words(text)


@lru_cache(maxsize=4096)
def _cached_tokens(text: str) -> frozenset[str]:
    return frozenset(_word_list(text))


def _tokens(text: str) -> frozenset[str]:
    """The token set ``token_overlap`` compares (cached up to ``CACHED_CHARS``)."""
    return _cached_tokens(text) if len(text) <= CACHED_CHARS else frozenset(_words(text))


def says_nothing_new(candidate: str, stored: str) -> bool:
    """Whether ``candidate``'s words run unbroken inside ``stored``'s (punctuation, case and chat-time labels
    aside), so that keeping only ``stored`` loses nothing: the same message again, or a part of the stored
    window. "I went swimming" says something "I went hiking" does not, "Bob paid Alice" something "Alice paid
    Bob" does not, and "I like spicy food" something "I don't like spicy food" does not (its words are there,
    but not in one run), however close their embeddings."""
    words, within = _word_list(candidate), _word_list(stored)
    if len(words) > len(within):
        return False
    sep = "\x00"  # no word holds it: a match is a run of whole words
    return f"{sep}{sep.join(words)}{sep}" in f"{sep}{sep.join(within)}{sep}"


def token_overlap(a: str, b: str) -> float:
    """Jaccard overlap of the two texts' token sets (case-folded, punctuation and chat-time labels ignored)."""
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
    return _normalized(candidate.memory) == _normalized(text) or _is_duplicate_text(
        candidate.memory, text, similarity, settings
    )


def _is_duplicate_text(new: str, stored: str, similarity: float, settings: DedupSettings) -> bool:
    """Whether ``new`` duplicates ``stored``: close, mostly the same words, and nothing ``stored`` lacks."""
    return (
        similarity >= settings.duplicate_cosine
        and token_overlap(new, stored) >= settings.duplicate_overlap
        and says_nothing_new(new, stored)
    )


def resolve_candidates(
    event: ConversationRecorded,
    candidates: Sequence[MemoryAdded],
    views: Mapping[str, Sequence[tuple[MemoryRecord, float]]],
    settings: DedupSettings | None = None,
) -> DedupResult:
    """Turn candidate memories into the events to append, given each one's view of similar memories.

    For each candidate (in order): a duplicate of an earlier candidate of the same add is dropped and
    its sources merged into that one; a duplicate of an existing memory (one of the same type first,
    where a fact and a preference share their words) becomes a ``MemoryRevised``
    (reason "duplicate", sources appended); a stored memory whose words run unbroken inside the candidate's
    (a conversation sent again with a new message) is retired as refined by it, the candidate taking its
    sources; a conflicting fact or preference (same key, different text)
    is added with ``valid_from`` and the old one is retired as superseded, with a SUPERSEDES edge;
    anything else is added as is. Only memories of the candidate's own user and cube are compared: in a
    shared cube, one user's "I live in Paris" never supersedes another's "I live in Berlin", and one user's
    words never become a revision of another's memory. Existing memories of this very event (a redelivery)
    are ignored, so deriving an event twice gives the same events.
    """
    settings = settings or DedupSettings()
    origin = str(event.event_id)
    kept: list[MemoryAdded] = []
    twins = _BatchTwins(candidates, settings)
    resolved: dict[str, str] = {}
    tail: list[Event] = []
    revisions: dict[str, int] = {}
    retired: set[str] = set()
    for row, candidate in enumerate(candidates):
        twin = twins.find(row)
        if twin is not None:
            index = twin
            other = kept[index]
            merged = capped_sources([*other.sources, *(s for s in candidate.sources if s not in other.sources)])
            kept[index] = other.model_copy(update={"sources": merged})
            resolved[candidate.memory_id] = other.memory_id
            continue
        view = [
            (record, similarity)
            for record, similarity in views.get(candidate.memory_id, ())
            if record.status == "activated"
            and record.cube_id == candidate.cube_id
            and record.user_id == candidate.user_id  # in a shared cube, "the user" of each is another person
            and record.id != candidate.memory_id
            and record.origin_event_id != origin
            and record.id not in retired
        ]
        stored = [r for r, sim in view if _is_duplicate(candidate, r.memory, sim, settings)]
        duplicate = next((r for r in stored if r.memory_type == candidate.memory_type), None) or next(
            iter(stored), None
        )
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
        # stored memories this one contains (a conversation sent again with a new message): this one takes
        # their place and their sources, so the cube holds one memory of the exchange, not one per sending
        subsumed = [r for r, sim in view if r is not old and r.memory_type == candidate.memory_type
                    and _is_duplicate_text(r.memory, candidate.memory, sim, settings)]
        if subsumed:
            retired.update(r.id for r in subsumed)
            sources = [*candidate.sources, *(x for r in subsumed for x in r.sources if x not in candidate.sources)]
            candidate = candidate.model_copy(update={"sources": capped_sources(sources)})
            tail += [_subsumed(event, candidate, r) for r in subsumed]
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
        twins.keep(row)
        resolved[candidate.memory_id] = candidate.memory_id
    return DedupResult(events=[*kept, *tail], resolved=resolved)


class _BatchTwins:
    """Finds, for a candidate, an earlier kept candidate of the same add that it duplicates, in bounded work.

    Exact text twins are found through a dictionary over every kept candidate; near twins (cosine and
    token overlap) only among the last ``DedupSettings.batch_window`` kept ones, one matrix-vector product
    per candidate. So an add of n memories costs O(n * window) and O(n) memory, never an n x n matrix
    (a 30,000-memory add made that product crash OpenBLAS). For adds within the window the answer is
    the same as comparing all pairs: the earliest kept twin.
    """

    def __init__(self, candidates: Sequence[MemoryAdded], settings: DedupSettings) -> None:
        self.candidates = candidates
        self.settings = settings
        self.rows: list[int] = []
        self.exact: dict[tuple[str, str], int] = {}
        self.unit = _unit_rows(candidates)
        self.token_sets: dict[int, frozenset[str]] = {}

    def find(self, row: int) -> int | None:
        """Index (in kept order) of the earliest kept twin of candidate ``row``, or None."""
        candidate = self.candidates[row]
        found: list[int] = []
        exact = self.exact.get((candidate.memory_type, _normalized(candidate.memory)))
        if exact is not None:
            found.append(exact)
        window = self.settings.batch_window
        start = max(0, len(self.rows) - window)
        if self.unit is not None and len(self.rows) > start:
            recent = self.rows[start:]
            sims = self.unit[recent] @ self.unit[row]
            for offset in np.flatnonzero(sims >= self.settings.duplicate_cosine):
                index = start + int(offset)
                other_row = self.rows[index]
                if self.candidates[other_row].memory_type != candidate.memory_type:
                    continue
                mine, theirs = self._tokens(row), self._tokens(other_row)
                union = len(mine | theirs)
                overlap = len(mine & theirs) / union if union else 1.0
                if overlap >= self.settings.duplicate_overlap and says_nothing_new(
                    candidate.memory, self.candidates[other_row].memory
                ):
                    found.append(index)
                    break
        return min(found) if found else None

    def _tokens(self, row: int) -> frozenset[str]:
        """The token set of candidate ``row`` (computed once: a candidate meets up to ``window`` others)."""
        cached = self.token_sets.get(row)
        if cached is None:
            cached = self.token_sets[row] = _tokens(self.candidates[row].memory)
        return cached

    def keep(self, row: int) -> None:
        """Record candidate ``row`` as kept (the next index in kept order)."""
        candidate = self.candidates[row]
        self.exact.setdefault((candidate.memory_type, _normalized(candidate.memory)), len(self.rows))
        self.rows.append(row)


def _normalized(text: str) -> str:
    return " ".join(text.split())


def _unit_rows(candidates: Sequence[MemoryAdded]) -> np.ndarray | None:
    """The candidates' embeddings as unit rows (None when missing or of mixed sizes)."""
    dims = {len(c.embedding) for c in candidates}
    if not candidates or len(dims) != 1 or 0 in dims:
        return None
    matrix = np.asarray([c.embedding for c in candidates], dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms == 0, 1.0, norms)).astype(np.float32)


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


def _subsumed(event: ConversationRecorded, new: MemoryAdded, old: MemoryRecord) -> MemoryRetired:
    """``old`` retired for ``new``, which says all it says and more (its sources are ``new``'s now)."""
    return MemoryRetired(
        **derived_header(event, f"{new.memory_id}:subsumes:{old.id}"),
        memory_id=old.id,
        cube_id=old.cube_id,
        reason="refined",
        successor_ids=[new.memory_id],
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
