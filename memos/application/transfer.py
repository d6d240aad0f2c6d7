"""Import of memory drafts into a cube: id re-keying, embeddings reused or computed, MemoryAdded events."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from memos.application.ports import Platform
from schemas.errors import ValidationFailed
from schemas.events import MemoryAdded, derive_id

__all__ = ["import_events"]

logger = logging.getLogger(__name__)


async def import_events(rt: Platform, event_base: Callable[[str, str], dict[str, Any]], user_id: str,
                        cube_id: str, drafts: Sequence[dict[str, Any]], *, producer: str) -> list[MemoryAdded]:
    """The MemoryAdded events that import ``drafts`` (see ``MemoryService.import_memories``)."""
    unique = {str(d["memory_id"]): d for d in drafts if str(d.get("memory") or "").strip()}
    rekeyed = {i: str(derive_id(f"import:{cube_id}", i)) for i in unique}
    owner = {r.id: r.cube_id for r in await rt.graph.get([*unique, *rekeyed.values()])} if unique else {}
    fresh = []
    for i, d in unique.items():
        new_id = i if owner.get(i, cube_id) == cube_id else rekeyed[i]
        if owner.get(new_id) != cube_id:
            fresh.append({**d, "memory_id": new_id})
    model_id = getattr(rt.embedder, "model_id", "")
    stale = [n for n, d in enumerate(fresh) if not d.get("embedding") or d.get("embedding_model") != model_id]
    if stale:
        embedded = await rt.embedder.embed([str(fresh[n]["memory"]) for n in stale], kind="passage")
        for n, vector in zip(stale, embedded.vectors, strict=True):
            fresh[n] = {**fresh[n], "embedding": vector, "embedding_model": embedded.model_id}
    try:
        return [MemoryAdded(**event_base(cube_id, producer), **{"user_id": user_id, **d, "cube_id": cube_id})
                for d in fresh]
    except ValidationError as exc:
        raise ValidationFailed(f"memories to import into cube {cube_id!r} are invalid: {exc}",
                               field="memories") from exc
