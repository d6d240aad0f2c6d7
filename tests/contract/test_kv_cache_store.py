"""KVCacheStore contract on every adapter: LocalKVCacheStore (in-process LRU), holding real prefix caches
of a random-weight Llama (transformers) in float32 and in bfloat16 (another element size to account)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from memory_store.kv.base import CacheKey, WarmCache
from memory_store.kv.cache import layer_tensors
from memory_store.kv.generation import build_prefix_cache
from memory_store.kv.store import LocalKVCacheStore
from memory_store.kv.tiny import make_tiny_model
from tests.contract.kv_store_contract import EntryFactory, KVCacheStoreContract, StoreFactory


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", arch="llama", layers=2, hidden=64)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def _entries(lm: Any, tokenizer: Any) -> EntryFactory:
    """Entries holding real prefix caches of ``lm`` (``tokens`` ids of a text that names the entry)."""

    def entry(name: str, tokens: int = 8, model: str = "m") -> WarmCache:
        text = f"memory {name}: the user likes green tea and hikes on Saturday mornings. " * 4
        ids = tokenizer(text)["input_ids"][:tokens]
        assert len(ids) == tokens
        with torch.no_grad():
            cache, ms = build_prefix_cache(lm, ids)
        return WarmCache(key=CacheKey(model, name), cache=cache, prefix_ids=tuple(ids),
                         memory_ids=(f"mem-{name}",), prefix_text=text, build_ms=ms)

    return entry


class TestLocalKVCacheStoreFloat32(KVCacheStoreContract):
    """The full contract; adapter: LocalKVCacheStore; caches: tiny Llama, float32, CPU."""

    @pytest.fixture
    def new_store(self) -> StoreFactory:
        return LocalKVCacheStore

    @pytest.fixture
    def make_entry(self, tiny_llama: tuple[Any, Any]) -> EntryFactory:
        return _entries(*tiny_llama)


class TestLocalKVCacheStoreBFloat16(KVCacheStoreContract):
    """The full contract; adapter: LocalKVCacheStore; caches: tiny Llama, bfloat16, CPU."""

    @pytest.fixture(scope="class")
    def bf16_llama(self, tiny_llama: tuple[Any, Any]) -> tuple[Any, Any]:
        import copy

        model, tokenizer = tiny_llama
        return copy.deepcopy(model).to(torch.bfloat16), tokenizer

    @pytest.fixture
    def new_store(self) -> StoreFactory:
        return LocalKVCacheStore

    @pytest.fixture
    def make_entry(self, bf16_llama: tuple[Any, Any]) -> EntryFactory:
        model, tokenizer = bf16_llama
        make = _entries(model, tokenizer)
        assert layer_tensors(make("dtype-probe").cache)[0][0].dtype == torch.bfloat16
        return make


def test_dump_files_are_safetensors_and_json(tmp_path: Path, tiny_llama: tuple[Any, Any]) -> None:
    store = LocalKVCacheStore(1 << 20)
    store.put(_entries(*tiny_llama)("h"), cube_id="a")
    index = store.dump(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kv_store.json", "kv_store.safetensors"]
    assert index.name == "kv_store.json"
