"""The one memory-type-to-bucket mapping (text_mem, pref_mem, tool_mem, skill_mem) of every response."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Final

from processors.retrieval import BUCKET_TYPES

__all__ = [
    "BUCKET_KEYS",
    "PREFERENCE_TYPES",
    "SKILL_TYPES",
    "TEXT_TYPES",
    "TOOL_TYPES",
    "bucket_of",
    "bucketed",
    "types_for",
]

logger = logging.getLogger(__name__)

TEXT_TYPES: Final[tuple[str, ...]] = tuple(BUCKET_TYPES["text"])
PREFERENCE_TYPES: Final[tuple[str, ...]] = tuple(BUCKET_TYPES["pref"])
TOOL_TYPES: Final[tuple[str, ...]] = tuple(BUCKET_TYPES["tool"])
SKILL_TYPES: Final[tuple[str, ...]] = tuple(BUCKET_TYPES["skill"])

BUCKET_KEYS: Final[dict[str, str]] = {"text": "text_mem", "pref": "pref_mem", "tool": "tool_mem", "skill": "skill_mem"}
"""Response key of each bucket (MemOS's names)."""

_KEY_OF_TYPE: Final[dict[str, str]] = {t: BUCKET_KEYS[b] for b, types in BUCKET_TYPES.items() for t in types}


def bucket_of(memory_type: str) -> str:
    """The response key a memory type belongs to; unknown types are text memories."""
    return _KEY_OF_TYPE.get(memory_type, "text_mem")


def types_for(*, text: bool = True, preference: bool = False, tool: bool = False, skill: bool = False
              ) -> list[str]:
    """The memory types of the buckets asked for."""
    chosen = (("text", text), ("pref", preference), ("tool", tool), ("skill", skill))
    return [t for bucket, wanted in chosen if wanted for t in BUCKET_TYPES[bucket]]  # type: ignore[index]


def bucketed(cube_id: str, views: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Memory views of one cube grouped by bucket, in MemOS's shape ``{key: [{cube_id, memories, total_nodes}]}``."""
    groups: dict[str, list[Any]] = {key: [] for key in BUCKET_KEYS.values()}
    for view in views:
        groups[bucket_of(str(view["metadata"]["memory_type"]))].append(view)
    return {key: [{"cube_id": cube_id, "memories": items, "total_nodes": len(items)}]
            for key, items in groups.items()}
