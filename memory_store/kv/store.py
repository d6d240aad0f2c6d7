"""In-process, byte-budgeted LRU store of warm KV caches keyed by (model id, prefix hash), shared by all cubes.

One store serves every cube of a process (or GPU worker), so the byte budget is shared: putting a cache
evicts the least recently used ones until the total fits, and every eviction is returned as an
:class:`Eviction` for the caller to publish as ``KVCacheEvicted``. Each (cube, model) has at most one
current cache: warming a new composition for a cube evicts its previous one as ``stale``. Identical
compositions (same model, same ordered texts) share one entry, so warming twice is a no-op.

``dump``/``load`` write safetensors plus a JSON index (never pickle). Thread-safe.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from safetensors import SafetensorError

from memory_store.kv.base import CacheKey, Eviction, EvictionReason, KVCacheStore, WarmCache
from memory_store.kv.cache import cache_bytes, load_caches, save_caches
from schemas.errors import ConfigError, StoreError, ValidationFailed

__all__ = ["CacheKey", "EvictionReason", "Eviction", "KVCacheStore", "LocalKVCacheStore", "WarmCache"]

logger = logging.getLogger(__name__)

_INDEX = "kv_store.json"
_TENSORS = "kv_store.safetensors"


class LocalKVCacheStore:
    """LRU of :class:`WarmCache` under one byte budget (``max_bytes``), shared across cubes."""

    def __init__(self, max_bytes: int = 2 * 1024**3) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ConfigError(f"KV cache store max_bytes (kv.budget_bytes) must be a positive integer, "
                              f"not {max_bytes!r}")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[CacheKey, WarmCache] = OrderedDict()
        self._current: dict[tuple[str, str], CacheKey] = {}
        self._used = 0
        self._lock = threading.RLock()

    @property
    def used_bytes(self) -> int:
        """Bytes held by all stored caches."""
        return self._used

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def keys(self) -> list[CacheKey]:
        """Keys from least to most recently used."""
        with self._lock:
            return list(self._entries)

    def put(self, entry: WarmCache, *, cube_id: str) -> list[Eviction]:
        """Store ``entry`` as the current cache of (``cube_id``, its model); return what was evicted.

        Idempotent: an entry whose key is already stored is not replaced (the stored one is kept and
        marked used). The cube's previous cache for that model is evicted as ``stale`` once no cube
        uses it; least recently used caches are evicted as ``budget`` until the total fits.
        Raises StoreError when the cache alone is larger than the whole budget.
        """
        size = _checked_size(entry, cube_id)
        if size > self.max_bytes:
            raise StoreError(
                f"cache {str(entry.key)!r} of {size} bytes exceeds the store budget of {self.max_bytes}"
            )
        with self._lock:
            evicted: list[Eviction] = []
            previous = self._current.get((cube_id, entry.key.model_id))
            if previous is not None and previous != entry.key:
                evicted += self._release(previous, cube_id, "stale")
            stored = self._entries.get(entry.key)
            if stored is None:
                entry.bytes = size
                entry.cube_ids = set()
                self._entries[entry.key] = entry
                self._used += size
                stored = entry
            stored.cube_ids.add(cube_id)
            self._entries.move_to_end(entry.key)
            self._current[(cube_id, entry.key.model_id)] = entry.key
            while self._used > self.max_bytes:
                victim = next(iter(self._entries))
                evicted += self._remove(victim, "budget")
        for ev in evicted:
            logger.info(
                "kv_cache_evicted cube=%s key=%s reason=%s bytes=%d",
                ev.cube_id,
                ev.cache_key,
                ev.reason,
                ev.bytes,
            )
        return evicted

    def get(self, key: CacheKey) -> WarmCache | None:
        """The stored cache for ``key`` (marked most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def current(self, cube_id: str, model_id: str) -> WarmCache | None:
        """The cube's current cache for that model (marked used), or None."""
        with self._lock:
            key = self._current.get((cube_id, model_id))
            return self.get(key) if key is not None else None

    def drop(self, key: CacheKey, *, reason: EvictionReason = "deleted") -> list[Eviction]:
        """Remove a cache for every cube that uses it. Unknown keys give an empty list."""
        with self._lock:
            return self._remove(key, reason) if key in self._entries else []

    def drop_cube(self, cube_id: str, *, reason: EvictionReason = "forgotten") -> list[Eviction]:
        """Release every cache of a cube; caches no other cube uses are removed."""
        with self._lock:
            evicted: list[Eviction] = []
            for cube, model in [k for k in self._current if k[0] == cube_id]:
                evicted += self._release(self._current[(cube, model)], cube_id, reason)
            return evicted

    def _release(self, key: CacheKey, cube_id: str, reason: EvictionReason) -> list[Eviction]:
        entry = self._entries.get(key)
        self._current.pop((cube_id, key.model_id), None)
        if entry is None:
            return []
        entry.cube_ids.discard(cube_id)
        if entry.cube_ids:
            return [Eviction(cube_id, str(key), reason, 0)]
        return self._remove(key, reason, cubes=[cube_id])

    def _remove(
        self, key: CacheKey, reason: EvictionReason, *, cubes: Iterable[str] | None = None
    ) -> list[Eviction]:
        entry = self._entries.pop(key)
        self._used -= entry.bytes
        owners = sorted(cubes if cubes is not None else entry.cube_ids) or [""]
        for cube in entry.cube_ids:
            if self._current.get((cube, key.model_id)) == key:
                del self._current[(cube, key.model_id)]
        return [
            Eviction(cube, str(key), reason, entry.bytes if i == 0 else 0) for i, cube in enumerate(owners)
        ]

    def dump(self, directory: str | Path) -> Path:
        """Write every cache (safetensors) and the index (JSON) to ``directory``; return the index path."""
        target = Path(directory)
        with self._lock:
            entries = list(self._entries.values())
            names = {f"c{i}": e for i, e in enumerate(entries)}
            layout = save_caches(target / _TENSORS, {n: e.cache for n, e in names.items()})
            index = {
                "version": 1,
                "max_bytes": self.max_bytes,
                "entries": [
                    {
                        "name": n,
                        "model_id": e.key.model_id,
                        "prefix_hash": e.key.prefix_hash,
                        "prefix_ids": list(e.prefix_ids),
                        "memory_ids": list(e.memory_ids),
                        "prefix_text": e.prefix_text,
                        "build_ms": e.build_ms,
                        "cube_ids": sorted(e.cube_ids),
                        "current_for": sorted(c for (c, m), k in self._current.items() if k == e.key),
                        "layout": layout[n],
                    }
                    for n, e in names.items()
                ],
            }
        path = target / _INDEX
        path.write_text(json.dumps(index, indent=1), encoding="utf-8")
        return path

    def load(self, directory: str | Path, *, device: str = "cpu") -> list[Eviction]:
        """Add the caches dumped in ``directory`` (in their LRU order); return budget evictions.

        Raises StoreError when the index is missing or unreadable.
        """
        source = Path(directory)
        try:
            index = json.loads((source / _INDEX).read_text(encoding="utf-8"))
            layouts = {e["name"]: e["layout"] for e in index["entries"]}
            caches = load_caches(source / _TENSORS, layouts, device=device) if layouts else {}
            loaded = [
                (cube, WarmCache(
                    key=CacheKey(str(e["model_id"]), str(e["prefix_hash"])),
                    cache=caches[e["name"]],
                    prefix_ids=tuple(int(i) for i in e["prefix_ids"]),
                    memory_ids=tuple(str(m) for m in e["memory_ids"]),
                    prefix_text=str(e["prefix_text"]),
                    build_ms=float(e["build_ms"]),
                ))
                for e in index["entries"]
                for cube in e["current_for"] or [""]
            ]
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
            raise StoreError(f"cannot load KV caches from {str(source)!r}: {exc!r}") from exc
        evicted: list[Eviction] = []
        for cube, entry in loaded:
            evicted += self.put(entry, cube_id=cube)
        return evicted


def _checked_size(entry: object, cube_id: object) -> int:
    """The bytes of a well-formed entry; ValidationFailed naming what is wrong otherwise."""
    if not isinstance(entry, WarmCache):
        raise ValidationFailed(f"a KV cache store holds WarmCache entries, not {type(entry).__name__}",
                               field="entry")
    if not isinstance(cube_id, str):
        raise ValidationFailed(f"cube_id must be a string, not {type(cube_id).__name__}", field="cube_id")
    if not isinstance(entry.key, CacheKey) or not entry.key.model_id or not entry.key.prefix_hash:
        raise ValidationFailed(f"entry key must be a CacheKey with a model id and a prefix hash, not "
                               f"{entry.key!r}", field="entry.key")
    if entry.bytes:
        return entry.bytes
    try:
        return cache_bytes(entry.cache)
    except TypeError as exc:
        raise ValidationFailed(f"entry.cache is not a KV cache: {exc}", field="entry.cache") from None
