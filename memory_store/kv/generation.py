"""Decoding on a warm prefix cache, and the prompt-injection path it must match token for token.

``generate_with_cache`` runs the model over the query tokens only, on a non-mutating view of the
stored prefix cache (a shallow copy, or a crop when the cache is longer than the prefix): the stored
keys and values are never copied or changed. A cache built with spare ``room`` lets the view append
in place instead of re-copying the prefix on every forward (``memory_store.kv.room``). ``generate_from_prompt`` is the fallback that puts the memories
in the prompt: one forward over prefix + query. Given the same token ids, greedy decoding gives the same
tokens on both paths. Works whether the model's forward names its cache ``past_key_values`` or ``cache``.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from transformers import DynamicCache

from memory_store.kv.cache import cache_length, cache_to, crop_cache
from memory_store.kv.room import claim_view, with_spare_room

__all__ = [
    "Generation",
    "build_prefix_cache",
    "forward_cache_kwarg",
    "generate_from_prompt",
    "generate_with_cache",
    "model_device",
    "new_cache",
    "prefill",
]

logger = logging.getLogger(__name__)

Query = str | Sequence[int] | torch.Tensor


@dataclass(frozen=True, slots=True)
class Generation:
    """Tokens a model produced, with the timing that matters for warm caches."""

    token_ids: tuple[int, ...]
    text: str
    prompt_tokens: int
    cached_tokens: int
    ttft_s: float
    total_s: float
    finish_reason: Literal["stop", "length"]


def _forward_params(model: Any) -> set[str]:
    return set(inspect.signature(model.forward).parameters)


def forward_cache_kwarg(model: Any) -> str:
    """Name of the forward argument that takes a cache: ``past_key_values`` (<= 5.x) or ``cache``."""
    params = _forward_params(model)
    for name in ("past_key_values", "cache"):
        if name in params:
            return name
    raise TypeError(f"{type(model).__name__}.forward takes no KV cache argument")


def _logits_kwargs(model: Any) -> dict[str, int]:
    params = _forward_params(model)
    if "logits_to_keep" in params:
        return {"logits_to_keep": 1}
    if "num_logits_to_keep" in params:  # pragma: no cover - transformers 4.4x
        return {"num_logits_to_keep": 1}
    return {}


def model_device(model: Any) -> torch.device:
    """Device of the model's parameters."""
    return next(model.parameters()).device  # type: ignore[no-any-return]


def new_cache(model: Any) -> Any:
    """An empty DynamicCache laid out for ``model`` (sliding-window layers where the model has them)."""
    try:
        return DynamicCache(config=model.config)
    except TypeError:  # pragma: no cover - older transformers
        return DynamicCache()


def _ids(tokenizer: Any, query: Query, device: torch.device) -> torch.Tensor:
    if isinstance(query, str):
        ids = tokenizer(query, add_special_tokens=False)["input_ids"]
        return torch.tensor([ids], dtype=torch.long, device=device)
    if isinstance(query, torch.Tensor):
        return (query if query.dim() == 2 else query.unsqueeze(0)).to(device=device, dtype=torch.long)
    return torch.tensor([list(query)], dtype=torch.long, device=device)


def prefill(model: Any, input_ids: torch.Tensor, cache: Any | None = None) -> tuple[torch.Tensor, Any]:
    """One forward over ``input_ids`` appended to ``cache`` (a new cache when None).

    Returns the last position's logits ``[batch, vocab]`` and the cache, which now also covers
    ``input_ids``. The cache object passed in is updated (give a shallow copy to keep the original).
    """
    cache = new_cache(model) if cache is None else cache
    kwargs: dict[str, Any] = {forward_cache_kwarg(model): cache, "use_cache": True, **_logits_kwargs(model)}
    with torch.no_grad():
        out = model(input_ids=input_ids, **kwargs)
    returned = getattr(out, "past_key_values", None) or getattr(out, "cache", None)
    return out.logits[:, -1, :], (returned if returned is not None else cache)


def build_prefix_cache(model: Any, prefix_ids: Sequence[int], *, room: int = 0) -> tuple[Any, float]:
    """The KV cache of ``prefix_ids`` (one forward) and the milliseconds it took.

    With ``room`` > 0 the cache keeps that many free token slots after the prefix, so queries on it
    append in place (see ``memory_store.kv.room``). Raises ValueError for an empty prefix.
    """
    if not prefix_ids:
        raise ValueError("cannot build a cache of an empty prefix")
    started = time.perf_counter()
    ids = torch.tensor([list(prefix_ids)], dtype=torch.long, device=model_device(model))
    _, cache = prefill(model, ids)
    cache = with_spare_room(cache, room)
    return cache, (time.perf_counter() - started) * 1000.0


def _no_release() -> None:
    return None


