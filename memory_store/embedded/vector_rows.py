"""The embedded vector store's rows: its SQLite schema, staged in-memory changes and float32 conversion."""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from schemas.codec import float32_blob

__all__ = ["F32", "SCHEMA", "Change", "Drop", "Put", "Status", "as_float32"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS vector_items (
    memory_id TEXT PRIMARY KEY, cube_id TEXT NOT NULL, memory_type TEXT NOT NULL, status TEXT NOT NULL,
    embedding BLOB);
CREATE INDEX IF NOT EXISTS vector_items_cube ON vector_items (cube_id);
"""

F32 = npt.NDArray[np.float32]


@dataclass(slots=True)
class Put:
    """Staged change: memory ``memory_id`` now has this vector (None: no vector) in ``cube_id``."""

    memory_id: str
    cube_id: str
    vector: F32 | None
    memory_type: str
    active: bool


@dataclass(frozen=True, slots=True)
class Status:
    memory_id: str
    cube_id: str
    active: bool


@dataclass(frozen=True, slots=True)
class Drop:
    cube_id: str


Change = Put | Status | Drop


@functools.lru_cache(maxsize=16)
def _floats(n: int) -> struct.Struct:
    return struct.Struct(f"<{n}f")


def as_float32(values: Sequence[float]) -> F32:
    """float32 array of ``values`` (struct is several times faster than numpy on a tuple of floats)."""
    blob = float32_blob(values)
    if blob is not None:  # decoded from float32 bytes: no conversion
        return np.frombuffer(blob, dtype="<f4")
    try:
        return np.frombuffer(_floats(len(values)).pack(*values), dtype="<f4")
    except (OverflowError, struct.error):
        return np.asarray(values, dtype=np.float32)
