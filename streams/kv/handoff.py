"""Warm KV caches on disk: the kv-warmer's per-cube dumps, and how another process finds and loads them.

Layout under ``$MEMOS_HOME/kv/`` (safetensors + JSON, never pickle)::

    <cube dir>/<prefix hash>/cache.safetensors   the cache tensors
    <cube dir>/<prefix hash>/manifest.json       cube, cache key, model, memory ids and texts, prefix ids,
                                                 layout; written last, so a folder without it is incomplete
    <cube dir>/warmer_state.json                 the warmer's scoring state (recent queries, retrievals)

``<cube dir>`` is the cube id, percent-encoded when it holds anything but letters, digits, ``-``, ``_``
and non-leading ``.``. ``<prefix hash>`` is the second half of the cache key ``"<model id>|<hash>"``.

**Handoff to a chat process.** A chat process in another process (or on another machine sharing
``$MEMOS_HOME``) follows ``memos.activation.v1``: the cache to use for a cube is the one named by the
cube's latest ``KVCacheWarmed`` unless a ``KVCacheEvicted`` of that cache key followed it
(:func:`latest_warmed`). :func:`load_warm_cache` loads that dump onto the chat model's device, and
:func:`load_latest_warm_cache` does both. The returned :class:`WarmHandle` gives the ordered memory texts
and a ``PrefixCache`` for ``HuggingFaceChatModel.generate_with_memories(handle.memory_text, messages,
prefix=handle.prefix_cache())``, which decodes exactly as putting the same memories in the prompt does.
A dump can vanish while it is read (its cache was evicted): loading then returns None.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from safetensors import SafetensorError

from memory_store.kv.cache import load_caches, save_caches
from memory_store.kv.store import CacheKey, WarmCache
from memory_store.llm.huggingface import PrefixCache
from processors.kv_warmer import compose_memory_text, prefix_hash
from schemas.codec import decode
from schemas.errors import EventDecodeError, StoreError
from schemas.events import KVCacheEvicted, KVCacheWarmed
from schemas.topics import ACTIVATION
from streams.log.base import EventLog, partition_for

__all__ = [
    "MANIFEST",
    "WarmHandle",
    "cache_dir",
    "cube_dir",
    "dump_warm_cache",
    "kv_root",
    "latest_warmed",
    "load_latest_warm_cache",
    "load_warm_cache",
    "parse_cache_key",
    "read_cube_state",
    "remove_dump",
    "write_cube_state",
]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_TENSORS = "cache.safetensors"
_STATE = "warmer_state.json"
_FORMAT = 1


@dataclass(frozen=True, slots=True)
class WarmHandle:
    """A cube's warm cache with the ordered memories it holds."""

    cube_id: str
    entry: WarmCache
    memory_ids: tuple[str, ...]
    texts: tuple[str, ...]

    @property
    def memory_text(self) -> str:
        """The composed memory text the cache was built from (``compose_memory_text(texts)``)."""
        return compose_memory_text(self.texts)

    def prefix_cache(self) -> PrefixCache:
        """The cache as ``generate_with_memories(prefix=...)`` takes it (shares the stored tensors)."""
        e = self.entry
        return PrefixCache(e.cache, e.prefix_ids, e.prefix_text, e.build_ms)


def kv_root(home: str | Path) -> Path:
    """``<home>/kv``: where warm caches are dumped."""
    return Path(home) / "kv"


def cube_dir(home: str | Path, cube_id: str) -> Path:
    """The folder of a cube's dumps (the cube id made safe as one path segment).

    Raises ValueError for an empty cube id.
    """
    if not cube_id:
        raise ValueError("cube id must not be empty")
    name = quote(cube_id, safe="-_.")
    if name.startswith("."):  # never '.', '..' or a hidden folder
        name = "%2E" + name[1:]
    return kv_root(home) / name


def parse_cache_key(cache_key: str) -> CacheKey:
    """``"<model id>|<prefix hash>"`` back to a CacheKey. Raises ValueError when malformed."""
    model_id, sep, digest = cache_key.rpartition("|")
    if not sep or not model_id or len(digest) != 64:
        raise ValueError(f"malformed cache key {cache_key!r}; expected '<model id>|<sha256 hex>'")
    return CacheKey(model_id, digest)


def cache_dir(home: str | Path, cube_id: str, cache_key: str | CacheKey) -> Path:
    """The folder of one dumped cache of a cube."""
    key = parse_cache_key(cache_key) if isinstance(cache_key, str) else cache_key
    return cube_dir(home, cube_id) / key.prefix_hash


def _write_json(path: Path, data: Any, *, indent: int | None = 1) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=indent), encoding="utf-8")
    tmp.replace(path)