def _pick(
    logits: torch.Tensor,
    *,
    greedy: bool,
    temperature: float,
    top_k: int,
    top_p: float,
    generator: torch.Generator | None,
) -> int:
    if greedy or temperature <= 0.0:
        return int(torch.argmax(logits[0]).item())
    scores = logits[0].float() / temperature
    if 0 < top_k < scores.numel():
        kth = torch.topk(scores, top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if 0.0 < top_p < 1.0:
        ordered, index = torch.sort(scores, descending=True)
        cumulative = torch.softmax(ordered, dim=-1).cumsum(dim=-1)
        drop = cumulative - torch.softmax(ordered, dim=-1) > top_p
        scores = scores.scatter(0, index, ordered.masked_fill(drop, float("-inf")))
    probs = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator).item())


def _eos_ids(model: Any, tokenizer: Any, eos_token_ids: Sequence[int] | None) -> set[int]:
    if eos_token_ids is not None:
        return set(eos_token_ids)
    found: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            found.add(value)
        elif isinstance(value, list | tuple):
            found.update(int(v) for v in value)
    return found


def _decode(
    model: Any,
    tokenizer: Any,
    logits: torch.Tensor,
    cache: Any,
    *,
    started: float,
    prompt_tokens: int,
    cached_tokens: int,
    max_new_tokens: int,
    greedy: bool,
    temperature: float,
    top_k: int,
    top_p: float,
    eos_token_ids: Sequence[int] | None,
    generator: torch.Generator | None,
) -> Generation:
    stop = _eos_ids(model, tokenizer, eos_token_ids)
    device = model_device(model)
    produced: list[int] = []
    ttft = 0.0
    finish: Literal["stop", "length"] = "length"
    for step in range(max_new_tokens):
        token = _pick(
            logits, greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
        )
        if step == 0:
            ttft = time.perf_counter() - started
        if token in stop:
            finish = "stop"
            break
        produced.append(token)
        if step + 1 < max_new_tokens:
            logits, cache = prefill(model, torch.tensor([[token]], dtype=torch.long, device=device), cache)
    text = tokenizer.decode(produced, skip_special_tokens=True)
    return Generation(
        token_ids=tuple(produced),
        text=text,
        prompt_tokens=prompt_tokens,
        cached_tokens=cached_tokens,
        ttft_s=ttft,
        total_s=time.perf_counter() - started,
        finish_reason=finish,
    )


def generate_with_cache(
    model: Any,
    tokenizer: Any,
    prefix_cache: Any,
    prefix_len: int,
    query: Query,
    *,
    max_new_tokens: int = 32,
    greedy: bool = True,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_token_ids: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
) -> Generation:
    """Continue from a warm prefix cache covering ``prefix_len`` tokens with the ``query`` tokens.

    ``query`` is text (tokenized without special tokens), ids, or a ``[1, n]`` tensor. The stored cache
    is not modified: the model runs on a shallow copy (appending into the cache's spare room when it
    has some and no other call holds it), or on a crop when the cache holds more than ``prefix_len``
    tokens. Raises ValueError when the cache holds fewer than ``prefix_len`` tokens
    or the query is empty.
    """
    started = time.perf_counter()
    device = model_device(model)
    held = cache_length(prefix_cache)
    if held < prefix_len:
        raise ValueError(f"cache holds {held} tokens but the prefix has {prefix_len}")
    ids = _ids(tokenizer, query, device)
    if ids.shape[-1] == 0:
        raise ValueError("the query has no tokens")
    if held == prefix_len:
        view, release = claim_view(prefix_cache)
    else:
        view, release = crop_cache(prefix_cache, prefix_len), _no_release
    try:
        logits, cache = prefill(model, ids, cache_to(view, device))
        return _decode(
            model, tokenizer, logits, cache,
            started=started, prompt_tokens=prefix_len + int(ids.shape[-1]), cached_tokens=prefix_len,
            max_new_tokens=max_new_tokens, greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p,
            eos_token_ids=eos_token_ids, generator=generator,
        )  # fmt: skip
    finally:
        release()


def generate_from_prompt(
    model: Any,
    tokenizer: Any,
    prompt: Query,
    *,
    max_new_tokens: int = 32,
    greedy: bool = True,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_token_ids: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
) -> Generation:
    """Generate from the whole prompt with no warm cache (memories injected in the prompt).

    Raises ValueError for an empty prompt.
    """
    started = time.perf_counter()
    ids = _ids(tokenizer, prompt, model_device(model))
    if ids.shape[-1] == 0:
        raise ValueError("the prompt has no tokens")
    logits, cache = prefill(model, ids)
    return _decode(
        model, tokenizer, logits, cache,
        started=started, prompt_tokens=int(ids.shape[-1]), cached_tokens=0,
        max_new_tokens=max_new_tokens, greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p,
        eos_token_ids=eos_token_ids, generator=generator,
    )  # fmt: skip
