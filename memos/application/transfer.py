"""Import of memory drafts into a cube: id re-keying, embeddings reused or computed, MemoryAdded events."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from memos.application.limits import check_memory_id
from memos.application.ports import Platform
from schemas.errors import ValidationFailed
from schemas.events import MemoryAdded, derive_id
from schemas.text import times_in_words

__all__ = ["import_events"]

logger = logging.getLogger(__name__)


_ENVELOPE = frozenset({"event_id", "occurred_at", "key", "producer", "trace_id", "schema_version", "usage"})
"""Event fields an import sets itself: a draft naming one does not override them."""


async def import_events(rt: Platform, event_base: Callable[[str, str], dict[str, Any]], user_id: str,
                        cube_id: str, drafts: Sequence[dict[str, Any]], *, producer: str) -> list[MemoryAdded]:
    """The MemoryAdded events that import ``drafts`` (see ``MemoryService.import_memories``).

    Every draft is written by the importer (its ``user_id``) into ``cube_id``; an id another cube holds is
    re-keyed for this cube (``derive_id``), and where that id too is held elsewhere (planted by someone
    who predicted it) a fresh random one is used, so an import never moves another cube's memory. A
    draft's embedding is kept only when it comes from this runtime's model, has its dimension and is
    finite; otherwise the text is embedded again.
    """
    for n, draft in enumerate(drafts):  # ids as every other use case takes them (get and delete find them)
        if not isinstance(draft, dict) or "memory_id" not in draft:
            raise ValidationFailed("each memory to import is an object with a memory_id", field=f"memories.{n}")
        check_memory_id(str(draft["memory_id"]), f"memories.{n}.memory_id")
        confidence = draft.get("confidence", 1.0)
        if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0 <= confidence <= 1:
            raise ValidationFailed(f"confidence must be a number from 0 to 1, not {confidence!r:.40}",
                                   field=f"memories.{n}.confidence")  # NaN fails the range too
    unique = {str(d["memory_id"]): d for d in drafts if str(d.get("memory") or "").strip()}
    rekeyed = {i: str(derive_id(f"import:{cube_id}", i)) for i in unique}
    owner = {r.id: r.cube_id for r in await rt.graph.get([*unique, *rekeyed.values()])} if unique else {}
    fresh = []
    for i, d in unique.items():
        new_id = i if owner.get(i, cube_id) == cube_id else rekeyed[i]
        if owner.get(new_id, cube_id) != cube_id:
            new_id = str(uuid.uuid4())  # the re-keyed id is another cube's: never take it over
        if owner.get(new_id) != cube_id:
            draft = {k: v for k, v in d.items() if k not in _ENVELOPE}
            fresh.append({**draft, "memory_id": new_id, "user_id": user_id, "cube_id": cube_id})
    model_id = getattr(rt.embedder, "model_id", "")
    dimension = getattr(rt.embedder, "dimension", 0)
    stale = [n for n, d in enumerate(fresh) if not _reusable(d, model_id, dimension)]
    if stale:
        texts = [times_in_words(str(fresh[n]["memory"])) for n in stale]
        embedded = await rt.embedder.embed(texts, kind="passage")
        for n, vector in zip(stale, embedded.vectors, strict=True):
            fresh[n] = {**fresh[n], "embedding": vector, "embedding_model": embedded.model_id}
    try:
        return [MemoryAdded(**{**d, **event_base(cube_id, producer)}) for d in fresh]
    except (ValidationError, TypeError) as exc:
        raise ValidationFailed(f"memories to import into cube {cube_id!r} are invalid: {exc}",
                               field="memories") from exc


def _reusable(draft: dict[str, Any], model_id: str, dimension: int) -> bool:
    """Whether a draft's embedding can stand for its text here: this model's, this dimension, all finite."""
    vector = draft.get("embedding")
    if not vector or draft.get("embedding_model") != model_id or not isinstance(vector, list | tuple):
        return False
    if dimension and len(vector) != dimension:
        return False
    return all(isinstance(x, int | float) and math.isfinite(x) for x in vector)
