"""Entity links (pure): memories that name the same person, place or thing get a RELATES edge.

Names are read without a model: capitalised Latin-script words that do not start a sentence or a line
(so "Guangzhou", "Hilton", "Pixel", "LGBTQ"), minus function words and the speaker labels of a
transcript ("Caroline: ..."), whose names are in every window and link nothing; and for CJK text the
items of bracketed lists and quotes (【七天、全季、希尔顿】, 「…」, 《…》, “…”). The shell hands each new
memory the existing memories most similar to it (the write-time dedup view); those that share a name
with it are linked, across sessions, so search's graph expansion reaches evidence spread over them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache

from processors.dedup import CACHED_CHARS
from schemas.events import ConversationRecorded, MemoryAdded, RelationAdded, derive_id, derived_header
from schemas.memory import MemoryRecord

__all__ = ["entity_names", "entity_relations", "speaker_labels"]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"(?<![\w'’])([A-Z][a-z]+(?:[A-Z][a-z]+)*|[A-Z]{2,}[a-z]?s?)(?![\w'’])")
_SENTENCE_START = re.compile(r"(?:^|[.!?:\n\"“(]\s*|\]\s*)$")
_LABEL = re.compile(r"^\s*([^\W\d_][\w .'-]{0,40}?)\s*:", re.M)
_CJK_GROUP = re.compile(r"[【「《“『]([^】」》”』]{1,60})[】」》”』]")
_CJK_SPLIT = re.compile(r"[、，,；;/和与及]+")
_COMMON = frozenset(
    """
    i im ive ill id the a an and but or so oh hey hi hello wow yes yeah no ok okay thanks thank sure
    well great cool awesome nice good amazing wonderful congrats congratulations sorry please what when
    where why who how which that this these those there here it its my your our their his her he she we
    they you me mom dad monday tuesday wednesday thursday friday saturday sunday january february march
    april may june july august september october november december today tomorrow yesterday lol omg
    haha btw also just really definitely absolutely totally anyway by the way user assistant
    """.split()
)
_MAX_LINKS = 8


def speaker_labels(text: str) -> frozenset[str]:
    """Lower-cased names that label lines of a transcript ("Caroline: hi" -> "caroline"); cached up to
    ``processors.dedup.CACHED_CHARS``."""
    return _cached_labels(text) if len(text) <= CACHED_CHARS else _labels(text)


def entity_names(text: str) -> frozenset[str]:
    """Lower-cased names a text mentions (speaker labels and sentence-initial words excluded); cached up to
    ``processors.dedup.CACHED_CHARS``."""
    return _cached_names(text) if len(text) <= CACHED_CHARS else _names(text)


def _labels(text: str) -> frozenset[str]:
    return frozenset(m.group(1).strip().lower() for m in _LABEL.finditer(text))


def _names(text: str) -> frozenset[str]:
    labels = speaker_labels(text)
    names: set[str] = set()
    for m in _NAME.finditer(text):
        word = m.group(1)
        lowered = word.lower()
        if lowered in _COMMON or lowered in labels or len(lowered) < 2:
            continue
        before = text[max(0, m.start() - 3) : m.start()]
        if _SENTENCE_START.search(before) and not word.isupper():
            continue
        names.add(lowered)
    for group in _CJK_GROUP.finditer(text):
        for item in _CJK_SPLIT.split(group.group(1)):
            item = item.strip(" 等")
            if 2 <= len(item) <= 12:
                names.add(item.lower())
    return frozenset(names - labels)


_cached_labels = lru_cache(maxsize=4096)(_labels)
_cached_names = lru_cache(maxsize=4096)(_names)


def entity_relations(
    event: ConversationRecorded,
    added: Sequence[MemoryAdded],
    views: Mapping[str, Sequence[tuple[MemoryRecord, float]]],
    resolved: Mapping[str, str],
) -> list[RelationAdded]:
    """RELATES edges from each new memory to the memories of its view that name the same entity.

    ``views`` maps a new memory's id to existing memories (with cosine) the shell read for it;
    ``resolved`` maps new ids to the memory that stands for them after dedup (a merged memory links
    nothing of its own; memories already derived from this same event, seen again on a redelivery, are
    skipped, so a redelivery derives what the first delivery did). Edge ids derive from both ends, so replays and repeats make the same edges;
    weight 1.0, metadata ``{"kind": "entity", "entities": [...]}``; at most 8 links per memory.
    """
    out: list[RelationAdded] = []
    seen: set[tuple[str, str]] = set()
    for memory in added:
        source = memory.memory_id
        if resolved.get(source, source) != source:
            continue
        names = entity_names(memory.memory)
        if not names:
            continue
        labels = speaker_labels(memory.memory)
        links = 0
        for record, _cos in views.get(source, ()):
            if record.origin_event_id == str(event.event_id):
                continue  # this very event's memories (a redelivery): same events as the first delivery
            target = resolved.get(record.id, record.id)
            if target == source or record.cube_id != event.cube_id or (source, target) in seen:
                continue
            shared = sorted(names & entity_names(record.memory) - labels - speaker_labels(record.memory))
            if not shared:
                continue
            seen.add((source, target))
            key = f"entity:{source}:{target}"
            out.append(
                RelationAdded(
                    **derived_header(event, key),
                    relation_id=str(derive_id(event.event_id, f"{key}:relation")),
                    cube_id=event.cube_id,
                    source_id=source,
                    target_id=target,
                    relation="RELATES",
                    weight=1.0,
                    metadata={"kind": "entity", "entities": shared[:5]},
                )
            )
            links += 1
            if links >= _MAX_LINKS:
                break
    return out