def dump_warm_cache(
    home: str | Path,
    cube_id: str,
    entry: WarmCache,
    texts: Sequence[str],
    memory_ids: Sequence[str] | None = None,
) -> Path:
    """Write a cube's warm cache (tensors, then the manifest); return its folder. Overwrites itself.

    ``memory_ids`` are the cube's ids of ``texts`` (default: the entry's, which another cube with the
    same texts may have set).
    """
    target = cache_dir(home, cube_id, entry.key)
    target.mkdir(parents=True, exist_ok=True)
    layout = save_caches(target / _TENSORS, {"cache": entry.cache})["cache"]
    manifest = {
        "format": _FORMAT,
        "cube_id": cube_id,
        "cache_key": str(entry.key),
        "model_id": entry.key.model_id,
        "prefix_hash": entry.key.prefix_hash,
        "memory_ids": list(entry.memory_ids if memory_ids is None else memory_ids),
        "texts": list(texts),
        "prefix_text": entry.prefix_text,
        "prefix_ids": list(entry.prefix_ids),
        "bytes": entry.bytes,
        "build_ms": entry.build_ms,
        "layout": layout,
    }
    _write_json(target / MANIFEST, manifest)
    return target


def remove_dump(home: str | Path, cube_id: str, cache_key: str | CacheKey | None = None) -> None:
    """Delete one dumped cache of a cube, or (no key) every dump and the state of the cube."""
    target = cube_dir(home, cube_id) if cache_key is None else cache_dir(home, cube_id, cache_key)
    shutil.rmtree(target, ignore_errors=True)


def load_warm_cache(
    home: str | Path, cube_id: str, cache_key: str | CacheKey, *, device: str = "cpu"
) -> WarmHandle | None:
    """The dumped cache of a cube, loaded onto ``device``; None when it is not (or no longer) there.

    Raises StoreError when the dump exists but is corrupt (unreadable, or its texts do not hash to its key).
    """
    key = parse_cache_key(cache_key) if isinstance(cache_key, str) else cache_key
    folder = cache_dir(home, cube_id, key)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        texts = tuple(str(t) for t in manifest["texts"])
        if manifest["model_id"] != key.model_id or prefix_hash(key.model_id, texts) != key.prefix_hash:
            raise StoreError(f"dump {str(folder)!r} does not hold the cache {str(key)!r}")
        cache = load_caches(folder / _TENSORS, {"cache": manifest["layout"]}, device=device)["cache"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        if not (folder / MANIFEST).is_file():  # evicted while we read it
            return None
        raise StoreError(f"cannot load the warm cache dumped in {str(folder)!r}: {exc}") from exc
    entry = WarmCache(
        key=key,
        cache=cache,
        prefix_ids=tuple(int(i) for i in manifest["prefix_ids"]),
        memory_ids=tuple(manifest["memory_ids"]),
        prefix_text=str(manifest["prefix_text"]),
        build_ms=float(manifest["build_ms"]),
        bytes=int(manifest.get("bytes", 0)),
    )
    return WarmHandle(cube_id, entry, entry.memory_ids, texts)


async def latest_warmed(log: EventLog, cube_id: str, *, model_id: str | None = None) -> KVCacheWarmed | None:
    """The cube's latest ``KVCacheWarmed`` (of ``model_id`` when given) not evicted since, read from the
    cube's partition of ``memos.activation.v1``; None when the cube has no warm cache."""
    partitions = await log.partitions(ACTIVATION)
    if partitions == 0:
        return None
    partition = partition_for(cube_id.encode(), partitions)
    latest: KVCacheWarmed | None = None
    offset = 0
    while True:
        records = await log.read(ACTIVATION, partition, offset, limit=500)
        if not records:
            return latest
        for record in records:
            offset = record.position.offset + 1
            try:
                event = decode(record.value)
            except EventDecodeError:
                logger.warning("undecodable activation record skipped position=%s", record.position)
                continue
            if getattr(event, "cube_id", None) != cube_id:
                continue
            if isinstance(event, KVCacheWarmed) and (model_id is None or event.model_id == model_id):
                latest = event
            elif (
                isinstance(event, KVCacheEvicted)
                and latest is not None
                and event.cache_key == latest.cache_key
            ):
                latest = None


async def load_latest_warm_cache(
    log: EventLog, home: str | Path, cube_id: str, *, model_id: str | None = None, device: str = "cpu"
) -> WarmHandle | None:
    """The cache named by the cube's latest ``KVCacheWarmed`` (see :func:`latest_warmed`), loaded from
    its dump; None when there is none or its dump is gone."""
    warmed = await latest_warmed(log, cube_id, model_id=model_id)
    if warmed is None:
        return None
    return load_warm_cache(home, cube_id, warmed.cache_key, device=device)


def write_cube_state(home: str | Path, cube_id: str, state: dict[str, Any]) -> None:
    """Save the warmer's JSON state of a cube (queries, retrieval counts, composition)."""
    folder = cube_dir(home, cube_id)
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / _STATE, state, indent=None)


def read_cube_state(folder: Path) -> dict[str, Any] | None:
    """The warmer state saved in a cube folder, or None when missing or unreadable."""
    try:
        data = json.loads((folder / _STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
