"""KV caches of memories: cache helpers, the shared byte-budgeted store, warm decoding, tiny models.

Needs the ``kv`` extra (torch, transformers, safetensors, tokenizers).
"""

from __future__ import annotations

import logging

from memory_store.kv.base import CacheKey, Eviction, KVCacheStore, WarmCache
from memory_store.kv.cache import (
    cache_bytes,
    cache_from_layers,
    cache_length,
    cache_to,
    concat_caches,
    crop_cache,
    layer_tensors,
    load_caches,
    reposition_caches,
    rotate_keys,
    save_caches,
    shallow_copy,
)
from memory_store.kv.generation import (
    Generation,
    build_prefix_cache,
    forward_cache_kwarg,
    generate_from_prompt,
    generate_with_cache,
)
from memory_store.kv.room import SpareRoomLayer, claim_view, with_spare_room
from memory_store.kv.store import LocalKVCacheStore
from memory_store.kv.tiny import make_tiny_model

__all__ = [
    "CacheKey",
    "Eviction",
    "Generation",
    "KVCacheStore",
    "LocalKVCacheStore",
    "SpareRoomLayer",
    "WarmCache",
    "build_prefix_cache",
    "cache_bytes",
    "cache_from_layers",
    "cache_length",
    "cache_to",
    "claim_view",
    "concat_caches",
    "crop_cache",
    "forward_cache_kwarg",
    "generate_from_prompt",
    "generate_with_cache",
    "layer_tensors",
    "load_caches",
    "make_tiny_model",
    "reposition_caches",
    "rotate_keys",
    "save_caches",
    "shallow_copy",
    "with_spare_room",
]

logger = logging.getLogger(__name__)
