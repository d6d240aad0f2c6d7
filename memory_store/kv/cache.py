"""DynamicCache helpers: size, non-mutating copy and crop, concatenation and position-correct merges, safe files.

Works with the layered caches of transformers >= 4.56 (``cache.layers[i].keys`` / ``.values``, full and
sliding-window layers) and reads the older ``cache.key_cache`` / ``cache.value_cache`` lists.

Merges:

* :func:`concat_caches` joins each layer's keys and values along the sequence axis, as MemOS does. Every
  part keeps the rotary positions it was built with (each starts at 0), so the result is *not* the cache
  of the joined text; it is kept for MemOS compatibility and inspection.
* :func:`reposition_caches` also rotates each part's keys by its offset, so rotary positions run 0..n-1
  across the merged cache. Layer 0 then equals the cache of the joined tokens exactly; deeper layers still
  lack attention across parts. Chat does not use it: it uses a cache built from the composed text
  (see ``memos.memories.activation.kv``), which equals prompt injection exactly.

Files: :func:`save_caches` writes one safetensors file of tensors and returns a JSON-able layout;
:func:`load_caches` rebuilds the caches from both. Nothing is pickled.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import DynamicCache

__all__ = [
    "cache_bytes",
    "cache_from_layers",
    "cache_length",
    "cache_to",
    "concat_caches",
    "crop_cache",
    "layer_tensors",
    "load_caches",
    "reposition_caches",
    "rotate_keys",
    "save_caches",
    "shallow_copy",
]

logger = logging.getLogger(__name__)

try:  # transformers >= 4.56: caches are lists of layer objects
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    _LAYERED = True
except ImportError:  # pragma: no cover - older transformers
    _LAYERED = False

LayerKV = tuple[torch.Tensor, torch.Tensor]


def _layers(cache: Any) -> list[Any] | None:
    layers = getattr(cache, "layers", None)
    return list(layers) if layers is not None else None


def layer_tensors(cache: Any) -> list[LayerKV]:
    """Keys and values of every initialised layer, shaped ``[batch, heads, seq, head_dim]``."""
    layers = _layers(cache)
    if layers is not None:
        out: list[LayerKV] = []
        for layer in layers:
            keys = getattr(layer, "keys", None)
            values = getattr(layer, "values", None)
            if keys is None:  # some 4.5x releases named them per layer
                keys, values = getattr(layer, "key_cache", None), getattr(layer, "value_cache", None)
            if keys is not None and values is not None:
                out.append((keys, values))
        return out
    if hasattr(cache, "key_cache") and hasattr(cache, "value_cache"):
        return [(k, v) for k, v in zip(cache.key_cache, cache.value_cache, strict=True) if k is not None]
    raise TypeError(f"not a KV cache: {type(cache).__name__!r}")


def cache_bytes(cache: Any) -> int:
    """Bytes the cache holds: its key and value tensors, plus any spare room layers keep after them."""
    layers = _layers(cache)
    if layers is not None and any(hasattr(layer, "held_bytes") for layer in layers):
        total = 0
        for layer in layers:
            if hasattr(layer, "held_bytes"):
                total += int(layer.held_bytes())
            elif getattr(layer, "keys", None) is not None:
                total += layer.keys.nelement() * layer.keys.element_size()
                total += layer.values.nelement() * layer.values.element_size()
        return total
    return sum(
        k.nelement() * k.element_size() + v.nelement() * v.element_size() for k, v in layer_tensors(cache)
    )


def cache_length(cache: Any) -> int:
    """Tokens the cache covers (sliding-window layers count every token seen, not only the window)."""
    layers = _layers(cache)
    if layers is not None:
        lengths = [int(layer.get_seq_length()) for layer in layers if getattr(layer, "is_initialized", True)]
        return max(lengths, default=0)
    kvs = layer_tensors(cache)
    return int(kvs[0][0].shape[-2]) if kvs else 0


def _layer_info(layer: Any) -> dict[str, Any]:
    window = getattr(layer, "sliding_window", None)
    if window is not None:
        return {"type": "sliding", "sliding_window": int(window), "seen": int(layer.get_seq_length())}
    return {"type": "full"}


def _make_layer(keys: torch.Tensor, values: torch.Tensor, info: Mapping[str, Any]) -> Any:
    """A cache layer holding these tensors as they are (no copy)."""
    layer: Any
    if info.get("type") == "sliding":
        layer = DynamicSlidingWindowLayer(sliding_window=int(info["sliding_window"]))
        layer.cumulative_length = int(info.get("seen", keys.shape[-2]))
        layer._sliding_window_tensor = layer._sliding_window_tensor.to(keys.device)
    else:
        layer = DynamicLayer()  # type: ignore[no-untyped-call]
    layer.dtype, layer.device = keys.dtype, keys.device
    layer.keys, layer.values = keys, values
    layer.is_initialized = True
    return layer


def cache_from_layers(
    kvs: Sequence[LayerKV], infos: Sequence[Mapping[str, Any]] | None = None
) -> DynamicCache:
    """A DynamicCache over these per-layer tensors, shared rather than copied.

    ``infos`` gives each layer's kind (``{"type": "full"}`` or ``{"type": "sliding", "sliding_window":
    w, "seen": n}``); full layers are assumed when it is left out.
    """
    if infos is not None and len(infos) != len(kvs):
        raise ValueError(f"{len(kvs)} layers but {len(infos)} layer descriptions")
    if not _LAYERED:  # pragma: no cover - older transformers
        legacy: Any = DynamicCache
        return legacy.from_legacy_cache(tuple((k, v) for k, v in kvs))  # type: ignore[no-any-return]
    cache = DynamicCache()
    cache.layers = [
        _make_layer(k, v, infos[i] if infos is not None else {"type": "full"}) for i, (k, v) in enumerate(kvs)
    ]
    return cache


def shallow_copy(cache: Any) -> Any:
    """A new cache object sharing the tensors of ``cache``.

    A forward pass given the copy replaces the copy's tensors (``torch.cat`` makes new ones) and never
    writes into the shared ones, so the original stays as it was. This costs no tensor copy at all.
    """
    new = copy.copy(cache)
    layers = _layers(cache)
    if layers is not None:
        new.layers = [copy.copy(layer) for layer in layers]
    else:  # pragma: no cover - older transformers
        new.key_cache = list(cache.key_cache)
        new.value_cache = list(cache.value_cache)
    return new


def cache_to(cache: Any, device: str | torch.device) -> Any:
    """``cache`` itself when its tensors are on ``device``; otherwise a copy moved there."""
    target = torch.device(device)
    kvs = layer_tensors(cache)
    if all(k.device == target and v.device == target for k, v in kvs):
        return cache
    layers = _layers(cache)
    infos = [_layer_info(layer) for layer in layers] if layers is not None else None
    return cache_from_layers([(k.to(target), v.to(target)) for k, v in kvs], infos)


def crop_cache(cache: Any, length: int) -> Any:
    """A shallow copy of ``cache`` cut to its first ``length`` tokens (tensor views; the original is kept).

    Raises ValueError when ``length`` is negative or a sliding-window layer has already dropped tokens
    that the cut would need.
    """
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length!r}")
    new = shallow_copy(cache)
    layers = _layers(new)
    if layers is None:  # pragma: no cover - older transformers
        new.key_cache = [k[..., :length, :] for k in new.key_cache]
        new.value_cache = [v[..., :length, :] for v in new.value_cache]
        return new
    for layer in layers:
        if getattr(layer, "keys", None) is None:
            continue
        seen = int(layer.get_seq_length())
        if length >= seen:
            continue
        window = getattr(layer, "sliding_window", None)
        if window is not None:
            held = int(layer.keys.shape[-2])
            if held < seen:
                raise ValueError(f"cannot crop a sliding-window layer that saw {seen} tokens to {length}")
            layer.cumulative_length = length
        layer.keys = layer.keys[..., :length, :]
        layer.values = layer.values[..., :length, :]
    return new


def _merged_infos(caches: Sequence[Any], total: int) -> list[dict[str, Any]] | None:
    layers = _layers(caches[0])
    if layers is None:
        return None
    infos = [_layer_info(layer) for layer in layers]
    for info in infos:
        if info["type"] == "sliding":
            info["seen"] = total
    return infos


def _join(parts: Sequence[Sequence[LayerKV]], infos: list[dict[str, Any]] | None) -> DynamicCache:
    counts = {len(p) for p in parts}
    if len(counts) != 1:
        raise ValueError(f"caches have different layer counts: {sorted(counts)!r}")
    joined: list[LayerKV] = []
    for i in range(counts.pop()):
        keys = torch.cat([p[i][0] for p in parts], dim=-2)
        values = torch.cat([p[i][1] for p in parts], dim=-2)
        if infos is not None and infos[i]["type"] == "sliding":
            keep = int(infos[i]["sliding_window"]) - 1
            keys, values = keys[..., -keep:, :], values[..., -keep:, :]
        joined.append((keys, values))
    return cache_from_layers(joined, infos)


def concat_caches(caches: Sequence[Any]) -> DynamicCache:
    """MemOS merge: each layer's keys and values joined along the sequence axis, positions untouched.

    Always returns a new cache (one cache in gives a copy), so a stored cache is never handed out.
    Raises ValueError on an empty list or caches of different depth.
    """
    if not caches:
        raise ValueError("need at least one cache to merge")
    total = sum(cache_length(c) for c in caches)
    return _join([layer_tensors(c) for c in caches], _merged_infos(caches, total))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotate_keys(keys: torch.Tensor, offset: int, inv_freq: torch.Tensor) -> torch.Tensor:
    """Keys rotated ``offset`` positions further, for rotary embeddings in the rotate-half layout.

    Rotary embeddings are rotations, ``R(p + o) = R(o) R(p)``, so rotating a stored key by ``R(o)``
    gives the key it would have had at position ``p + o``. Not valid for dynamic (length-dependent) RoPE
    or interleaved (GPT-J) layouts.
    """
    if offset == 0:
        return keys
    freqs = float(offset) * inv_freq.to(device=keys.device, dtype=torch.float64)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos().to(torch.float32), emb.sin().to(torch.float32)
    k = keys.to(torch.float32)
    return (k * cos + _rotate_half(k) * sin).to(keys.dtype)


def reposition_caches(caches: Sequence[Any], inv_freqs: Sequence[torch.Tensor]) -> DynamicCache:
    """Join caches with rotary positions made continuous: part i's keys move by the lengths before it.

    ``inv_freqs`` holds each layer's rotary inverse frequencies (one tensor per layer). The merged
    cache has correct positions but no attention across parts beyond layer 0 (see the module doc).
    Raises ValueError on an empty list, mismatched depths, or a sliding layer that dropped tokens.
    """
    if not caches:
        raise ValueError("need at least one cache to merge")
    parts: list[list[LayerKV]] = []
    offset = 0
    for cache in caches:
        kvs = layer_tensors(cache)
        if len(kvs) != len(inv_freqs):
            raise ValueError(f"cache has {len(kvs)} layers but {len(inv_freqs)} rotary tables were given")
        length = cache_length(cache)
        if any(int(k.shape[-2]) != length for k, _ in kvs):
            raise ValueError("cannot reposition a cache whose sliding-window layers dropped tokens")
        parts.append([(rotate_keys(k, offset, inv_freqs[i]), v) for i, (k, v) in enumerate(kvs)])
        offset += length
    return _join(parts, _merged_infos(caches, offset))


def _owned(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous().clone()


def save_caches(path: str | Path, caches: Mapping[str, Any]) -> dict[str, Any]:
    """Write the tensors of ``caches`` (name -> cache) to one safetensors file; return their layout.

    The layout (JSON-able: per cache its layer kinds and length) is what :func:`load_caches` needs
    besides the file. Names must not contain ``/``. The file is written whole or not at all.
    """
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, Any] = {}
    for name, cache in caches.items():
        if "/" in name:
            raise ValueError(f"cache name may not contain '/': {name!r}")
        kvs = layer_tensors(cache)
        layers = _layers(cache)
        infos = (
            [_layer_info(layer) for layer in layers] if layers is not None else [{"type": "full"}] * len(kvs)
        )
        for i, (k, v) in enumerate(kvs):
            tensors[f"{name}/{i}/k"] = _owned(k)
            tensors[f"{name}/{i}/v"] = _owned(v)
        layout[name] = {"layers": infos[: len(kvs)], "length": cache_length(cache)}
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(target)
    return layout


def load_caches(
    path: str | Path, layout: Mapping[str, Any], *, device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read caches written by :func:`save_caches` onto ``device``.

    Raises FileNotFoundError when the file is missing and KeyError when the layout names a tensor the
    file lacks.
    """
    tensors = load_file(str(path), device=str(device))
    out: dict[str, Any] = {}
    for name, spec in layout.items():
        infos = spec["layers"]
        kvs = [(tensors[f"{name}/{i}/k"], tensors[f"{name}/{i}/v"]) for i in range(len(infos))]
        out[name] = cache_from_layers(kvs, infos)
    return out
