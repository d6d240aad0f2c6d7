"""KVCacheMemory end to end on a tiny local model: the seed's Example 4 flow, merges, files, warm chat."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from transformers import DynamicCache

from memory_store.kv.cache import cache_length, layer_tensors
from memory_store.kv.store import LocalKVCacheStore
from memory_store.llm.huggingface import HuggingFaceChatModel
from memos.configs.memory import KVCacheMemoryConfig, MemoryConfigFactory
from memos.memories.activation.item import KVCacheItem, KVCacheRecords
from memos.memories.activation.kv import KVCacheMemory
from memos.memories.factory import MemoryFactory
from processors.kv_warmer import compose_memory_text
from schemas.errors import ConfigError, StoreError

REPO = Path(__file__).resolve().parents[2]
PROMPT = [
    {"role": "user", "content": "What is MemOS?"},
    {"role": "assistant", "content": "MemOS is a memory operating system for LLMs."},
]


def example_config(model: str = "tiny://llama") -> MemoryConfigFactory:
    return MemoryConfigFactory(
        backend="kv_cache",
        config={
            "extractor_llm": {
                "backend": "huggingface",
                "config": {
                    "model_name_or_path": model,
                    "max_tokens": 32,
                    "add_generation_prompt": True,
                    "remove_think_prefix": True,
                },
            },
        },
    )


@pytest.fixture(scope="module")
def shared_llm(tmp_path_factory: pytest.TempPathFactory) -> HuggingFaceChatModel:
    from memory_store.kv.tiny import make_tiny_model

    return HuggingFaceChatModel(
        str(make_tiny_model(tmp_path_factory.mktemp("kvmem") / "tiny")), max_tokens=16
    )


def memory(llm: HuggingFaceChatModel, store: LocalKVCacheStore | None = None, **config: Any) -> KVCacheMemory:
    cfg = KVCacheMemoryConfig.model_validate(
        {
            "extractor_llm": {"backend": "huggingface", "config": {"model_name_or_path": llm.model_id}},
            **config,
        }
    )
    return KVCacheMemory(cfg, llm=llm, store=store)


def equal_caches(a: Any, b: Any) -> bool:
    pairs = list(zip(layer_tensors(a), layer_tensors(b), strict=True))
    return all(torch.equal(k, k2) and torch.equal(v, v2) for (k, v), (k2, v2) in pairs)


def test_the_example_4_flow_through_the_factories(memos_home: Path, tmp_path: Path) -> None:
    kv_mem = MemoryFactory.from_config(example_config())
    assert isinstance(kv_mem, KVCacheMemory)
    assert (memos_home / "models" / "tiny-llama" / "config.json").is_file()

    item = kv_mem.extract(PROMPT)
    assert isinstance(item, KVCacheItem) and isinstance(item.memory, DynamicCache)
    assert cache_length(item.memory) == item.metadata["tokens"] > 0
    assert item.records.text_memories == [m["content"] for m in PROMPT]
    assert "MemOS is a memory operating system" in item.records.composed_text_memory
    assert set(item.records.model_dump()) == {"text_memories", "composed_text_memory", "timestamp"}

    kv_mem.add([item])
    assert kv_mem.get(item.id) is item and kv_mem.get_all() == [item]
    item2 = kv_mem.extract([{"role": "user", "content": "Tell me a joke."}])
    kv_mem.add([item2])
    assert kv_mem.get_by_ids([item2.id, "nope"]) == [item2, None]
    merged = kv_mem.get_cache([item.id, item2.id])
    assert cache_length(merged) == cache_length(item.memory) + cache_length(item2.memory)
    assert len(merged.layers) == len(item.memory.layers)
    assert kv_mem.get_cache(["unknown"]) is None

    kv_mem.delete([item.id])
    assert kv_mem.get_all() == [item2]
    dump_dir = tmp_path / "kv_mem"
    kv_mem.dump(str(dump_dir))
    assert sorted(p.suffix for p in dump_dir.iterdir()) == [".json", ".safetensors"]
    kv_mem.delete_all()
    assert kv_mem.get_all() == []
    kv_mem.load(str(dump_dir))
    [loaded] = kv_mem.get_all()
    assert loaded.id == item2.id and loaded.metadata == item2.metadata
    assert loaded.records == item2.records
    assert equal_caches(loaded.memory, item2.memory)


def test_extract_of_a_text_caches_the_memory_prefix_and_records_stay_mutable(
    shared_llm: HuggingFaceChatModel,
) -> None:
    kv_mem = memory(shared_llm)
    item = kv_mem.extract("I like playing football.")
    composed = compose_memory_text(["I like playing football."])
    assert item.records.composed_text_memory == composed
    assert item.metadata["kind"] == "text"
    prefix, _ = shared_llm.split_memory_prompt(composed, [{"role": "user", "content": "?"}])
    assert cache_length(item.memory) == len(shared_llm.encode(prefix))
    item.records.text_memories = ["edited"]  # what the seed's Example 5 handler does
    item.records.timestamp = item.records.timestamp.replace(year=2024)
    assert item.records.text_memories == ["edited"] and item.records.timestamp.year == 2024


def test_merges_concat_reposition_and_rebuild(shared_llm: HuggingFaceChatModel) -> None:
    kv_mem = memory(shared_llm)
    a, b = kv_mem.extract("The secret code word is PINEAPPLE."), kv_mem.extract("I like football.")
    kv_mem.add([a, b])
    total = cache_length(a.memory) + cache_length(b.memory)
    concat = kv_mem.get_cache([a.id, b.id])
    moved = kv_mem.get_cache([a.id, b.id], merge="reposition")
    assert cache_length(concat) == cache_length(moved) == total
    assert torch.equal(layer_tensors(concat)[0][1], layer_tensors(moved)[0][1])  # values never move
    assert not torch.allclose(layer_tensors(concat)[0][0], layer_tensors(moved)[0][0])
    rebuilt = kv_mem.get_cache([a.id, b.id], merge="rebuild")
    composed = compose_memory_text(a.records.text_memories + b.records.text_memories)
    assert equal_caches(rebuilt, shared_llm.build_memory_cache(composed).cache)
    stored = kv_mem.store.get(kv_mem.cache_key(a.records.text_memories + b.records.text_memories))
    assert (
        stored is not None
        and rebuilt is not stored.cache
        and cache_length(stored.cache) == cache_length(rebuilt)
    )


def test_chat_on_the_warm_cache_answers_exactly_as_memories_in_the_prompt(
    shared_llm: HuggingFaceChatModel,
) -> None:
    kv_mem = memory(shared_llm)
    kv_mem.add([kv_mem.extract("The secret code word is PINEAPPLE."), kv_mem.extract("I like football.")])
    for question in ("What is the secret code word?", "What do I like?"):
        warm = kv_mem.chat(question)
        cold = kv_mem.chat(question, use_cache=False)
        assert warm == cold and warm
    assert len(kv_mem.store) == 1  # one composition, warmed once, reused
    entry, evicted = kv_mem.warm(["The secret code word is PINEAPPLE.", "I like football."])
    assert evicted == [] and len(kv_mem.store) == 1
    assert kv_mem.chat("Hi", memories=["Only this."]) == kv_mem.chat(
        "Hi", memories=["Only this."], use_cache=False
    )


def test_one_store_budget_is_shared_by_the_memories_of_many_cubes(shared_llm: HuggingFaceChatModel) -> None:
    probe, _ = memory(shared_llm).warm(["memory of cube 0"])
    store = LocalKVCacheStore(max_bytes=int(probe.bytes * 2.5))
    cubes = [memory(shared_llm, store, cube_id=name) for name in ("a", "b", "c")]
    assert cubes[0].warm(["memory of cube a"])[1] == []
    assert cubes[1].warm(["memory of cube b"])[1] == []
    _, evicted = cubes[2].warm(["memory of cube c"])
    assert [(e.cube_id, e.reason) for e in evicted] == [("a", "budget")]
    assert store.current("a", shared_llm.model_id) is None
    _, evicted = cubes[1].warm(["new memory of b"])
    assert [(e.cube_id, e.reason) for e in evicted] == [("b", "stale")]
    assert len(store) == 2 and store.used_bytes <= store.max_bytes


def test_config_and_load_errors_are_clear(
    memos_home: Path, tmp_path: Path, shared_llm: HuggingFaceChatModel
) -> None:
    with pytest.raises(ValidationError, match="kv_cache needs a local model backend"):
        MemoryConfigFactory(
            backend="kv_cache",
            config={"extractor_llm": {"backend": "openai", "config": {"model_name_or_path": "gpt-4o-mini"}}},
        )
    with pytest.raises(ValidationError):
        MemoryConfigFactory(backend="no_such_memory", config={})
    with pytest.raises(ConfigError, match="memos models make-tiny DIR"):
        MemoryFactory.from_config(example_config("Qwen/Qwen3-0.6B"))
    with pytest.raises(ConfigError, match="no memory class"):
        MemoryFactory.from_config(MemoryConfigFactory(backend="uninitialized", config={}))
    kv_mem = memory(shared_llm)
    kv_mem.add([kv_mem.extract("x")])
    kv_mem.load(str(tmp_path / "nothing-here"))
    assert kv_mem.get_all() == []
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "activation_memory.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(StoreError):
        kv_mem.load(str(tmp_path / "bad"))


def test_a_records_model_accepts_what_memos_writes() -> None:
    records = KVCacheRecords(text_memories=["a"], composed_text_memory="a")
    assert KVCacheRecords.model_validate(json.loads(records.model_dump_json())) == records
    assert isinstance(KVCacheItem().memory, DynamicCache)


def test_the_example_script_runs_unchanged_but_for_the_model(tmp_path: Path) -> None:
    script = REPO / "examples" / "04_kv_cache_memory.py"
    assert script.read_text(encoding="utf-8").count('"model_name_or_path": "tiny://llama"') == 1
    env = {**os.environ, "MEMOS_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for heading in ("===== Extract KVCacheItem =====", "All caches:", "Merged cache:", "Loaded caches:"):
        assert heading in done.stdout
    assert (tmp_path / "tmp" / "kv_mem" / "activation_memory.safetensors").is_file()
    loaded = done.stdout.split("Loaded caches:")[1]
    assert '"num_layers": 2' in loaded and "Tell me a joke." in loaded
