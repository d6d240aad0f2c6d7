"""DynamicCache helpers on real caches of a tiny Llama: sizes, non-mutating views, merges, safe files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import DynamicCache

from memory_store.kv.cache import (
    cache_bytes,
    cache_from_layers,
    cache_length,
    concat_caches,
    crop_cache,
    layer_tensors,
    load_caches,
    reposition_caches,
    save_caches,
    shallow_copy,
)
from memory_store.kv.generation import build_prefix_cache, prefill

IDS_A = [5, 17, 99, 230, 41, 8, 77]
IDS_B = [300, 12, 64, 128, 9]


def seed_cache_info(cache: Any) -> dict[str, Any] | None:
    """``get_cache_info`` exactly as seed Example 4 writes it."""
    if not cache:
        return None
    num_layers = 0
    total_size_bytes = 0
    if hasattr(cache, "layers"):
        num_layers = len(cache.layers)
        for layer in cache.layers:
            if hasattr(layer, "key_cache") and layer.key_cache is not None:
                total_size_bytes += layer.key_cache.nelement() * layer.key_cache.element_size()
            if hasattr(layer, "value_cache") and layer.value_cache is not None:
                total_size_bytes += layer.value_cache.nelement() * layer.value_cache.element_size()
            if hasattr(layer, "keys") and layer.keys is not None:
                total_size_bytes += layer.keys.nelement() * layer.keys.element_size()
            if hasattr(layer, "values") and layer.values is not None:
                total_size_bytes += layer.values.nelement() * layer.values.element_size()
    elif hasattr(cache, "key_cache") and hasattr(cache, "value_cache"):
        num_layers = len(cache.key_cache)
        for k, v in zip(cache.key_cache, cache.value_cache, strict=False):
            if k is not None:
                total_size_bytes += k.nelement() * k.element_size()
            if v is not None:
                total_size_bytes += v.nelement() * v.element_size()
    return {"num_layers": num_layers, "size_bytes": total_size_bytes}


def build(model: Any, ids: list[int]) -> Any:
    cache, _ = build_prefix_cache(model, ids)
    return cache


def snapshot(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(k.clone(), v.clone()) for k, v in layer_tensors(cache)]


def assert_same(cache: Any, snap: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    kvs = layer_tensors(cache)
    assert len(kvs) == len(snap)
    for (k, v), (k0, v0) in zip(kvs, snap, strict=True):
        assert torch.equal(k, k0) and torch.equal(v, v0)


def test_bytes_length_and_the_seed_cache_info_agree(tiny_llama: tuple[Any, Any]) -> None:
    model, _ = tiny_llama
    cache = build(model, IDS_A)
    config = model.config
    head_dim = config.hidden_size // config.num_attention_heads
    expected = config.num_hidden_layers * 2 * config.num_key_value_heads * len(IDS_A) * head_dim * 4
    assert cache_length(cache) == len(IDS_A)
    assert cache_bytes(cache) == expected
    assert seed_cache_info(cache) == {"num_layers": config.num_hidden_layers, "size_bytes": expected}


def test_a_forward_on_a_shallow_copy_leaves_the_original_unchanged(tiny_llama: tuple[Any, Any]) -> None:
    model, _ = tiny_llama
    cache = build(model, IDS_A)
    before = snapshot(cache)
    view = shallow_copy(cache)
    assert view is not cache and view.layers[0] is not cache.layers[0]
    assert view.layers[0].keys is cache.layers[0].keys  # no tensor copied
    prefill(model, torch.tensor([IDS_B]), view)
    assert cache_length(view) == len(IDS_A) + len(IDS_B)
    assert cache_length(cache) == len(IDS_A)
    assert_same(cache, before)


def test_crop_is_a_view_equal_to_the_cache_of_the_shorter_prefix(tiny_llama: tuple[Any, Any]) -> None:
    model, _ = tiny_llama
    full = build(model, IDS_A + IDS_B)
    before = snapshot(full)
    cropped = crop_cache(full, len(IDS_A))
    assert cache_length(cropped) == len(IDS_A)
    reference = build(model, IDS_A)
    for (k, v), (rk, rv) in zip(layer_tensors(cropped), layer_tensors(reference), strict=True):
        assert torch.allclose(k, rk, atol=1e-5) and torch.allclose(v, rv, atol=1e-5)
    assert_same(full, before)
    with pytest.raises(ValueError):
        crop_cache(full, -1)


def test_concat_joins_layers_keeping_each_parts_positions(tiny_llama: tuple[Any, Any]) -> None:
    model, _ = tiny_llama
    a, b = build(model, IDS_A), build(model, IDS_B)
    merged = concat_caches([a, b])
    assert isinstance(merged, DynamicCache)
    assert cache_length(merged) == len(IDS_A) + len(IDS_B)
    assert cache_bytes(merged) == cache_bytes(a) + cache_bytes(b)
    k0 = layer_tensors(merged)[0][0]
    assert torch.equal(k0[..., len(IDS_A) :, :], layer_tensors(b)[0][0])
    single = concat_caches([a])
    assert single is not a and single.layers[0].keys.data_ptr() != a.layers[0].keys.data_ptr()
    with pytest.raises(ValueError):
        concat_caches([])


def test_reposition_gives_the_joint_caches_layer_zero(tiny_llama: tuple[Any, Any]) -> None:
    """Layer 0 depends only on each token and its position, so RoPE-shifted keys must match exactly."""
    model, _ = tiny_llama
    a, b = build(model, IDS_A), build(model, IDS_B)
    joint = build(model, IDS_A + IDS_B)
    inv = [model.model.rotary_emb.inv_freq] * model.config.num_hidden_layers
    moved = reposition_caches([a, b], inv)
    (mk, mv), (jk, jv) = layer_tensors(moved)[0], layer_tensors(joint)[0]
    assert torch.allclose(mk, jk, atol=1e-5)
    assert torch.allclose(mv, jv, atol=1e-5)
    naive = layer_tensors(concat_caches([a, b]))[0][0]
    assert not torch.allclose(naive[..., len(IDS_A) :, :], jk[..., len(IDS_A) :, :], atol=1e-3)
    with pytest.raises(ValueError):
        reposition_caches([a], inv[:1])


def test_save_and_load_round_trip_through_safetensors_and_json(
    tiny_llama: tuple[Any, Any], tmp_path: Path
) -> None:
    model, _ = tiny_llama
    caches = {"one": build(model, IDS_A), "two": build(model, IDS_B)}
    path = tmp_path / "caches.safetensors"
    layout = save_caches(path, caches)
    raw = path.read_bytes()
    assert raw[8:9] == b"{"  # safetensors: 8-byte header length, then a JSON header; no pickle
    loaded = load_caches(path, layout)
    for name, cache in caches.items():
        assert isinstance(loaded[name], DynamicCache)
        assert cache_length(loaded[name]) == cache_length(cache)
        assert_same(loaded[name], snapshot(cache))
    with pytest.raises(ValueError):
        save_caches(tmp_path / "bad.safetensors", {"a/b": caches["one"]})


def test_sliding_window_layers_keep_their_kind_and_refuse_impossible_crops(tmp_path: Path) -> None:
    k = torch.randn(1, 1, 3, 4)
    full = (torch.randn(1, 1, 10, 4), torch.randn(1, 1, 10, 4))
    cache = cache_from_layers(
        [full, (k, k.clone())], [{"type": "full"}, {"type": "sliding", "sliding_window": 4, "seen": 10}]
    )
    assert cache_length(cache) == 10
    layout = save_caches(tmp_path / "s.safetensors", {"s": cache})
    loaded = load_caches(tmp_path / "s.safetensors", layout)["s"]
    assert loaded.layers[1].sliding_window == 4 and loaded.layers[1].get_seq_length() == 10
    with pytest.raises(ValueError):
        crop_cache(loaded, 5)


def test_layer_tensors_rejects_what_is_not_a_cache() -> None:
    with pytest.raises(TypeError):
        layer_tensors(object())
