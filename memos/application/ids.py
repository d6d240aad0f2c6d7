"""The identifier grammar of user and cube ids, checked at the door by every use case."""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Callable
from typing import Any, Final

from schemas.errors import ValidationFailed

__all__ = ["ID_GRAMMAR", "MAX_IDS_PER_REQUEST", "MAX_ID_CHARS", "check_id", "check_ids", "check_list", "is_valid_id"]

logger = logging.getLogger(__name__)

MAX_ID_CHARS: Final = 128
"""Longest user or cube id, in characters (after NFC normalisation)."""

MAX_IDS_PER_REQUEST: Final = 256
"""Most cube ids one request may name (a search, an add, a chat, a feed): each costs an access check."""

ID_GRAMMAR: Final = (
    f"1-{MAX_ID_CHARS} characters of letters, digits and '.', '_', ':', '@', '-' (Unicode NFC; "
    "no whitespace, control, format or bidirectional characters)"
)
"""The grammar in words, as errors and the README state it."""

_PUNCTUATION: Final = frozenset("._:@-")


def _allowed(char: str) -> bool:
    if char in _PUNCTUATION or (char.isascii() and char.isalnum()):
        return True
    category = unicodedata.category(char)
    return category.startswith("L") or category == "Nd"


def is_valid_id(value: object) -> bool:
    """Whether ``value`` is already a valid, NFC-normalised identifier."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_ID_CHARS
        and unicodedata.is_normalized("NFC", value)
        and all(_allowed(c) for c in value)
    )


def check_id(value: object, field: str) -> str:
    """The NFC form of a user or cube id; ValidationFailed naming ``field`` when it breaks the grammar."""
    if not isinstance(value, str):
        raise ValidationFailed(f"{field} must be a string, not {type(value).__name__}", field=field)
    normalized = unicodedata.normalize("NFC", value)
    if not normalized:
        raise ValidationFailed(f"{field} must not be empty", field=field)
    if len(normalized) > MAX_ID_CHARS:
        raise ValidationFailed(
            f"{field} is {len(normalized)} characters long; the limit is {MAX_ID_CHARS}", field=field
        )
    bad = next((c for c in normalized if not _allowed(c)), None)
    if bad is not None:
        raise ValidationFailed(
            f"{field} {value!r} contains the character {bad!r} (U+{ord(bad):04X}); an id is {ID_GRAMMAR}",
            field=field,
        )
    return normalized


def check_ids(values: object, field: str) -> list[str]:
    """Each id checked (``field.N`` names the bad one), duplicates dropped, order kept; at most
    ``MAX_IDS_PER_REQUEST`` of them (duplicates counted: the list is bounded before any work on it)."""
    return check_list(values, field, limit=MAX_IDS_PER_REQUEST, check=check_id)


def check_list(values: object, field: str, *, limit: int, check: Callable[[Any, str], str]) -> list[str]:
    """A list (or tuple) of at most ``limit`` values, each checked by ``check(value, "field.N")``, duplicates
    dropped, order kept; ValidationFailed naming ``field`` for anything else."""
    if isinstance(values, str) or not isinstance(values, list | tuple):
        raise ValidationFailed(f"{field} must be a list of ids", field=field)
    if len(values) > limit:
        raise ValidationFailed(f"{field} names {len(values)} ids; a request may name at most {limit}", field=field)
    return list(dict.fromkeys(check(v, f"{field}.{n}") for n, v in enumerate(values)))
