"""The KV cache store port: warm prefix caches keyed by (model id, prefix hash) under one byte budget.

The warmer's keeper (``streams.kv.keeper``) and the runtime depend on :class:`KVCacheStore` only; the
adapter today is :class:`memory_store.kv.store.LocalKVCacheStore` (in-process LRU). The contract every
adapter meets is ``tests/contract/kv_store_contract.py``. This module imports no tensor library.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = ["CacheKey", "Eviction", "EvictionReason", "KVCacheStore", "WarmCache"]

logger = logging.getLogger(__name__)

EvictionReason = Literal["budget", "stale", "forgotten", "deleted"]
"""Why a cache left the store: over the byte budget (least recently used first), replaced by a newer
composition of the same cube and model, its cube forgotten, or dropped by key."""


@dataclass(frozen=True, slots=True, order=True)
class CacheKey:
    """Identity of a warm cache: the model it belongs to and the hash of its ordered prefix texts."""

    model_id: str
    prefix_hash: str

    def __str__(self) -> str:
        return f"{self.model_id}|{self.prefix_hash}"


@dataclass(slots=True)
class WarmCache:
    """A prefix cache ready for generation, with what it was built from.

    ``cache`` must never be handed to a model directly: use ``memory_store.kv.cache.shallow_copy`` (or
    ``generate_with_cache``, which does) so the stored tensors stay unchanged.
    """

    key: CacheKey
    cache: Any
    prefix_ids: tuple[int, ...]
    memory_ids: tuple[str, ...] = ()
    prefix_text: str = ""
    build_ms: float = 0.0
    cube_ids: set[str] = field(default_factory=set)
    bytes: int = 0

    @property
    def tokens(self) -> int:
        """Prefix length in tokens."""
        return len(self.prefix_ids)


@dataclass(frozen=True, slots=True)
class Eviction:
    """A cache left the store for a cube; publish it as ``KVCacheEvicted``."""

    cube_id: str
    cache_key: str
    reason: EvictionReason
    bytes: int = 0


@runtime_checkable
class KVCacheStore(Protocol):
    """Warm caches shared by every cube under one byte budget; every call is safe from any thread.

    Each (cube, model) has at most one current cache; identical compositions (same key) are stored once
    and shared by the cubes that put them. Every removal is returned as :class:`Eviction` records (one
    per cube that lost the cache; the bytes freed are on the first) for the caller to publish.
    """

    max_bytes: int
    """The byte budget."""

    @property
    def used_bytes(self) -> int:
        """Bytes held by all stored caches (never above ``max_bytes``)."""
        ...

    def __len__(self) -> int:
        """Number of stored caches."""
        ...

    def __contains__(self, key: object) -> bool:
        """Whether a cache is stored under ``key``."""
        ...

    def keys(self) -> list[CacheKey]:
        """Keys from least to most recently used."""
        ...

    def put(self, entry: WarmCache, *, cube_id: str) -> list[Eviction]:
        """Store ``entry`` as the cube's current cache for its model; return what was evicted (the cube's
        previous cache as ``stale``, least recently used ones as ``budget``). A key already stored is kept,
        not replaced. StoreError when the cache alone exceeds the budget; ValidationFailed for a bad entry."""
        ...

    def get(self, key: CacheKey) -> WarmCache | None:
        """The cache stored under ``key`` (marked most recently used), or None."""
        ...

    def current(self, cube_id: str, model_id: str) -> WarmCache | None:
        """The cube's current cache for the model (marked used), or None."""
        ...

    def drop(self, key: CacheKey, *, reason: EvictionReason = "deleted") -> list[Eviction]:
        """Remove a cache for every cube that uses it; an unknown key gives []."""
        ...

    def drop_cube(self, cube_id: str, *, reason: EvictionReason = "forgotten") -> list[Eviction]:
        """Release every cache of a cube; caches no other cube uses are removed."""
        ...

    def dump(self, directory: str | Path) -> Path:
        """Write every cache and the index (no pickle) to ``directory``; return the index path."""
        ...

    def load(self, directory: str | Path, *, device: str = "cpu") -> list[Eviction]:
        """Add the caches dumped in ``directory`` in their LRU order onto ``device``; return the budget
        evictions. StoreError when the dump is missing or unreadable."""
        ...
