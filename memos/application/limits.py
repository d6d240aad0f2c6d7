"""Bounds at the door: sizes, counts, query length, text well-formedness and the derivation backlog."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from pydantic import ConfigDict

from memos.application.ids import check_list
from processors.reader import names_a_reference
from schemas.errors import PayloadTooLarge, ValidationFailed
from streams.settings import DoorSettings

__all__ = [
    "MAX_ADD_RECORD_BYTES",
    "MAX_MEMORY_IDS",
    "MAX_MEMORY_ID_CHARS",
    "MAX_MESSAGE_FIELD_CHARS",
    "MAX_MESSAGES",
    "MAX_PAGE",
    "MAX_QUERY_CHARS",
    "MAX_TAGS",
    "MAX_TAGS_TOTAL_CHARS",
    "MAX_TAG_CHARS",
    "MAX_TASK_ID_CHARS",
    "MAX_TOP_K",
    "DoorLimits",
    "check_add_size",
    "check_count",
    "check_memory_id",
    "check_memory_ids",
    "check_message_fields",
    "named_ids",
    "check_query",
    "check_strings",
    "check_tags",
    "check_text",
]

logger = logging.getLogger(__name__)

MAX_TOP_K: Final = 1000
"""Largest ``top_k`` (and ``pref_top_k``, ``tool_mem_top_k``, ``skill_mem_top_k``, page sizes)."""
MAX_PAGE: Final = 1_000_000
"""Highest page number a paged read accepts (an offset past it would overflow the stores' integers)."""
MAX_QUERY_CHARS: Final = 8192
"""Longest search or chat query, in characters."""
MAX_MESSAGES: Final = 10_000
"""Most messages in one add."""
MAX_MEMORY_IDS: Final = 10_000
"""Most memory ids in one get or delete."""
MAX_MEMORY_ID_CHARS: Final = 256
"""Longest memory (or file) id a request may name."""
MAX_TAGS: Final = 64
"""Most ``custom_tags`` of one add (every memory derived from the add carries them all)."""
MAX_TAG_CHARS: Final = 256
"""Longest custom tag, in characters."""
MAX_TAGS_TOTAL_CHARS: Final = 1024
"""Most characters of an add's ``custom_tags`` together."""
MAX_TASK_ID_CHARS: Final = 256
"""Longest caller task id."""
MAX_MESSAGE_FIELD_CHARS: Final = 256
"""Longest label in a message: its ``MESSAGE_FIELDS``, wherever they occur in it."""
MESSAGE_FIELDS: Final = frozenset(
    {"role", "type", "chat_time", "name", "role_name", "role_id", "message_id", "filename", "file_id", "id",
     "tool_call_id", "format", "detail"}
)
"""Labels of a message and of its parts that derived memories repeat, a window on each of its lines and a file on
each of its chunks: a role or part type (no valid one comes near), a file's name and id, a tool call's id and
function name, an audio part's format, an image's detail."""
MAX_LINK_CHARS: Final = 8192
"""Longest URL (other than a ``data:`` URL, which is content) or local path a message part names."""
LINK_FIELDS: Final = frozenset({"url", "image_url", "file_data"})
"""Where a part names a file or image by URL or path (``file_data`` may also be the content itself)."""
MAX_ADD_RECORD_BYTES: Final[int] = DoorSettings.model_fields["max_add_record_bytes"].default
"""Largest add, per cube, as the encoded log record: the log's record limit (Kafka's default 1 MiB).

HTTP bodies are refused earlier above ``server.max_body_bytes``; the in-process API, HTTP and MCP all
refuse an add whose record is over this limit with PayloadTooLarge (HTTP 413) before anything is written."""


class DoorLimits(DoorSettings):
    """Limits of the application layer that a deployment may tune: the ``door`` settings section (each limit,
    its default and its bounds are defined there, once), frozen, with what they resolve to here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @property
    def active_searches(self) -> int:
        """``max_active_searches`` resolved (0: no limit)."""
        if self.max_active_searches is None:
            return max(1, (os.cpu_count() or 1) // 2)
        return self.max_active_searches


def check_text(value: str, field: str) -> None:
    """ValidationFailed naming ``field`` for NUL characters and lone UTF-16 surrogates."""
    if "\x00" in value:
        raise ValidationFailed(f"{field} contains a NUL character", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationFailed(
            f"{field} contains a lone UTF-16 surrogate (U+{ord(value[exc.start]):04X}) at character {exc.start}",
            field=field,
        ) from None


def check_strings(value: Any, field: str, visit: Callable[[object, object, str], None] | None = None) -> None:
    """``check_text`` on every string (keys too) of a JSON-like structure; the field names the path.
    ``visit(key, item, path)``, if given, sees every mapping entry in the same walk, before its item is walked."""
    if isinstance(value, str):
        check_text(value, field)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str):
                check_text(key, f"{field}.{key!r}" if key else field)
            if visit is not None:
                visit(key, item, f"{field}.{key}")
            check_strings(item, f"{field}.{key}", visit)
    elif isinstance(value, list | tuple):
        for n, item in enumerate(value):
            check_strings(item, f"{field}.{n}", visit)


def check_tags(tags: Sequence[str], field: str = "custom_tags") -> None:
    """At most ``MAX_TAGS`` tags of at most ``MAX_TAG_CHARS`` characters each and ``MAX_TAGS_TOTAL_CHARS`` in all:
    an add's tags are copied into every memory derived from it (200 tags of 1 KB made one add write 170 times its
    size; 1,046 made a derived memory over the log's record limit; 64 of 256 characters on an add of 1,500 turns
    wrote 15.7 times its size to the memories topic, against 3.4 without tags)."""
    if len(tags) > MAX_TAGS:
        raise ValidationFailed(f"{field} has {len(tags)} tags; the limit is {MAX_TAGS}", field=field)
    for n, tag in enumerate(tags):
        if len(tag) > MAX_TAG_CHARS:
            raise ValidationFailed(f"{field}.{n} is {len(tag)} characters long; the limit is {MAX_TAG_CHARS}",
                                   field=f"{field}.{n}")
    if (total := sum(len(tag) for tag in tags)) > MAX_TAGS_TOTAL_CHARS:
        raise ValidationFailed(f"{field} hold {total} characters in all; the limit is {MAX_TAGS_TOTAL_CHARS}",
                               field=field)


def check_message_fields(messages: object, field: str = "messages") -> None:
    """``check_strings`` on the messages and, in the same walk, every ``MESSAGE_FIELDS`` label in them (their parts
    and tool calls too) of at most ``MAX_MESSAGE_FIELD_CHARS`` characters. Derived memories repeat them: ten
    messages with a 60 KB chat time derived a memory twice the add's size (over the log's record limit:
    dead-lettered, nothing kept), and a file with a 20 KB name stored 9 times the add's size, its name in each of
    its 65 chunks. URLs and paths a part names (``LINK_FIELDS``), at most ``MAX_LINK_CHARS``: a 100 KB image URL
    stored 5.7 times the add's size."""
    check_strings(messages, field, _check_message_field)


