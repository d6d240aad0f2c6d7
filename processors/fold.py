"""Revisions folded into the upserts they follow: a replay's batch writes a revised memory once, not twice."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schemas.memory import MemoryRecord, capped_sources, source_value
from schemas.ops import AnyOp, RetireMemory, ReviseMemory, UpsertMemory, UpsertRelation

__all__ = ["fold_revisions", "revised"]


def revised(record: MemoryRecord, op: ReviseMemory) -> MemoryRecord:
    """``record`` as a store holds it after applying ``op`` to it (``ReviseMemory``'s contract).

    The text is replaced when the revision has one, the tags when it has some, and the embedding (with
    its model) when it has one; metadata is merged (the revision's keys win); the revision's sources are
    appended unless already held, then capped (``capped_sources``); revision and ``updated_at`` are the
    revision's. Everything else (status, creation, provenance) stays.
    """
    sources = list(record.sources)
    held = [source_value(s) for s in sources]
    for source in op.sources:
        value = source_value(source)
        if value not in held:
            held.append(value)
            sources.append(source)
    update: dict[str, Any] = {
        "memory": op.memory or record.memory,
        "tags": tuple(op.tags) if op.tags else record.tags,
        "metadata": {**record.metadata, **op.metadata},
        "sources": tuple(capped_sources(sources)),
        "revision": op.revision,
        "updated_at": op.updated_at,
    }
    if op.embedding:
        update["embedding"] = op.embedding
        update["embedding_model"] = op.embedding_model or record.embedding_model
    return record.model_copy(update=update)


def fold_revisions(ops: Sequence[AnyOp], retired: set[str]) -> list[AnyOp]:
    """``ops`` with each revision of a memory upserted earlier in ``ops`` merged into that upsert.

    Applied in order, the result leaves a store that revises by ``revised``'s contract (the embedded
    ones: ``Projection.folds_revisions``) in the state ``ops`` leave it in, with one write per memory
    where ``ops`` had several: a replay's batch holds most memories' revisions beside their upserts.
    A revision folds only into an upsert of the same memory and cube with no other op on that memory
    in between, and never into the upsert of a memory retired before (``retired``: ids retired so far in
    this replay, updated here), which a store lands retired and then revises as such. Relations touch
    no memory and pass; any other op (a DropCube) is a barrier.
    """
    out: list[AnyOp] = []
    open_upserts: dict[str, int] = {}  # memory id -> index in ``out`` of the upsert later revisions fold into
    for op in ops:
        kind = type(op)
        if kind is UpsertMemory:
            memory_id = op.memory.id  # type: ignore[union-attr]
            if memory_id in retired:
                open_upserts.pop(memory_id, None)
            else:
                open_upserts[memory_id] = len(out)
        elif kind is ReviseMemory:
            at = open_upserts.get(op.memory_id)  # type: ignore[union-attr]
            if at is not None:
                upsert = out[at]
                assert isinstance(upsert, UpsertMemory) and isinstance(op, ReviseMemory)
                if upsert.memory.cube_id == op.cube_id:
                    out[at] = UpsertMemory(memory=revised(upsert.memory, op))
                    continue
                del open_upserts[op.memory_id]
        elif kind is RetireMemory:
            retired.add(op.memory_id)  # type: ignore[union-attr]
            open_upserts.pop(op.memory_id, None)  # type: ignore[union-attr]
        elif kind is not UpsertRelation:
            open_upserts.clear()
        out.append(op)
    return out
