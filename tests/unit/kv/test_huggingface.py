"""The local transformers ChatModel: offline resolution, clear errors, completions, memory prompts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from memory_store.llm.base import ChatCompletion, ChatModel
from memory_store.llm.huggingface import HuggingFaceChatModel, resolve_model_path, strip_think
from processors.kv_warmer import compose_memory_text
from schemas.errors import ConfigError

MEMORIES = compose_memory_text(["I like football.", "The secret code word is PINEAPPLE."])


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> HuggingFaceChatModel:
    from memory_store.kv.tiny import make_tiny_model

    path = make_tiny_model(tmp_path_factory.mktemp("hf") / "tiny", layers=2, hidden=64)
    return HuggingFaceChatModel(str(path), max_tokens=16)


def test_a_model_that_is_not_available_locally_is_a_clear_config_error(memos_home: Path) -> None:
    with pytest.raises(ConfigError) as info:
        HuggingFaceChatModel("Qwen/Qwen3-0.6B-not-downloaded")
    message = str(info.value)
    assert "'Qwen/Qwen3-0.6B-not-downloaded'" in message
    assert "not available locally" in message and "memos models make-tiny DIR" in message
    with pytest.raises(ConfigError, match="unknown tiny model"):
        resolve_model_path("tiny://gpt9")
    with pytest.raises(ConfigError, match="unknown bundled model"):
        resolve_model_path("bundled://nothing")
    (memos_home / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_model_path(str(memos_home / "empty"))


def test_tiny_scheme_creates_the_model_under_memos_home_once(memos_home: Path) -> None:
    first = HuggingFaceChatModel("tiny://qwen2", max_tokens=4)
    folder = memos_home / "models" / "tiny-qwen2"
    assert resolve_model_path("tiny://qwen2") == str(folder)
    assert first.model.config.model_type == "qwen2"
    assert first.model_id == "tiny://qwen2"
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    HuggingFaceChatModel("tiny://qwen2")
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_device_and_dtype_are_chosen_automatically(llm: HuggingFaceChatModel) -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert llm.device.type == expected
    assert llm.model.dtype == (torch.float32 if expected == "cpu" else llm.dtype)


async def test_complete_returns_a_chat_completion(llm: HuggingFaceChatModel) -> None:
    assert isinstance(llm, ChatModel) and not llm.supports_vision
    messages = [{"role": "user", "content": [{"type": "text", "text": "Tell me a joke."}]}]
    out = await llm.complete(messages, max_tokens=5)
    assert isinstance(out, ChatCompletion)
    assert out.model_id == llm.model_id
    assert 0 < out.completion_tokens <= 5
    assert out.prompt_tokens == len(llm.encode(llm.render(messages)))
    assert out.latency_ms > 0
    capped = await llm.complete(messages, max_tokens=1000)
    assert capped.completion_tokens <= llm.max_tokens
    again = await llm.complete(messages, max_tokens=5)
    assert again.text == out.text  # greedy by default


def test_think_blocks_are_removed_only_when_asked(llm: HuggingFaceChatModel) -> None:
    assert strip_think("<think>\nplan\n</think>\n\nThe answer.") == "The answer."
    assert strip_think("No thinking here.") == "No thinking here."
    assert llm.finish_text("<think>x</think>y") == "<think>x</think>y"


def test_the_memory_prefix_does_not_depend_on_the_query(llm: HuggingFaceChatModel) -> None:
    first = [{"role": "user", "content": "What is the code word?"}]
    second = [{"role": "user", "content": "Something else"}, {"role": "assistant", "content": "ok"}]
    prefix_a, suffix_a = llm.split_memory_prompt(MEMORIES, first)
    prefix_b, _ = llm.split_memory_prompt(MEMORIES, second)
    assert prefix_a == prefix_b and prefix_a.endswith(MEMORIES)
    assert prefix_a + suffix_a == llm.render([{"role": "system", "content": MEMORIES}, *first])


def test_answers_on_the_warm_cache_equal_answers_with_memories_in_the_prompt(
    llm: HuggingFaceChatModel,
) -> None:
    warm = llm.build_memory_cache(MEMORIES)
    for question in ("What is the secret code word?", "Do I like football?"):
        messages = [{"role": "user", "content": question}]
        with_cache = llm.generate_with_memories(MEMORIES, messages, prefix=warm)
        in_prompt = llm.generate_with_memories(MEMORIES, messages)
        assert with_cache.token_ids == in_prompt.token_ids and len(with_cache.token_ids) > 0
        assert with_cache.cached_tokens == len(warm.prefix_ids) > 0
    other = llm.build_memory_cache(compose_memory_text(["Something else."]))
    with pytest.raises(ValueError, match="other memories"):
        llm.generate_with_memories(MEMORIES, [{"role": "user", "content": "?"}], prefix=other)


def test_rotary_tables_cover_every_layer(llm: HuggingFaceChatModel) -> None:
    tables = llm.rotary_inv_freqs()
    assert tables is not None and len(tables) == llm.model.config.num_hidden_layers
    head_dim = llm.model.config.hidden_size // llm.model.config.num_attention_heads
    assert tables[0].shape == (head_dim // 2,)
