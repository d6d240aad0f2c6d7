"""MemOS search filters: validate a filter dict once, then evaluate it purely against memory records.

Grammar (MemOS ``APISearchRequest.filter``; see ``processors.retrieval`` for the sources)::

    filter    := {"and": [filter, ...]} | {"or": [filter, ...]} | condition
    condition := {field: value, ...}            equality; several fields in one dict are ANDed
               | {field: {op: value, ...}}      several operators on one field are ANDed
    op        := "=" | "gt" | "gte" | "lt" | "lte" | "in" | "contains" | "like"

MemOS itself only allows ``and``/``or`` at the root; nesting them is accepted here as well.

Fields resolve in this order:

1. aliases: ``create_time`` -> ``created_at``, ``update_time`` -> ``updated_at``, ``memory_id`` -> ``id``,
   ``title`` -> ``key``;
2. top-level record fields (``id``, ``cube_id``, ``user_id``, ``session_id``, ``memory``, ``memory_type``,
   ``key``, ``tags``, ``background``, ``status``, ``extractor``, ``confidence``, ``revision``,
   ``created_at``, ``updated_at``, ``valid_from``, ``valid_to``, ...) and the derived ``file_ids`` (the
   file ids of the memory's sources) and ``sources`` (their types);
3. ``info.<name>`` and ``metadata.<path>``: inside the record's metadata (``info.x`` also finds a flat
   ``metadata["x"]``, since MemOS flattens ``info`` into metadata);
4. any other name: ``metadata[name]``, else ``metadata["info"][name]`` (MemOS maps unknown keys to
   ``info.<key>``).

Semantics: a missing field never matches. Time fields (``*_at``, ``*_time``, ``valid_from``,
``valid_to``) compare as timezone-aware datetimes; a date without a zone is taken as UTC. On a list
field, equality and ``contains`` test membership, and ``in`` tests for any common element.
``like`` is case-insensitive, with SQL wildcards (``%`` any run, ``_`` one character); a pattern
without ``%`` matches as a substring (MemOS's ``CONTAINS``). It is matched without backtracking (the
pieces between ``%`` found leftmost, in order), so its time grows with the text times the pattern, never
more. A malformed filter raises ``ValidationFailed`` whose ``field`` is the path of the offending part,
e.g. ``filter.and[1].created_at``.

Bounds (every caller is untrusted): at most ``MAX_DEPTH`` nested ``and``/``or`` levels, ``MAX_CONDITIONS``
conditions, ``MAX_LIST`` values in one ``in``/``contains`` list and ``MAX_PATTERN`` characters in one
``like`` pattern; more is a ValidationFailed naming the part.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal, TypeAlias

from schemas.errors import ValidationFailed
from schemas.memory import MemoryRecord

__all__ = [
    "MAX_CONDITIONS",
    "MAX_DEPTH",
    "MAX_LIST",
    "MAX_PATTERN",
    "And",
    "Condition",
    "Filter",
    "LikePattern",
    "Or",
    "compile_filter",
    "matches",
    "parse_time",
    "referenced_fields",
    "resolve_field",
]

logger = logging.getLogger(__name__)

Operator = Literal["=", "gt", "gte", "lt", "lte", "in", "contains", "like"]
OPERATORS: frozenset[str] = frozenset({"=", "gt", "gte", "lt", "lte", "in", "contains", "like"})
_OP_ALIASES: dict[str, str] = {"eq": "=", "==": "="}
_FIELD_ALIASES: dict[str, str] = {
    "create_time": "created_at",
    "update_time": "updated_at",
    "memory_id": "id",
    "title": "key",
}
_RECORD_FIELDS: frozenset[str] = frozenset(
    {
        "id",
        "cube_id",
        "user_id",
        "session_id",
        "memory",
        "memory_type",
        "key",
        "tags",
        "background",
        "status",
        "extractor",
        "confidence",
        "revision",
        "retire_reason",
        "successor_ids",
        "embedding_model",
        "origin_event_id",
        "created_at",
        "updated_at",
        "valid_from",
        "valid_to",
    }
)
_TIME_FIELDS: frozenset[str] = frozenset({"created_at", "updated_at", "valid_from", "valid_to"})
_MISSING = object()

MAX_DEPTH = 16
"""Most nested ``and``/``or`` levels in one filter."""
MAX_CONDITIONS = 1_000
"""Most conditions (field, operator) in one filter."""
MAX_LIST = 10_000
"""Most values in one ``in`` or ``contains`` list."""
MAX_PATTERN = 256
"""Most characters in one ``like`` pattern."""


class LikePattern:
    """A SQL ``LIKE`` pattern (``%`` any run, ``_`` one character), case-insensitive, matched without backtracking.

    The pattern splits at ``%`` into pieces of fixed length; the first must match at the start, the last
    at the end, and each one between is found leftmost after the previous one (for fixed-length pieces the
    leftmost place is always a right choice), so a match costs at most the text's length times the
    pattern's. Pieces without ``_`` are found with ``str.find``; the others with a regex of literals and
    ``.`` (no repetition, nothing to backtrack into).
    """

    __slots__ = ("anchored", "pattern", "pieces")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        lowered = pattern.lower()
        self.anchored = "%" in lowered
        """False: no ``%``, the pattern matches anywhere (MemOS's CONTAINS)."""
        self.pieces: list[tuple[str, re.Pattern[str] | None]] = [
            (piece, re.compile("".join("." if ch == "_" else re.escape(ch) for ch in piece), re.DOTALL)
             if "_" in piece else None)
            for piece in (lowered.split("%") if self.anchored else ["", lowered, ""])
        ]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LikePattern) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)

    def __repr__(self) -> str:
        return f"LikePattern({self.pattern!r})"

    def match(self, text: str) -> bool:
        """Whether the whole of ``text`` matches the pattern."""
        text = text.lower()
        (first, first_re), *middle, (last, last_re) = self.pieces
        start, end = len(first), len(text) - len(last)
        if end < start:
            return False
        if not _piece_at(first, first_re, text, 0) or not _piece_at(last, last_re, text, end):
            return False
        for piece, piece_re in middle:
            if not piece:
                continue
            if piece_re is None:
                found = text.find(piece, start, end)
            else:
                hit = piece_re.search(text, start, end)
                found = -1 if hit is None else hit.start()
            if found < 0:
                return False
            start = found + len(piece)
        return True


