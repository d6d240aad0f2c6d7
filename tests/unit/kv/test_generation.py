"""Decoding on a warm prefix cache gives exactly what putting the prefix in the prompt gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from memory_store.kv.cache import cache_length, layer_tensors
from memory_store.kv.generation import (
    build_prefix_cache,
    forward_cache_kwarg,
    generate_from_prompt,
    generate_with_cache,
)

PREFIX = (
    "<|im_start|>system\nMemories of this user:\n- I like football.\n- The secret code word is PINEAPPLE."
)
QUERIES = [
    "<|im_end|>\n<|im_start|>user\nWhat is the secret code word?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_end|>\n<|im_start|>user\nDo I like football?<|im_end|>\n<|im_start|>assistant\n",
    "\nHello",
]


def ids_of(tok: Any, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_qwen2"])
def test_greedy_output_is_identical_with_and_without_the_cache(
    which: str, request: pytest.FixtureRequest
) -> None:
    model, tok = request.getfixturevalue(which)
    prefix_ids = ids_of(tok, PREFIX)
    cache, build_ms = build_prefix_cache(model, prefix_ids)
    assert build_ms > 0 and cache_length(cache) == len(prefix_ids)
    for query in QUERIES:
        query_ids = ids_of(tok, query)
        warm = generate_with_cache(model, tok, cache, len(prefix_ids), query_ids, max_new_tokens=20)
        cold = generate_from_prompt(model, tok, prefix_ids + query_ids, max_new_tokens=20)
        assert warm.token_ids == cold.token_ids
        assert warm.text == cold.text
        assert len(warm.token_ids) > 0
        assert warm.cached_tokens == len(prefix_ids) and cold.cached_tokens == 0
        assert warm.prompt_tokens == cold.prompt_tokens == len(prefix_ids) + len(query_ids)


def test_the_stored_cache_is_never_mutated(tiny_llama: tuple[Any, Any]) -> None:
    model, tok = tiny_llama
    prefix_ids = ids_of(tok, PREFIX)
    cache, _ = build_prefix_cache(model, prefix_ids)
    before = [(k.clone(), v.clone()) for k, v in layer_tensors(cache)]
    first = generate_with_cache(model, tok, cache, len(prefix_ids), QUERIES[0], max_new_tokens=12)
    again = generate_with_cache(model, tok, cache, len(prefix_ids), QUERIES[0], max_new_tokens=12)
    assert first.token_ids == again.token_ids
    assert cache_length(cache) == len(prefix_ids)
    for (k, v), (k0, v0) in zip(layer_tensors(cache), before, strict=True):
        assert torch.equal(k, k0) and torch.equal(v, v0)


def test_a_longer_cache_is_cropped_to_the_prefix(tiny_llama: tuple[Any, Any]) -> None:
    model, tok = tiny_llama
    prefix_ids = ids_of(tok, PREFIX)
    longer, _ = build_prefix_cache(model, prefix_ids + ids_of(tok, " and more text that is not part of it"))
    query_ids = ids_of(tok, QUERIES[1])
    warm = generate_with_cache(model, tok, longer, len(prefix_ids), query_ids, max_new_tokens=16)
    cold = generate_from_prompt(model, tok, prefix_ids + query_ids, max_new_tokens=16)
    assert warm.token_ids == cold.token_ids
    with pytest.raises(ValueError, match="cache holds"):
        generate_with_cache(model, tok, longer, cache_length(longer) + 1, query_ids)
    with pytest.raises(ValueError):
        generate_with_cache(model, tok, longer, len(prefix_ids), [])


def test_generation_stops_at_an_end_token(tiny_llama: tuple[Any, Any]) -> None:
    model, tok = tiny_llama
    prompt = ids_of(tok, PREFIX + QUERIES[0])
    free = generate_from_prompt(model, tok, prompt, max_new_tokens=6)
    assert free.finish_reason == "length" and len(free.token_ids) == 6
    stop_at = free.token_ids[2]
    stopped = generate_from_prompt(model, tok, prompt, max_new_tokens=6, eos_token_ids=[stop_at])
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == free.token_ids[: free.token_ids.index(stop_at)]


def test_sampling_is_reproducible_with_a_seeded_generator(tiny_llama: tuple[Any, Any]) -> None:
    model, tok = tiny_llama
    prompt = ids_of(tok, PREFIX + QUERIES[2])
    runs = [
        generate_from_prompt(
            model, tok, prompt, max_new_tokens=8, greedy=False, temperature=1.5, top_k=50, top_p=0.9,
            generator=torch.Generator().manual_seed(7),
        ).token_ids
        for _ in range(2)
    ]  # fmt: skip
    assert runs[0] == runs[1]
    assert all(0 <= t < model.config.vocab_size for t in runs[0])


class CacheNamedLlama(LlamaForCausalLM):
    """A Llama whose forward calls its cache ``cache``, as later transformers releases do."""

    def forward(  # type: ignore[override]
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Any = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs: Any,
    ) -> Any:
        return super().forward(
            input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, use_cache=use_cache,
            logits_to_keep=logits_to_keep, **kwargs,
        )  # fmt: skip


def test_forward_signatures_naming_the_cache_cache_are_supported(tiny_llama_dir: Path) -> None:
    model = CacheNamedLlama.from_pretrained(tiny_llama_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    assert forward_cache_kwarg(model) == "cache"
    prefix_ids = ids_of(tok, PREFIX)
    cache, _ = build_prefix_cache(model, prefix_ids)
    assert cache_length(cache) == len(prefix_ids)
    query_ids = ids_of(tok, QUERIES[0])
    warm = generate_with_cache(model, tok, cache, len(prefix_ids), query_ids, max_new_tokens=10)
    cold = generate_from_prompt(model, tok, prefix_ids + query_ids, max_new_tokens=10)
    assert warm.token_ids == cold.token_ids


def test_forward_cache_kwarg_of_the_installed_models(tiny_llama: tuple[Any, Any]) -> None:
    model, _ = tiny_llama
    assert forward_cache_kwarg(model) in ("past_key_values", "cache")
    with pytest.raises(ValueError):
        build_prefix_cache(model, [])
