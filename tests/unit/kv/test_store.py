"""The shared, byte-budgeted LRU store of warm caches: keys, budget evictions, stale caches, files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from memory_store.kv.cache import cache_bytes, cache_from_layers, layer_tensors
from memory_store.kv.store import CacheKey, LocalKVCacheStore, WarmCache
from schemas.errors import StoreError


def entry(prefix_hash: str, tokens: int = 8, model: str = "m") -> WarmCache:
    kv = [
        (torch.full((1, 2, tokens, 4), float(i)), torch.full((1, 2, tokens, 4), -float(i))) for i in range(2)
    ]
    return WarmCache(
        key=CacheKey(model, prefix_hash),
        cache=cache_from_layers(kv),
        prefix_ids=tuple(range(tokens)),
        memory_ids=(f"mem-{prefix_hash}",),
        prefix_text=f"text {prefix_hash}",
        build_ms=1.5,
    )


SIZE = 2 * 2 * 2 * 8 * 4 * 4  # layers * (k, v) * heads * tokens * head_dim * float32


def test_put_get_and_current() -> None:
    store = LocalKVCacheStore(max_bytes=10 * SIZE)
    e = entry("h1")
    assert store.put(e, cube_id="cube-a") == []
    assert store.get(CacheKey("m", "h1")) is e
    assert store.current("cube-a", "m") is e
    assert store.current("cube-b", "m") is None
    assert store.used_bytes == SIZE == cache_bytes(e.cache)
    assert str(e.key) == "m|h1" and e.tokens == 8


def test_warming_the_same_composition_twice_is_a_no_op() -> None:
    store = LocalKVCacheStore(max_bytes=10 * SIZE)
    first = entry("h1")
    store.put(first, cube_id="a")
    assert store.put(entry("h1"), cube_id="a") == []
    assert store.get(CacheKey("m", "h1")) is first
    assert len(store) == 1 and store.used_bytes == SIZE


def test_budget_evicts_least_recently_used_and_reports_it() -> None:
    store = LocalKVCacheStore(max_bytes=2 * SIZE)
    store.put(entry("h1"), cube_id="a")
    store.put(entry("h2"), cube_id="b")
    store.get(CacheKey("m", "h1"))  # h2 is now the least recently used
    evicted = store.put(entry("h3"), cube_id="c")
    assert [(e.cube_id, e.cache_key, e.reason, e.bytes) for e in evicted] == [("b", "m|h2", "budget", SIZE)]
    assert store.keys() == [CacheKey("m", "h1"), CacheKey("m", "h3")]
    assert store.current("b", "m") is None
    assert store.used_bytes == 2 * SIZE


def test_a_new_composition_for_a_cube_evicts_its_previous_cache_as_stale() -> None:
    store = LocalKVCacheStore(max_bytes=10 * SIZE)
    store.put(entry("old"), cube_id="a")
    evicted = store.put(entry("new"), cube_id="a")
    assert [(e.cube_id, e.cache_key, e.reason) for e in evicted] == [("a", "m|old", "stale")]
    assert CacheKey("m", "old") not in store
    other_model = store.put(entry("x", model="other"), cube_id="a")
    assert other_model == []  # one current cache per (cube, model)
    assert store.current("a", "m") is not None and store.current("a", "other") is not None


def test_identical_compositions_are_shared_between_cubes_until_the_last_one_lets_go() -> None:
    store = LocalKVCacheStore(max_bytes=10 * SIZE)
    store.put(entry("shared"), cube_id="a")
    store.put(entry("shared"), cube_id="b")
    assert len(store) == 1
    evicted = store.put(entry("mine"), cube_id="a")
    assert [(e.cube_id, e.reason, e.bytes) for e in evicted] == [("a", "stale", 0)]
    assert CacheKey("m", "shared") in store
    gone = store.drop_cube("b")
    assert [(e.cube_id, e.reason, e.bytes) for e in gone] == [("b", "forgotten", SIZE)]
    assert CacheKey("m", "shared") not in store
    assert store.drop(CacheKey("m", "unknown")) == []
    dropped = store.drop(CacheKey("m", "mine"))
    assert [(e.cube_id, e.reason) for e in dropped] == [("a", "deleted")]
    assert store.used_bytes == 0 and len(store) == 0


def test_a_cache_larger_than_the_whole_budget_is_an_error() -> None:
    store = LocalKVCacheStore(max_bytes=SIZE - 1)
    with pytest.raises(StoreError, match="exceeds the store budget"):
        store.put(entry("h"), cube_id="a")
    assert len(store) == 0
    with pytest.raises(ValueError):
        LocalKVCacheStore(max_bytes=0)


def test_dump_and_load_keep_caches_metadata_order_and_current_cubes(tmp_path: Path) -> None:
    store = LocalKVCacheStore(max_bytes=10 * SIZE)
    store.put(entry("h1"), cube_id="a")
    store.put(entry("h2"), cube_id="b")
    store.put(entry("h2"), cube_id="c")
    index = store.dump(tmp_path)
    assert index.name == "kv_store.json"
    assert not list(tmp_path.glob("*.pkl")) and not list(tmp_path.glob("*.pickle"))
    restored = LocalKVCacheStore(max_bytes=10 * SIZE)
    assert restored.load(tmp_path) == []
    assert restored.keys() == store.keys()
    got = restored.current("c", "m")
    assert got is not None and got.key == CacheKey("m", "h2") and got.cube_ids == {"b", "c"}
    assert (
        got.prefix_ids == tuple(range(8)) and got.memory_ids == ("mem-h2",) and got.prefix_text == "text h2"
    )
    original = store.get(CacheKey("m", "h2"))
    assert original is not None
    for (k, v), (k0, v0) in zip(layer_tensors(got.cache), layer_tensors(original.cache), strict=True):
        assert torch.equal(k, k0) and torch.equal(v, v0)
    with pytest.raises(StoreError):
        LocalKVCacheStore().load(tmp_path / "missing")
