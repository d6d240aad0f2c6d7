"""Chat with memories: the core MOS.chat and the in-process ``chat_complete`` share.

A local transformers model answers with the memories as a system-message prefix. When the runtime's
kv-warmer keeps a warm cache of the cube for the same model (``Runtime.warm_cache``), or else the cube's
activation memory (``KVCacheMemory``) holds caches built by the same model, that warm prefix cache is
decoded on directly (``generate_with_memories(prefix=...)``: the query tokens only are run), and
retrieved memories the cache does not hold go in the user turn. Otherwise, or with an OpenAI-compatible
endpoint, the memories go in the prompt. Local models load offline (``tiny://llama`` is random weights:
its answers are gibberish, as expected) and are loaded once per process and configuration.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from memory_store.llm import ChatModel, chat_model_from_url
from memos.configs.llm import HFLLMConfig, LLMConfigFactory, OllamaLLMConfig, OpenAILLMConfig, VLLMLLMConfig
from processors.kv_warmer import compose_memory_text
from schemas.errors import ConfigError

if TYPE_CHECKING:
    from memory_store.llm.huggingface import HuggingFaceChatModel
    from memos.api.product_models import APIChatCompleteRequest
    from memos.client import SyncClient
    from memos.memories.activation.kv import KVCacheMemory

__all__ = ["BASE_PROMPT", "ChatModel", "answer", "chat_model_for", "generate_answer", "local_model", "model_from_name"]

logger = logging.getLogger(__name__)

BASE_PROMPT = (
    "You are a knowledgeable and helpful AI assistant. Use the memories to understand the user's context, "
    "preferences and past interactions, and refer to them naturally when relevant."
)
"""System prompt of prompt-injected chats (MemOS's base prompt, shortened)."""

_models: dict[str, HuggingFaceChatModel] = {}
_remote: dict[str, ChatModel] = {}
_lock = threading.Lock()


def local_model(config: HFLLMConfig) -> HuggingFaceChatModel:
    """The local model for ``config``, loaded once per process (shared by chat and KV memories)."""
    from memos.memories.activation.kv import huggingface_model_from_config

    key = config.model_dump_json()
    with _lock:
        model = _models.get(key)
        if model is None:
            model = huggingface_model_from_config(config)
            _models[key] = model
        return model


def _remote_model(url: str, api_key: str | None) -> ChatModel:
    with _lock:
        model = _remote.get(url)
        if model is None:
            model = chat_model_from_url(url, api_key=api_key)
            _remote[url] = model
        return model


def chat_model_for(factory: LLMConfigFactory) -> ChatModel:
    """The chat model a MOSConfig ``chat_model`` section names. Raises ConfigError."""
    config = factory.config
    if isinstance(config, HFLLMConfig):
        return local_model(config)
    if isinstance(config, OpenAILLMConfig | VLLMLLMConfig):
        return _remote_model(
            f"openai+{config.api_base.rstrip('/')}?model={config.model_name_or_path}", config.api_key or None
        )
    if isinstance(config, OllamaLLMConfig):
        return _remote_model(
            f"openai+{config.api_base.rstrip('/')}/v1?model={config.model_name_or_path}", None
        )
    raise ConfigError(f"chat backend {factory.backend!r} is not supported")


def model_from_name(name: str, *, max_tokens: int = 256) -> ChatModel:
    """A chat model from a URL (``openai+http://...``) or a local model name (``tiny://llama``, a folder)."""
    if "://" in name and not name.startswith(("tiny://", "bundled://", "hf://", "huggingface://")):
        return _remote_model(name, None)
    path = name.removeprefix("hf://").removeprefix("huggingface://")
    return local_model(HFLLMConfig(model_name_or_path=path, max_tokens=max_tokens, temperature=0.0))


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping) and p.get("text"))
    return "" if content is None else str(content)


def _cached_texts(kv: KVCacheMemory) -> list[str]:
    texts: list[str] = []
    for item in kv.get_all():
        for text in item.records.text_memories or [item.records.composed_text_memory]:
            if text and text not in texts:
                texts.append(text)
    return texts


