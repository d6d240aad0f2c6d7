"""How a memory is shown to callers: MemOS's item shape (id, memory, metadata; embedding stripped)."""

from __future__ import annotations

import logging
from typing import Any

from schemas.memory import MemoryRecord

__all__ = ["memory_view"]

logger = logging.getLogger(__name__)


def memory_view(record: MemoryRecord) -> dict[str, Any]:
    """A memory in MemOS's item shape: id, memory and metadata (embedding stripped)."""
    metadata = {
        "user_id": record.user_id,
        "session_id": record.session_id,
        "status": record.status,
        "type": record.metadata.get("type", "fact"),
        "key": record.key,
        "tags": list(record.tags),
        "background": record.background,
        "memory_type": record.memory_type,
        "sources": [s.model_dump(exclude_none=True) for s in record.sources],
        "confidence": record.confidence,
        "extractor": record.extractor,
        "embedding_model": record.embedding_model,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "valid_from": record.valid_from.isoformat() if record.valid_from else None,
        "valid_to": record.valid_to.isoformat() if record.valid_to else None,
        "revision": record.revision,
        "successor_ids": list(record.successor_ids),
        "cube_id": record.cube_id,
        "id": record.id,
        "embedding": [],
        **{k: v for k, v in record.metadata.items() if k not in {"embedding"}},
    }
    return {"id": record.id, "memory": record.memory, "metadata": metadata}
