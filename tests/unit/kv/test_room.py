"""Warm caches with spare room: in-place appends for the claim holder, copies for everyone else, same tokens."""

from __future__ import annotations

from typing import Any

import torch

from memory_store.kv.cache import cache_bytes, cache_length, layer_tensors
from memory_store.kv.generation import build_prefix_cache, generate_from_prompt, generate_with_cache, prefill
from memory_store.kv.room import SpareRoomLayer, claim_view, with_spare_room

PREFIX = list(range(20, 120))
QUERY = list(range(300, 320))


def snapshot(cache: Any) -> list[torch.Tensor]:
    return [t.clone() for kv in layer_tensors(cache) for t in kv]


def unchanged(cache: Any, before: list[torch.Tensor]) -> bool:
    now = [t for kv in layer_tensors(cache) for t in kv]
    return len(now) == len(before) and all(torch.equal(a, b) for a, b in zip(now, before, strict=True))


def test_room_is_counted_and_the_content_is_the_same(tiny_llama: tuple[Any, Any]) -> None:
    model, _ = tiny_llama
    plain, _ = build_prefix_cache(model, PREFIX)
    roomy, _ = build_prefix_cache(model, PREFIX, room=50)
    assert all(isinstance(layer, SpareRoomLayer) for layer in roomy.layers)
    assert cache_length(roomy) == len(PREFIX)
    assert cache_bytes(roomy) == cache_bytes(plain) * (len(PREFIX) + 50) // len(PREFIX)
    assert unchanged(roomy, snapshot(plain))
    assert with_spare_room(plain, 0) is plain


def test_the_claim_holder_appends_in_place_and_the_stored_cache_stays(tiny_llama: tuple[Any, Any]) -> None:
    model, _ = tiny_llama
    roomy, _ = build_prefix_cache(model, PREFIX, room=50)
    before = snapshot(roomy)
    view, release = claim_view(roomy)
    other, other_release = claim_view(roomy)  # the claim is taken: this one copies
    assert view.layers[0]._writer and not other.layers[0]._writer
    prefill(model, torch.tensor([QUERY]), view)
    prefill(model, torch.tensor([QUERY]), other)
    assert view.layers[0].keys.data_ptr() == roomy.layers[0].keys.data_ptr()  # no copy of the prefix
    assert other.layers[0].keys.data_ptr() != roomy.layers[0].keys.data_ptr()
    assert torch.equal(view.layers[0].keys, other.layers[0].keys)
    release()
    other_release()
    assert unchanged(roomy, before) and cache_length(roomy) == len(PREFIX)
    again, release_again = claim_view(roomy)
    assert again.layers[0]._writer  # released claims can be taken again
    release_again()


def test_answers_are_identical_with_room_without_room_and_out_of_room(tiny_llama: tuple[Any, Any]) -> None:
    model, tok = tiny_llama
    cold = generate_from_prompt(model, tok, PREFIX + QUERY, max_new_tokens=12)
    for room in (0, 3, 25, 400):  # 3: out of room at once, 25: out of room while decoding
        cache, _ = build_prefix_cache(model, PREFIX, room=room)
        before = snapshot(cache)
        for _ in range(2):
            warm = generate_with_cache(model, tok, cache, len(PREFIX), QUERY, max_new_tokens=12)
            assert warm.token_ids == cold.token_ids, room
        assert unchanged(cache, before)


def test_concurrent_generations_on_one_warm_cache_agree(tiny_llama: tuple[Any, Any]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    model, tok = tiny_llama
    cache, _ = build_prefix_cache(model, PREFIX, room=64)
    before = snapshot(cache)
    queries = [QUERY, QUERY[:7], list(range(500, 540)), QUERY]
    expected = [generate_from_prompt(model, tok, PREFIX + q, max_new_tokens=10).token_ids for q in queries]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            futures = [
                pool.submit(generate_with_cache, model, tok, cache, len(PREFIX), q, max_new_tokens=10)
                for q in queries
            ]
            assert [f.result().token_ids for f in futures] == expected
    assert unchanged(cache, before)
