"""The KVCacheStore contract: every adapter's test class subclasses KVCacheStoreContract.

A subclass provides two fixtures: ``new_store`` (a callable: byte budget -> empty store) and
``make_entry`` (a callable: name, tokens=8, model="m" -> a WarmCache holding a real prefix cache of
that many tokens, from a real model). Entries of the same length have the same size (``entry_bytes``).
Everything is read back through port methods only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import pytest
import torch

from memory_store.kv.base import CacheKey, Eviction, KVCacheStore, WarmCache
from memory_store.kv.cache import cache_bytes, cache_length, layer_tensors
from schemas.errors import ConfigError, StoreError, ValidationFailed

__all__ = ["EntryFactory", "KVCacheStoreContract", "StoreFactory"]

StoreFactory = Callable[[int], KVCacheStore]


class EntryFactory(Protocol):
    def __call__(self, name: str, tokens: int = 8, model: str = "m") -> WarmCache: ...


def _summary(evictions: list[Eviction]) -> list[tuple[str, str, str, int]]:
    return [(e.cube_id, e.cache_key, e.reason, e.bytes) for e in evictions]


def _same_tensors(a: WarmCache, b: WarmCache) -> bool:
    pairs = list(zip(layer_tensors(a.cache), layer_tensors(b.cache), strict=True))
    return bool(pairs) and all(
        k.dtype == k0.dtype and torch.equal(k.cpu(), k0.cpu()) and torch.equal(v.cpu(), v0.cpu())
        for (k, v), (k0, v0) in pairs
    )


class KVCacheStoreContract:
    """Behaviour every KVCacheStore adapter must show."""

    @pytest.fixture
    def size(self, make_entry: EntryFactory) -> int:
        return cache_bytes(make_entry("probe").cache)

    # --- put, get, current ---------------------------------------------------------------------------

    def test_is_a_kv_cache_store(self, new_store: StoreFactory) -> None:
        assert isinstance(new_store(1024), KVCacheStore)

    def test_put_get_current_and_accounting(self, new_store: StoreFactory, make_entry: EntryFactory,
                                            size: int) -> None:
        store = new_store(10 * size)
        e = make_entry("h1")
        assert store.put(e, cube_id="cube-a") == []
        assert store.get(CacheKey("m", "h1")) is e
        assert store.current("cube-a", "m") is e and store.current("cube-b", "m") is None
        assert store.current("cube-a", "other-model") is None
        assert CacheKey("m", "h1") in store and CacheKey("m", "h2") not in store and len(store) == 1
        assert store.used_bytes == size and e.bytes == size and cache_length(e.cache) == e.tokens == 8

    def test_putting_the_same_composition_twice_is_a_no_op(self, new_store: StoreFactory,
                                                           make_entry: EntryFactory, size: int) -> None:
        store = new_store(10 * size)
        first = make_entry("h1")
        store.put(first, cube_id="a")
        assert store.put(make_entry("h1"), cube_id="a") == []
        assert store.get(CacheKey("m", "h1")) is first
        assert len(store) == 1 and store.used_bytes == size

    # --- eviction by budget ---------------------------------------------------------------------------

    def test_budget_evicts_the_least_recently_used_and_reports_it(
        self, new_store: StoreFactory, make_entry: EntryFactory, size: int
    ) -> None:
        store = new_store(2 * size)
        store.put(make_entry("h1"), cube_id="a")
        store.put(make_entry("h2"), cube_id="b")
        assert store.get(CacheKey("m", "h1")) is not None  # h2 is now the least recently used
        evicted = store.put(make_entry("h3"), cube_id="c")
        assert _summary(evicted) == [("b", "m|h2", "budget", size)]
        assert store.keys() == [CacheKey("m", "h1"), CacheKey("m", "h3")]
        assert store.current("b", "m") is None
        assert store.used_bytes == 2 * size <= store.max_bytes

    def test_current_counts_as_a_use(self, new_store: StoreFactory, make_entry: EntryFactory, size: int) -> None:
        store = new_store(2 * size)
        store.put(make_entry("h1"), cube_id="a")
        store.put(make_entry("h2"), cube_id="b")
        assert store.current("a", "m") is not None
        assert [e.cube_id for e in store.put(make_entry("h3"), cube_id="c")] == ["b"]

    def test_a_larger_cache_evicts_as_many_as_it_needs(self, new_store: StoreFactory, make_entry: EntryFactory,
                                                       size: int) -> None:
        store = new_store(3 * size)
        for n in range(3):
            store.put(make_entry(f"s{n}"), cube_id=f"c{n}")
        big = make_entry("big", tokens=16)
        assert cache_bytes(big.cache) == 2 * size
        evicted = store.put(big, cube_id="d")
        assert [(e.cube_id, e.reason) for e in evicted] == [("c0", "budget"), ("c1", "budget")]
        assert store.keys() == [CacheKey("m", "s2"), CacheKey("m", "big")]
        assert store.used_bytes == 3 * size

    def test_a_cache_larger_than_the_whole_budget_is_refused_and_nothing_changes(
        self, new_store: StoreFactory, make_entry: EntryFactory, size: int
    ) -> None:
        store = new_store(size)
        store.put(make_entry("fits"), cube_id="a")
        with pytest.raises(StoreError, match="exceeds the store budget"):
            store.put(make_entry("huge", tokens=16), cube_id="a")
        assert store.keys() == [CacheKey("m", "fits")] and store.current("a", "m") is not None

    # --- stale replacement, sharing, forget ------------------------------------------------------------

    def test_a_new_composition_for_a_cube_evicts_its_previous_cache_as_stale(
        self, new_store: StoreFactory, make_entry: EntryFactory, size: int
    ) -> None:
        store = new_store(10 * size)
        store.put(make_entry("old"), cube_id="a")
        assert _summary(store.put(make_entry("new"), cube_id="a")) == [("a", "m|old", "stale", size)]
        assert CacheKey("m", "old") not in store and store.used_bytes == size
        assert store.put(make_entry("x", model="other"), cube_id="a") == []  # one current per (cube, model)
        assert store.current("a", "m") is not None and store.current("a", "other") is not None

    def test_shared_compositions_stay_until_the_last_cube_lets_go(
        self, new_store: StoreFactory, make_entry: EntryFactory, size: int
    ) -> None:
        store = new_store(10 * size)
        store.put(make_entry("shared"), cube_id="a")
        store.put(make_entry("shared"), cube_id="b")
        assert len(store) == 1 and store.used_bytes == size
        assert _summary(store.put(make_entry("mine"), cube_id="a")) == [("a", "m|shared", "stale", 0)]
        assert CacheKey("m", "shared") in store
        assert _summary(store.drop_cube("b")) == [("b", "m|shared", "forgotten", size)]
        assert CacheKey("m", "shared") not in store

    def test_forgetting_a_cube_releases_all_its_models(self, new_store: StoreFactory, make_entry: EntryFactory,
                                                       size: int) -> None:
        store = new_store(10 * size)
        store.put(make_entry("a1"), cube_id="a")
        store.put(make_entry("a2", model="m2"), cube_id="a")
        store.put(make_entry("b1"), cube_id="b")
        gone = store.drop_cube("a")
        assert sorted((e.cache_key, e.reason) for e in gone) == [("m2|a2", "forgotten"), ("m|a1", "forgotten")]
        assert store.current("a", "m") is None and store.current("a", "m2") is None
        assert store.keys() == [CacheKey("m", "b1")] and store.used_bytes == size
        assert store.drop_cube("a") == [] and store.drop_cube("never-seen") == []

    def test_drop_by_key_removes_it_for_every_cube(self, new_store: StoreFactory, make_entry: EntryFactory,
                                                    size: int) -> None:
        store = new_store(10 * size)
        store.put(make_entry("k"), cube_id="a")
        store.put(make_entry("k"), cube_id="b")
        assert store.drop(CacheKey("m", "unknown")) == []
        dropped = store.drop(CacheKey("m", "k"))
        assert sorted((e.cube_id, e.reason) for e in dropped) == [("a", "deleted"), ("b", "deleted")]
        assert sum(e.bytes for e in dropped) == size
        assert store.current("a", "m") is None and store.current("b", "m") is None
        assert len(store) == 0 and store.used_bytes == 0

    # --- dump and load --------------------------------------------------------------------------------

    def test_dump_and_load_round_trip(self, new_store: StoreFactory, make_entry: EntryFactory, size: int,
                                      tmp_path: Path) -> None:
        store = new_store(10 * size)
        store.put(make_entry("h1"), cube_id="a")
        store.put(make_entry("h2", tokens=12, model="m2"), cube_id="b")
        store.put(make_entry("h2", tokens=12, model="m2"), cube_id="c")
        index = store.dump(tmp_path)
        assert index.parent == tmp_path and index.is_file()
        assert not list(tmp_path.glob("*.pkl")) and not list(tmp_path.glob("*.pickle"))
        restored = new_store(10 * size)
        assert restored.load(tmp_path) == []
        assert restored.keys() == store.keys() and restored.used_bytes == store.used_bytes
        for key in store.keys():
            got, original = restored.get(key), store.get(key)
            assert got is not None and original is not None
            assert (got.prefix_ids, got.memory_ids, got.prefix_text, got.build_ms, got.cube_ids) == (
                original.prefix_ids, original.memory_ids, original.prefix_text, original.build_ms,
                original.cube_ids)
            assert _same_tensors(got, original)
        c = restored.current("c", "m2")
        assert c is not None and c.key == CacheKey("m2", "h2") and c.cube_ids == {"b", "c"}

    def test_loading_into_a_smaller_budget_evicts_the_oldest(
        self, new_store: StoreFactory, make_entry: EntryFactory, size: int, tmp_path: Path
    ) -> None:
        store = new_store(10 * size)
        for n in range(3):
            store.put(make_entry(f"h{n}"), cube_id=f"c{n}")
        store.dump(tmp_path)
        small = new_store(2 * size)
        assert _summary(small.load(tmp_path)) == [("c0", "m|h0", "budget", size)]
        assert small.keys() == [CacheKey("m", "h1"), CacheKey("m", "h2")]

    def test_an_empty_store_round_trips(self, new_store: StoreFactory, tmp_path: Path) -> None:
        new_store(1024).dump(tmp_path)
        again = new_store(1024)
        assert again.load(tmp_path) == [] and len(again) == 0

    def test_a_missing_or_broken_dump_is_a_store_error(self, new_store: StoreFactory, make_entry: EntryFactory,
                                                       size: int, tmp_path: Path) -> None:
        store = new_store(10 * size)
        with pytest.raises(StoreError, match="cannot load KV caches"):
            store.load(tmp_path / "missing")
        store.put(make_entry("h1"), cube_id="a")
        index = store.dump(tmp_path / "dump")
        for tensors in (tmp_path / "dump").glob("*.safetensors"):
            tensors.write_bytes(tensors.read_bytes()[:40])  # truncated
        with pytest.raises(StoreError, match="cannot load KV caches"):
            new_store(10 * size).load(tmp_path / "dump")
        index.write_text("{not json", encoding="utf-8")
        with pytest.raises(StoreError, match="cannot load KV caches"):
            new_store(10 * size).load(tmp_path / "dump")

    # --- errors for bad input -------------------------------------------------------------------------

    @pytest.mark.parametrize("budget", [0, -1, 1.5, True, "1024"])
    def test_a_bad_budget_is_a_config_error(self, new_store: StoreFactory, budget: object) -> None:
        with pytest.raises(ConfigError, match="max_bytes"):
            new_store(budget)  # type: ignore[arg-type]

    def test_bad_entries_are_refused_naming_the_field(self, new_store: StoreFactory, make_entry: EntryFactory,
                                                      size: int) -> None:
        store = new_store(10 * size)
        good = make_entry("ok")
        with pytest.raises(ValidationFailed, match="entry.cache"):
            store.put(WarmCache(key=CacheKey("m", "x"), cache=[1, 2, 3], prefix_ids=(1,)), cube_id="a")
        with pytest.raises(ValidationFailed, match="entry.key"):
            store.put(WarmCache(key=CacheKey("", "x"), cache=good.cache, prefix_ids=(1,)), cube_id="a")
        with pytest.raises(ValidationFailed, match="cube_id"):
            store.put(good, cube_id=7)  # type: ignore[arg-type]
        with pytest.raises(ValidationFailed, match="WarmCache"):
            store.put(good.cache, cube_id="a")
        assert len(store) == 0 and store.used_bytes == 0

    # --- threads --------------------------------------------------------------------------------------

    def test_concurrent_puts_gets_and_forgets_keep_the_books(
        self, new_store: StoreFactory, make_entry: EntryFactory, size: int
    ) -> None:
        """Eight threads, started together, warm, read and forget their own cubes under a budget of four
        caches: afterwards the budget holds, every cache put is either stored or reported evicted once,
        and the bytes add up."""
        store = new_store(4 * size)
        threads, rounds = 8, 6
        entries = {(t, r): make_entry(f"t{t}r{r}") for t in range(threads) for r in range(rounds)}
        start = threading.Barrier(threads)
        evictions: list[Eviction] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def work(t: int) -> None:
            mine: list[Eviction] = []
            try:
                start.wait()
                for r in range(rounds):
                    mine += store.put(entries[(t, r)], cube_id=f"cube{t}")
                    store.get(entries[(t, r)].key)
                    store.current(f"cube{t}", "m")
                    assert store.used_bytes <= store.max_bytes
                    if r == rounds - 2:
                        mine += store.drop_cube(f"cube{t}")
            except BaseException as exc:  # noqa: BLE001 (reported below)
                errors.append(exc)
            with lock:
                evictions.extend(mine)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=120)
        assert not errors and not any(w.is_alive() for w in workers)
        removed = [e.cache_key for e in evictions if e.bytes]
        stored = [str(k) for k in store.keys()]
        assert len(removed) == len(set(removed)) and not set(removed) & set(stored)
        assert sorted(removed + stored) == sorted(str(e.key) for e in entries.values())
        assert store.used_bytes == len(store) * size <= store.max_bytes
        assert sum(e.bytes for e in evictions) == len(entries) * size - store.used_bytes
        for key in store.keys():
            held = store.get(key)
            assert held is not None and len(held.cube_ids) == 1
            (cube,) = held.cube_ids
            assert store.current(cube, "m") is held
