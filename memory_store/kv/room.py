"""Warm prefix caches with spare room, so a query appends in place instead of copying the whole prefix.

A transformers ``DynamicLayer`` appends with ``torch.cat``, which copies every key and value of the
prefix on each forward: for a 2k-token prefix that copy costs about as much as the attention itself.
:func:`with_spare_room` moves a cache's full-attention layers into buffers with ``room`` free token
slots after the prefix (one copy, at warm time). :func:`claim_view` then hands out a view whose layers
write new tokens into that room: the stored keys and values (the first ``n`` slots) are never written,
so the stored cache stays as it was. Only one view at a time holds the claim; other views (and any view
that runs out of room) append by copy, exactly like ``DynamicLayer``, so results never depend on it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import torch
from transformers import DynamicCache

from memory_store.kv.cache import shallow_copy

__all__ = ["SpareRoomLayer", "claim_view", "with_spare_room"]

logger = logging.getLogger(__name__)

try:
    from transformers.cache_utils import DynamicLayer
except ImportError:  # pragma: no cover - transformers < 4.56 has no layer objects
    DynamicLayer = None  # type: ignore[assignment,misc]

_Layer: Any = DynamicLayer if DynamicLayer is not None else object
"""The base of ``SpareRoomLayer``: transformers' ``DynamicLayer`` (``object`` where there is none, unused then)."""


def _noop() -> None:
    return None


class SpareRoomLayer(_Layer):  # type: ignore[misc]  # a base chosen at import time
    """A full-attention layer whose keys/values are views of buffers with free slots after them."""

    keys: torch.Tensor
    values: torch.Tensor
    _room_k: torch.Tensor
    _room_v: torch.Tensor
    _claim: threading.Lock
    _writer: bool

    def held_bytes(self) -> int:
        """Bytes of the buffers, room included (what the layer really holds)."""
        return int(self._room_k.nbytes + self._room_v.nbytes)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append in place when this view holds the claim and there is room; else append by copy."""
        if self._writer:
            start = int(self.keys.shape[-2])
            end = start + int(key_states.shape[-2])
            if end <= self._room_k.shape[-2] and self.keys.data_ptr() == self._room_k.data_ptr():
                self._room_k[..., start:end, :].copy_(key_states)
                self._room_v[..., start:end, :].copy_(value_states)
                self.keys = self._room_k[..., :end, :]
                self.values = self._room_v[..., :end, :]
                return self.keys, self.values
            self._writer = False  # out of room: from here on, copy like DynamicLayer
        return super().update(key_states, value_states, *args, **kwargs)  # type: ignore[no-any-return]


def with_spare_room(cache: Any, room: int) -> Any:
    """A cache equal to ``cache`` whose full-attention layers have ``room`` free token slots.

    Sliding-window layers are kept as they are. With ``room`` <= 0, or on transformers without layer
    objects, ``cache`` is returned unchanged.
    """
    layers = getattr(cache, "layers", None)
    if room <= 0 or layers is None or DynamicLayer is None:
        return cache
    claim = threading.Lock()
    new_layers: list[Any] = []
    for layer in layers:
        keys = getattr(layer, "keys", None)
        if (
            getattr(layer, "sliding_window", None) is not None
            or keys is None
            or type(layer)
            not in (
                DynamicLayer,
                SpareRoomLayer,
            )
        ):
            new_layers.append(layer)
            continue
        b, h, n, d = keys.shape
        room_k = keys.new_empty((b, h, n + room, d))
        room_v = layer.values.new_empty((b, h, n + room, layer.values.shape[-1]))
        room_k[..., :n, :].copy_(keys)
        room_v[..., :n, :].copy_(layer.values)
        moved = SpareRoomLayer()
        moved.dtype, moved.device, moved.is_initialized = keys.dtype, keys.device, True
        moved._room_k, moved._room_v, moved._claim, moved._writer = room_k, room_v, claim, False
        moved.keys, moved.values = room_k[..., :n, :], room_v[..., :n, :]
        new_layers.append(moved)
    out = DynamicCache()
    out.layers = new_layers
    return out


def claim_view(cache: Any) -> tuple[Any, Callable[[], None]]:
    """A shallow copy of ``cache`` for one forward/decode, and the function that releases it.

    When the cache has spare room and nobody else holds it, the copy appends into that room (no copy
    of the prefix); otherwise it appends by copy. Always call the release function when done.
    """
    view = shallow_copy(cache)
    layers = [layer for layer in getattr(view, "layers", []) if isinstance(layer, SpareRoomLayer)]
    if not layers or not layers[0]._claim.acquire(blocking=False):
        return view, _noop
    for layer in layers:
        layer._writer = True
    return view, layers[0]._claim.release
