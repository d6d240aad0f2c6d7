"""``KVCacheMemory``: MemOS's activation memory of KV caches built by a local model, plus warm chat.

The MemOS interface (``extract``, ``add``, ``get``, ``get_by_ids``, ``get_all``, ``get_cache``,
``delete``, ``delete_all``, ``dump``, ``load``) behaves as in MemOS, except that files are safetensors
plus JSON (never pickle) and a failed load raises instead of silently starting empty.

``extract(text)`` caches the memory prefix of a chat: a system message holding
``compose_memory_text([text])``, cut right after the memory text. ``extract(messages)`` caches the
conversation rendered with the chat template (no generation prompt).

Merges (``get_cache(ids, merge=...)``, default from the config, ``"concat"`` as in MemOS):

- ``concat``: each layer's keys/values joined along the sequence axis. Positions restart at 0 in every
  part and parts never attended to each other: fine to inspect, not equal to any prompt.
- ``reposition``: as concat, with each part's keys rotated to continuous rotary positions.
- ``rebuild``: one cache of the composed text of all the items' memories (exact).

**Chat uses rebuild**: ``chat`` and ``warm`` build (or reuse, keyed by model id and prefix hash in the
shared :class:`LocalKVCacheStore`) the cache of the composed memory text, and decode on it; the answer is
token for token what putting the same memories in the prompt gives.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from memory_store.kv.cache import concat_caches, load_caches, reposition_caches, save_caches, shallow_copy
from memory_store.kv.store import CacheKey, Eviction, LocalKVCacheStore, WarmCache
from memory_store.llm.huggingface import HuggingFaceChatModel, PrefixCache
from memos.configs.llm import HFLLMConfig
from memos.configs.memory import KVCacheMemoryConfig
from memos.memories.activation.item import KVCacheItem, KVCacheRecords
from processors.kv_warmer import compose_memory_text, prefix_hash
from schemas.errors import ConfigError, StoreError

__all__ = ["KVCacheMemory", "MergeMode", "huggingface_model_from_config"]

logger = logging.getLogger(__name__)

MergeMode = Literal["concat", "reposition", "rebuild"]
_FORMAT = 1


def huggingface_model_from_config(config: HFLLMConfig) -> HuggingFaceChatModel:
    """The local model an ``HFLLMConfig`` describes (loaded offline; ConfigError when missing)."""
    return HuggingFaceChatModel(
        config.model_name_or_path,
        max_tokens=config.max_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        top_k=config.top_k,
        do_sample=config.do_sample,
        add_generation_prompt=config.add_generation_prompt,
        remove_think_prefix=config.remove_think_prefix,
        device=config.device,
        dtype=config.dtype,
    )


class KVCacheMemory:
    """Activation memory of KV caches (MemOS interface) with warm-cache chat.

    ``llm`` and ``store`` may be shared between the memories of many cubes (one model in memory, one
    byte budget); by default each memory loads its own model and store.
    """

    def __init__(
        self,
        config: KVCacheMemoryConfig,
        *,
        llm: HuggingFaceChatModel | None = None,
        store: LocalKVCacheStore | None = None,
    ) -> None:
        self.config = config
        llm_config = config.extractor_llm.config
        if llm is None and not isinstance(llm_config, HFLLMConfig):
            raise ConfigError(f"kv_cache needs a huggingface extractor_llm, got {type(llm_config).__name__}")
        self.llm = llm if llm is not None else huggingface_model_from_config(llm_config)  # type: ignore[arg-type]
        self.store = store if store is not None else LocalKVCacheStore(config.warm_cache_budget_mb * 1024**2)
        self.kv_cache_memories: dict[str, KVCacheItem] = {}
        self._lock = threading.RLock()

    # --- MemOS interface ----------------------------------------------------------------------------

    def extract(self, text: str | Sequence[Mapping[str, Any]]) -> KVCacheItem:
        """A new item caching ``text`` (a memory) or chat ``messages``; not added yet."""
        if isinstance(text, str):
            memories = [text]
            composed = compose_memory_text(memories)
            prefix = self.llm.build_memory_cache(composed, room=0)
            kind = "text"
        else:
            messages = list(text)
            memories = [str(m.get("content", "")) for m in messages if isinstance(m.get("content"), str)]
            composed = self.llm.render(messages, add_generation_prompt=False)
            prefix = self.llm.build_prefix_cache(composed)
            kind = "messages"
        now = datetime.now(UTC)
        return KVCacheItem(
            memory=prefix.cache,
            metadata={
                "source_text": text if isinstance(text, str) else composed,
                "kind": kind,
                "extracted_at": now.isoformat(),
                "model_id": self.llm.model_id,
                "tokens": len(prefix.prefix_ids),
                "build_ms": round(prefix.build_ms, 3),
            },
            records=KVCacheRecords(text_memories=memories, composed_text_memory=composed, timestamp=now),
        )

    def add(self, memories: Sequence[KVCacheItem]) -> None:
        """Add items (an item with an existing id replaces it)."""
        with self._lock:
            for item in memories:
                self.kv_cache_memories[item.id] = item

    def get(self, memory_id: str) -> KVCacheItem | None:
        """The item with this id, or None."""
        return self.kv_cache_memories.get(memory_id)

    def get_by_ids(self, memory_ids: Sequence[str]) -> list[KVCacheItem | None]:
        """Items in the order asked, None for unknown ids."""
        return [self.get(i) for i in memory_ids]

    def get_all(self) -> list[KVCacheItem]:
        """Every item, in insertion order."""
        return list(self.kv_cache_memories.values())

    def get_cache(self, cache_ids: Sequence[str], *, merge: MergeMode | None = None) -> Any:
        """One cache for these items (unknown ids skipped), or None when none is known.

        The result never shares state with a stored item in a way generation could change. Raises
        ConfigError for ``reposition`` on a model whose rotary tables are unknown.
        """
        items = [item for item in self.get_by_ids(cache_ids) if item is not None]
        if not items:
            return None
        mode = merge or self.config.merge
        if mode == "concat":
            return concat_caches([item.memory for item in items])
        if mode == "reposition":
            inv = self.llm.rotary_inv_freqs()
            if inv is None:
                raise ConfigError(
                    f"model {self.llm.model_id!r} has no plain rotary tables; use merge='rebuild'"
                )
            return reposition_caches([item.memory for item in items], inv)
        texts = [
            t for item in items for t in (item.records.text_memories or [item.records.composed_text_memory])
        ]
        entry, _ = self.warm(texts, memory_ids=[item.id for item in items])
        return shallow_copy(entry.cache)

    def delete(self, memory_ids: Sequence[str]) -> None:
        """Remove these items (unknown ids are ignored)."""
        with self._lock:
            for memory_id in memory_ids:
                self.kv_cache_memories.pop(memory_id, None)

    def delete_all(self) -> None:
        """Remove every item."""
        with self._lock:
            self.kv_cache_memories.clear()

    def from_textual_memory(self, mem: Any) -> KVCacheItem:
        """An item caching a textual memory item (``mem.memory``), keeping its metadata."""
        item = self.extract(str(mem.memory))
        meta = getattr(mem, "metadata", None)
        if meta is not None:
            item.metadata["textual"] = (
                meta.model_dump(mode="json") if hasattr(meta, "model_dump") else dict(meta)
            )
        return item

    def _paths(self, directory: str | Path) -> tuple[Path, Path]:
        stem = Path(self.config.memory_filename).stem
        return Path(directory) / f"{stem}.safetensors", Path(directory) / f"{stem}.json"

    def dump(self, dir: str) -> None:  # noqa: A002 - MemOS's parameter name
        """Write every item to ``dir``: tensors as safetensors, ids/metadata/records as JSON."""
        tensors_path, index_path = self._paths(dir)
        with self._lock:
            items = self.get_all()
            names = {f"i{n}": item for n, item in enumerate(items)}
            layout = save_caches(tensors_path, {name: item.memory for name, item in names.items()})
            index = {
                "format": _FORMAT,
                "model_id": self.llm.model_id,
                "items": [
                    {
                        "name": name,
                        "id": item.id,
                        "metadata": item.metadata,
                        "records": item.records.model_dump(mode="json"),
                        "layout": layout[name],
                    }
                    for name, item in names.items()
                ],
            }
        index_path.write_text(json.dumps(index, indent=1, default=str), encoding="utf-8")
        logger.info("kv_memory_dumped dir=%s items=%d", dir, len(items))

    def load(self, dir: str) -> None:  # noqa: A002 - MemOS's parameter name
        """Replace the items with those dumped in ``dir``; nothing there leaves the memory empty.

        Raises StoreError when the files exist but cannot be read.
        """
        tensors_path, index_path = self._paths(dir)
        if not index_path.is_file():
            logger.info("kv_memory_load_empty dir=%s", dir)
            with self._lock:
                self.kv_cache_memories = {}
            return
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
            layouts = {e["name"]: e["layout"] for e in index["items"]}
            caches = load_caches(tensors_path, layouts, device=self.llm.device) if layouts else {}
            loaded = {
                e["id"]: KVCacheItem(
                    id=e["id"],
                    memory=caches[e["name"]],
                    metadata=e["metadata"],
                    records=KVCacheRecords.model_validate(e["records"]),
                )
                for e in index["items"]
            }
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"cannot load KV cache memory from {dir!r}: {exc}") from exc
        with self._lock:
            self.kv_cache_memories = loaded
        logger.info("kv_memory_loaded dir=%s items=%d", dir, len(loaded))

    # --- warm caches and chat -----------------------------------------------------------------------

    def cache_key(self, texts: Sequence[str]) -> CacheKey:
        """Store key of the warm cache of these ordered memory texts for this memory's model."""
        return CacheKey(self.llm.model_id, prefix_hash(self.llm.model_id, texts))

    def warm(
        self, texts: Sequence[str], *, memory_ids: Sequence[str] = (), cube_id: str | None = None
    ) -> tuple[WarmCache, list[Eviction]]:
        """The warm cache of these ordered memory texts, built unless the store already holds it.

        Returns it with the evictions its insertion caused (publish them as ``KVCacheEvicted``).
        """
        key = self.cache_key(texts)
        cube = cube_id or self.config.cube_id or ""
        entry = self.store.get(key)
        if entry is None:
            prefix = self.llm.build_memory_cache(compose_memory_text(texts))
            entry = WarmCache(
                key=key,
                cache=prefix.cache,
                prefix_ids=prefix.prefix_ids,
                memory_ids=tuple(memory_ids),
                prefix_text=prefix.prefix_text,
                build_ms=prefix.build_ms,
            )
        evicted = self.store.put(entry, cube_id=cube)
        stored = self.store.get(key)
        return (stored if stored is not None else entry), evicted

    def chat(
        self,
        query: str | Sequence[Mapping[str, Any]],
        *,
        cache_ids: Sequence[str] | None = None,
        memories: Sequence[str] | None = None,
        use_cache: bool = True,
        max_new_tokens: int | None = None,
    ) -> str:
        """Answer ``query`` with memories as context: ``memories`` texts, else the texts of the items
        ``cache_ids`` (default: all items). With ``use_cache`` the warm cache is used (built when
        missing), else the memories go in the prompt; both give the same greedy answer.
        """
        if memories is None:
            chosen = self.get_all() if cache_ids is None else [i for i in self.get_by_ids(cache_ids) if i]
            memories = [
                t
                for item in chosen
                for t in (item.records.text_memories or [item.records.composed_text_memory])
            ]
        messages = [{"role": "user", "content": query}] if isinstance(query, str) else list(query)
        composed = compose_memory_text(memories)
        prefix: PrefixCache | None = None
        if use_cache:
            entry, _ = self.warm(memories)
            prefix = PrefixCache(entry.cache, entry.prefix_ids, entry.prefix_text, entry.build_ms)
        out = self.llm.generate_with_memories(
            composed, messages, prefix=prefix, max_new_tokens=max_new_tokens
        )
        return self.llm.finish_text(out.text)
