"""What a query asks for and what a memory is, as search reads them (pure): person, preference, errors."""

from __future__ import annotations

import logging
import re

from schemas.memory import MemoryRecord

__all__ = ["asks_preference", "asks_recommendation", "first_person", "is_source_error", "own_words"]

logger = logging.getLogger(__name__)

_FIRST_PERSON = re.compile(r"\b(?:I|me|my|mine|myself)\b|\bI'|我", re.I)
_ASKS_PREFERENCE = re.compile(
    r"\b(?:recommend\w*|suggest\w*|prefer\w*|like|likes|love|loves|favou?rites?|enjoy|want|should i)\b"
    r"|推荐|建议|喜欢|偏好|想要",
    re.I,
)


def first_person(text: str) -> bool:
    """Whether a query speaks in the first person (it asks about the user)."""
    return _FIRST_PERSON.search(text) is not None


_ASKS_RECOMMENDATION = re.compile(r"\b(?:recommend\w*|suggest\w*|advise|should i)\b|推荐|建议", re.I)


def asks_recommendation(text: str) -> bool:
    """Whether a query asks for a recommendation (for the user: what the user said matters most)."""
    return _ASKS_RECOMMENDATION.search(text) is not None


def asks_preference(text: str) -> bool:
    """Whether a query asks for preferences or a recommendation."""
    return _ASKS_PREFERENCE.search(text) is not None


def own_words(record: MemoryRecord) -> bool:
    """Whether a memory comes only from the user's own messages."""
    return bool(record.sources) and all(s.role == "user" for s in record.sources)


def is_source_error(record: MemoryRecord) -> bool:
    """Whether a memory records that a source (file, image, URL) could not be fetched or read."""
    meta = record.metadata
    return meta.get("type") == "source_error" or bool(meta.get("placeholder"))
