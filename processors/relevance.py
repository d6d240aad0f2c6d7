"""Relativity (pure): an absolute relevance in [0, 1] from the calibrated cosine and query-term coverage."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from processors.dedup import CACHED_CHARS
from processors.fusion import TermPattern, calibrate, term_coverage
from schemas.memory import MemoryRecord
from schemas.text import times_in_words

if TYPE_CHECKING:
    from processors.retrieval import SearchSettings

__all__ = ["dense_relativity", "lexical_text", "relativity"]

logger = logging.getLogger(__name__)


def relativity(
    cos: float | None, record: MemoryRecord, patterns: Sequence[TermPattern], settings: SearchSettings,
    *, coverage: float | None = None,
) -> float:
    """Absolute relevance in [0, 1], comparable across queries and memories.

    dense = the cosine mapped linearly from [dense_floor, dense_ceiling] onto [0, dense_knee] and from
    [dense_ceiling, 1] onto [dense_knee, 1]; lexical = ``lexical_relativity`` x the share of query terms
    the memory holds; relativity = 1 - (1 - dense)(1 - lexical). It reaches 1 only at cosine 1 (the
    query and the memory say the same), so two different memories cannot both score 1 for one query.
    """
    dense = 0.0 if cos is None else dense_relativity(cos, settings)
    if coverage is None:  # the share of query terms the memory holds (the caller may have it already)
        coverage = term_coverage(patterns, lexical_text(record))
    lexical = settings.lexical_relativity * coverage
    return round(1.0 - (1.0 - dense) * (1.0 - lexical), 6)


def dense_relativity(cos: float, settings: SearchSettings) -> float:
    """The calibrated cosine in [0, 1]: floor -> 0, ceiling -> ``dense_knee``, 1 -> 1 (piecewise linear)."""
    knee = settings.dense_knee
    if cos >= 1.0 - 1e-9:
        return 1.0
    if cos <= settings.dense_ceiling:
        return knee * calibrate(cos, settings.dense_floor, settings.dense_ceiling)
    return knee + (1.0 - knee) * calibrate(cos, settings.dense_ceiling, 1.0)


def lexical_text(record: MemoryRecord) -> str:
    """The text term coverage reads: the memory (times in words, as indexed), its key and its tags."""
    text = record.memory
    spoken = _cached_words(text) if len(text) <= CACHED_CHARS else times_in_words(text)
    return " ".join((spoken, record.key, " ".join(record.tags)))


@lru_cache(maxsize=32_768)
def _cached_words(text: str) -> str:
    """``times_in_words`` memoized: every search reads its candidates' texts again."""
    return times_in_words(text)