def _local_answer(
    model: HuggingFaceChatModel,
    query: str,
    memories: Sequence[str],
    messages: list[dict[str, Any]],
    *,
    system_prompt: str | None,
    warm: KVCacheMemory | None,
    cube_id: str | None,
    max_tokens: int | None,
    temperature: float | None,
    runtime_warm: Any = None,
) -> str:
    from memory_store.llm.huggingface import PrefixCache

    cached = _cached_texts(warm) if warm is not None and warm.llm.model_id == model.model_id else []
    if runtime_warm is not None:  # the kv-warmer's cache of this cube and model wins over act_mem
        cached = list(runtime_warm.texts)
    if cached:
        extra = [m for m in memories if m not in cached]
        turn = query
        if extra:
            turn = "Other relevant memories:\n" + "\n".join(f"- {m}" for m in extra) + f"\n\n{query}"
        if runtime_warm is not None:
            prefix = runtime_warm.prefix_cache()
        else:
            assert warm is not None
            entry, _ = warm.warm(cached, cube_id=cube_id)
            prefix = PrefixCache(entry.cache, entry.prefix_ids, entry.prefix_text, entry.build_ms)
        out = model.generate_with_memories(
            compose_memory_text(cached),
            [*messages, {"role": "user", "content": turn}],
            prefix=prefix,
            max_new_tokens=max_tokens,
            temperature=temperature,
        )
        logger.info(
            "chat path=warm_cache source=%s model=%s cached_tokens=%d memories=%d extra=%d ttft_ms=%.1f",
            "kv-warmer" if runtime_warm is not None else "act_mem", model.model_id, out.cached_tokens,
            len(cached), len(extra), out.ttft_s * 1000,
        )  # fmt: skip
        return model.finish_text(out.text)
    messages = [*messages, {"role": "user", "content": query}]
    context = "\n\n".join(p for p in (system_prompt, compose_memory_text(memories) if memories else "") if p)
    if context:
        out = model.generate_with_memories(
            context, messages, max_new_tokens=max_tokens, temperature=temperature
        )
    else:
        out = model.generate(messages, max_new_tokens=max_tokens, temperature=temperature)
    logger.info("chat path=prompt model=%s memories=%d", model.model_id, len(memories))
    return model.finish_text(out.text)


def generate_answer(
    model: ChatModel,
    query: str,
    memories: Sequence[str],
    *,
    client: SyncClient,
    history: Sequence[Mapping[str, Any]] = (),
    system_prompt: str | None = None,
    warm: KVCacheMemory | None = None,
    cube_id: str | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
) -> str:
    """Answer ``query`` with ``memories`` as context; see the module doc for the warm-cache path.

    A warm cache is used only when ``model`` is a local model with the same id as the cache's model:
    the runtime's kv-warmer cache of ``cube_id`` first (``Runtime.warm_cache``), else ``warm``.
    """
    messages = [{"role": str(m.get("role", "user")), "content": _text(m.get("content"))} for m in history]
    if hasattr(model, "generate_with_memories"):  # a local transformers model (torch is imported then)
        local = cast("HuggingFaceChatModel", model)
        runtime_warm = client.runtime.warm_cache(cube_id, local.model_id) if cube_id is not None else None
        return _local_answer(
            local, query, memories, messages, system_prompt=system_prompt, warm=warm, cube_id=cube_id,
            max_tokens=max_tokens, temperature=temperature, runtime_warm=runtime_warm,
        )  # fmt: skip
    system = system_prompt or BASE_PROMPT
    if memories:
        system += "\n\n## Memories:\n" + "\n".join(f"{n}. {m}" for n, m in enumerate(memories, 1))
    completion = client.call(
        model.complete(
            [{"role": "system", "content": system}, *messages, {"role": "user", "content": query}],
            max_tokens=max_tokens or 1024,
            temperature=temperature or 0.0,
        )
    )
    return completion.text


def _request_model(client: SyncClient, req: APIChatCompleteRequest) -> ChatModel:
    if req.model_name_or_path:
        return model_from_name(req.model_name_or_path, max_tokens=req.max_tokens or 256)
    if client.runtime.llm is not None:
        chat: ChatModel = client.runtime.llm
        return chat
    logger.info("chat model=%s (no llm_url configured: local model)", client.settings.kv.model)
    return model_from_name(client.settings.kv.model, max_tokens=req.max_tokens or 256)


def answer(client: SyncClient, req: APIChatCompleteRequest) -> str:
    """``chat_complete``: search the readable cubes, answer, and (``add_message_on_answer``) record the turn."""
    service = client.service
    cubes = list(dict.fromkeys(req.readable_cube_ids or []))
    writable = list(dict.fromkeys(req.writable_cube_ids or []))
    client.call(service.check_chat(req.user_id, cubes, writable, record=req.add_message_on_answer))
    memories: list[str] = client.call(service.chat_context(
        req.user_id, cubes, req.query, top_k=req.top_k, mode=str(req.mode), session_id=req.session_id,
        include_preference=req.include_preference, pref_top_k=req.pref_top_k, filter=req.filter,
        relativity=min(req.relativity, 1.0),
    ))  # fmt: skip
    model = _request_model(client, req)
    text = generate_answer(
        model,
        req.query,
        memories,
        client=client,
        history=req.history or [],
        system_prompt=req.system_prompt,
        max_tokens=req.max_tokens,
        temperature=req.temperature,
    )
    if req.add_message_on_answer and writable:
        client.call(service.record_turn(req.user_id, writable, req.query, text,
                                        session_id=req.session_id or "default_session", origin="local"))
    return text