def _piece_at(piece: str, piece_re: re.Pattern[str] | None, text: str, at: int) -> bool:
    if piece_re is None:
        return text.startswith(piece, at)
    return piece_re.match(text, at, at + len(piece)) is not None


@dataclass(frozen=True, slots=True)
class Condition:
    """One operator applied to one field; ``value`` is already normalised (dates parsed)."""

    field: str
    op: Operator
    value: Any
    is_time: bool = False


@dataclass(frozen=True, slots=True)
class And:
    """All parts must match (an empty And matches everything)."""

    parts: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Or:
    """At least one part must match (an empty Or matches nothing)."""

    parts: tuple[Filter, ...]


Filter: TypeAlias = And | Or | Condition


def _is_time_field(name: str) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return leaf in _TIME_FIELDS or leaf.endswith("_at") or leaf.endswith("_time")


def parse_time(value: object) -> datetime | None:
    """A timezone-aware datetime from a datetime, a date or an ISO-8601 string; None if it is none."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    return None


def compile_filter(raw: Mapping[str, Any] | None) -> Filter | None:
    """Validate a MemOS filter and turn it into a tree; None or {} means no filter.

    Raises ValidationFailed (``field`` = path of the bad part) when the filter is malformed.
    """
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ValidationFailed(f"filter must be an object, got {type(raw).__name__!r}", field="filter")
    if not raw:
        return None
    return _compile(raw, "filter", [0], 0)


def _compile(node: object, path: str, count: list[int], depth: int) -> Filter:
    """``count``: conditions compiled so far in the whole filter; ``depth``: and/or levels above ``node``."""
    if not isinstance(node, Mapping):
        raise ValidationFailed(f"filter part at {path!r} must be an object, got {node!r}", field=path)
    parts: list[Filter] = []
    for raw_key, value in node.items():
        if not isinstance(raw_key, str) or not raw_key.strip():
            raise ValidationFailed(
                f"filter field names must be non-empty strings, got {raw_key!r}", field=path
            )
        key = raw_key.strip()
        if key.lower() in ("and", "or"):
            sub = f"{path}.{key.lower()}"
            if not isinstance(value, list):
                raise ValidationFailed(f"{key!r} takes a list of conditions, got {value!r}", field=sub)
            if depth >= MAX_DEPTH:
                raise ValidationFailed(f"filter nests 'and'/'or' more than {MAX_DEPTH} levels deep", field=sub)
            children = tuple(_compile(item, f"{sub}[{i}]", count, depth + 1) for i, item in enumerate(value))
            parts.append(And(children) if key.lower() == "and" else Or(children))
        else:
            conditions = _compile_field(key, value, f"{path}.{key}")
            count[0] += len(conditions)
            if count[0] > MAX_CONDITIONS:
                raise ValidationFailed(f"filter has more than {MAX_CONDITIONS} conditions", field=f"{path}.{key}")
            parts.extend(conditions)
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def _compile_field(key: str, value: object, path: str) -> list[Condition]:
    name = _FIELD_ALIASES.get(key, key)
    is_time = _is_time_field(name)
    if not isinstance(value, Mapping):
        return [_condition(name, "=", value, path, is_time)]
    if not value:
        raise ValidationFailed(f"no operator given for field {key!r}", field=path)
    conditions: list[Condition] = []
    for raw_op, operand in value.items():
        op = _OP_ALIASES.get(str(raw_op).lower(), str(raw_op).lower())
        if op not in OPERATORS:
            raise ValidationFailed(
                f"unknown filter operator {raw_op!r} on field {key!r}; use one of {sorted(OPERATORS)!r}",
                field=path,
            )
        conditions.append(_condition(name, op, operand, path, is_time))  # type: ignore[arg-type]
    return conditions


def _condition(name: str, op: Operator, operand: object, path: str, is_time: bool) -> Condition:
    if isinstance(operand, list) and len(operand) > MAX_LIST:
        raise ValidationFailed(f"{op!r} on {name!r} takes at most {MAX_LIST} values, got {len(operand)}", field=path)
    if op == "in":
        if not isinstance(operand, list):
            raise ValidationFailed(f"'in' on {name!r} takes a list, got {operand!r}", field=path)
        if is_time:
            return Condition(name, op, tuple(_time_operand(v, name, path) for v in operand), True)
        return Condition(name, op, tuple(operand), False)
    if op == "like":
        if not isinstance(operand, str):
            raise ValidationFailed(f"'like' on {name!r} takes a string pattern, got {operand!r}", field=path)
        if len(operand) > MAX_PATTERN:
            raise ValidationFailed(
                f"'like' pattern on {name!r} is {len(operand)} characters; at most {MAX_PATTERN}", field=path
            )
        return Condition(name, op, LikePattern(operand), False)
    if isinstance(operand, Mapping):
        raise ValidationFailed(f"operand of {op!r} on {name!r} must be a value, got {operand!r}", field=path)
    if op in ("gt", "gte", "lt", "lte"):
        if is_time:
            return Condition(name, op, _time_operand(operand, name, path), True)
        if isinstance(operand, bool) or not isinstance(operand, int | float | str):
            raise ValidationFailed(
                f"{op!r} on {name!r} takes a number or a string, got {operand!r}", field=path
            )
        return Condition(name, op, operand, False)
    if op == "=" and is_time and isinstance(operand, str | datetime | date):
        return Condition(name, op, _time_operand(operand, name, path), True)
    if op == "contains" and isinstance(operand, list):
        return Condition(name, op, tuple(operand), False)
    return Condition(name, op, operand, False)


def _time_operand(value: object, name: str, path: str) -> datetime:
    parsed = parse_time(value)
    if parsed is None:
        raise ValidationFailed(
            f"{name!r} compares with a date or ISO-8601 time such as '2025-01-01', got {value!r}", field=path
        )
    return parsed


# --- evaluation -------------------------------------------------------------------------------------------


def matches(flt: Filter | None, record: MemoryRecord) -> bool:
    """Whether ``record`` passes ``flt`` (None passes everything)."""
    if flt is None:
        return True
    if isinstance(flt, And):
        return all(matches(part, record) for part in flt.parts)
    if isinstance(flt, Or):
        return any(matches(part, record) for part in flt.parts)
    return _check(flt, resolve_field(record, flt.field))


def resolve_field(record: MemoryRecord, name: str) -> object:
    """Value of a filter field on a record (see the module docstring), or a sentinel when missing."""
    if name in _RECORD_FIELDS:
        return getattr(record, name)
    if name == "file_ids":
        return [s.file_id for s in record.sources if s.file_id]
    if name == "sources":
        return [s.type for s in record.sources]
    meta = record.metadata
    if name.startswith("info."):
        leaf = name[len("info.") :]
        info = meta.get("info")
        if isinstance(info, Mapping) and leaf in info:
            return info[leaf]
        return _path(meta, leaf)
    if name.startswith("metadata."):
        return _path(meta, name[len("metadata.") :])
    if name in meta:
        return meta[name]
    info = meta.get("info")
    if isinstance(info, Mapping) and name in info:
        return info[name]
    return _path(meta, name) if "." in name else _MISSING


def _path(obj: object, dotted: str) -> object:
    for part in dotted.split("."):
        if not isinstance(obj, Mapping) or part not in obj:
            return _MISSING
        obj = obj[part]
    return obj


def _check(cond: Condition, actual: object) -> bool:
    if actual is _MISSING or actual is None:
        return False
    if isinstance(actual, list | tuple | set | frozenset):
        items = list(actual)
        if cond.op == "=" and isinstance(cond.value, list):
            return items == cond.value
        if cond.op in ("=", "contains"):
            wanted = cond.value if isinstance(cond.value, tuple) else (cond.value,)
            return all(any(_equal(cond, item, w) for item in items) for w in wanted)
        if cond.op == "in":
            return any(_equal(cond, item, w) for item in items for w in cond.value)
        if cond.op == "like":
            return any(isinstance(item, str) and cond.value.match(item) for item in items)
        return any(_compare(cond, item) for item in items)
    if cond.op == "=":
        return _equal(cond, actual, cond.value)
    if cond.op == "in":
        return any(_equal(cond, actual, w) for w in cond.value)
    if cond.op == "contains":
        if isinstance(actual, str):
            wanted = cond.value if isinstance(cond.value, tuple) else (cond.value,)
            return all(isinstance(w, str) and w in actual for w in wanted)
        return False
    if cond.op == "like":
        return isinstance(actual, str) and bool(cond.value.match(actual))
    return _compare(cond, actual)


def _equal(cond: Condition, actual: object, wanted: object) -> bool:
    if cond.is_time:
        parsed = parse_time(actual)
        return parsed is not None and parsed == wanted
    if isinstance(actual, bool) or isinstance(wanted, bool):
        return actual is wanted
    return actual == wanted


def _compare(cond: Condition, actual: object) -> bool:
    left: Any
    right: Any = cond.value
    if cond.is_time:
        left = parse_time(actual)
        if left is None:
            return False
    elif isinstance(actual, bool) or isinstance(right, bool):
        return False
    elif isinstance(actual, int | float) and isinstance(right, int | float):
        left = actual
    elif isinstance(actual, str) and isinstance(right, str):
        left = actual
    elif isinstance(actual, str) and isinstance(right, int | float):
        try:
            left = float(actual)
        except ValueError:
            return False
    else:
        return False
    if cond.op == "gt":
        return bool(left > right)
    if cond.op == "gte":
        return bool(left >= right)
    if cond.op == "lt":
        return bool(left < right)
    return bool(left <= right)


def referenced_fields(flt: Filter | None) -> Sequence[str]:
    """Field names a filter reads (for logging and for choosing candidate pool sizes)."""
    if flt is None:
        return ()
    if isinstance(flt, Condition):
        return (flt.field,)
    return tuple(name for part in flt.parts for name in referenced_fields(part))