def _check_message_field(key: object, value: object, where: str) -> None:
    """The bounds of one entry of a message (or of a part or tool call in it): labels and links."""
    if not isinstance(value, str):
        return
    if key in MESSAGE_FIELDS and len(value) > MAX_MESSAGE_FIELD_CHARS:
        raise ValidationFailed(f"{where} is {len(value)} characters long; the limit is {MAX_MESSAGE_FIELD_CHARS}",
                               field=where)
    if (key in LINK_FIELDS and len(value) > MAX_LINK_CHARS
            and names_a_reference(value, "file" if key == "file_data" else "image")):
        raise ValidationFailed(f"{where} names a link of {len(value)} characters; the limit is {MAX_LINK_CHARS}",
                               field=where)


def check_query(query: object, field: str = "query") -> str:
    """A non-empty, bounded, well-formed query."""
    if not isinstance(query, str) or not query.strip():
        raise ValidationFailed(f"{field} must not be empty", field=field)
    if len(query) > MAX_QUERY_CHARS:
        raise ValidationFailed(
            f"{field} is {len(query)} characters long; the limit is {MAX_QUERY_CHARS}", field=field
        )
    check_text(query, field)
    return query


def check_count(value: int | None, field: str, *, low: int = 0, high: int = MAX_TOP_K) -> None:
    """ValidationFailed naming ``field`` when an integer parameter is outside [low, high]."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationFailed(f"{field} must be an integer from {low} to {high}, not {value!r}", field=field)


def check_memory_ids(values: Any, field: str) -> list[str]:
    """Memory (or file) ids a request names: a list of at most ``MAX_MEMORY_IDS`` strings of 1 to
    ``MAX_MEMORY_ID_CHARS`` characters without NUL or lone surrogates, duplicates dropped, order kept;
    ValidationFailed naming the field (``field.N`` for one id) otherwise."""
    return check_list(values, field, limit=MAX_MEMORY_IDS, check=check_memory_id)


def check_memory_id(value: Any, field: str) -> str:
    """One memory (or file) id: a string of 1 to ``MAX_MEMORY_ID_CHARS`` characters without NUL or lone
    surrogates; ValidationFailed naming ``field`` otherwise."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_MEMORY_ID_CHARS:
        raise ValidationFailed(f"an id is a string of 1 to {MAX_MEMORY_ID_CHARS} characters", field=field)
    check_text(value, field)
    return value


def named_ids(ids: Sequence[str], shown: int = 5) -> str:
    """Ids for an error message: the first ``shown`` (each cut to 64 characters) and how many more."""
    parts = [repr(i if len(i) <= 64 else i[:64] + "...") for i in ids[:shown]]
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return f"[{', '.join(parts)}]{more}"


def check_add_size(size: int, limit: int, cube_id: str) -> None:
    """PayloadTooLarge naming the limit when one cube's add record is over it."""
    if size > limit:
        raise PayloadTooLarge(
            f"the add for cube {cube_id!r} is {size} bytes once recorded; the limit is {limit} bytes "
            "per add (split the messages over several adds)",
            field="messages",
        )
