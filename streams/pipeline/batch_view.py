"""The batch view of write-time dedup: memories of earlier events of one batch, not yet in any store."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from schemas.events import MemoryAdded
from schemas.memory import MemoryRecord

__all__ = ["add_batch_view"]

logger = logging.getLogger(__name__)


def add_batch_view(
    views: dict[str, list[tuple[MemoryRecord, float]]],
    added: Sequence[MemoryAdded],
    earlier: Sequence[MemoryAdded],
    k: int,
) -> None:
    """Add memories of earlier events of the same batch (not yet in any store) to each candidate's view."""
    same_cube = [m for m in earlier if added and m.cube_id == added[0].cube_id and m.embedding]
    if not same_cube or not added:
        return
    dims = {len(m.embedding) for m in (*same_cube, *added)}
    if len(dims) != 1:
        return
    known = np.asarray([m.embedding for m in same_cube], dtype=np.float32)
    known /= np.maximum(np.linalg.norm(known, axis=1, keepdims=True), 1e-12)
    fresh = np.asarray([m.embedding for m in added], dtype=np.float32)
    fresh /= np.maximum(np.linalg.norm(fresh, axis=1, keepdims=True), 1e-12)
    sims = fresh @ known.T
    records: dict[int, MemoryRecord] = {}  # each earlier memory made a record once, however many views hold it
    for row, candidate in enumerate(added):
        extra = [(records.get(j) or records.setdefault(j, _record(same_cube[j])), float(sims[row, j]))
                 for j in np.argsort(-sims[row])[:k].tolist()]  # fmt: skip
        views[candidate.memory_id] = sorted([*views[candidate.memory_id], *extra], key=lambda p: -p[1])[:k]


def _record(m: MemoryAdded) -> MemoryRecord:
    return MemoryRecord(
        id=m.memory_id,
        cube_id=m.cube_id,
        user_id=m.user_id,
        session_id=m.session_id,
        memory=m.memory,
        memory_type=m.memory_type,
        key=m.title,
        tags=tuple(m.tags),
        sources=tuple(m.sources),
        metadata=m.metadata,
        embedding=tuple(m.embedding),
        embedding_model=m.embedding_model,
        extractor=m.extractor,
        origin_event_id=str(m.origin_event_id) if m.origin_event_id else None,
        created_at=m.occurred_at,
        updated_at=m.occurred_at,
        valid_from=m.valid_from,
    )
