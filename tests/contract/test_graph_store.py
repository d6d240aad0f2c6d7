"""GraphStore contract on the embedded (SQLite) adapter, plus what only the embedded adapter promises."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from memory_store.embedded import EmbeddedGraphStore, sqlite_path
from memory_store.registry import (
    GRAPH_STORES,
    KEYWORD_INDEXES,
    VECTOR_STORES,
    graph_store_from_url,
    keyword_index_from_url,
    vector_store_from_url,
)
from schemas.errors import ConfigError, StoreError
from schemas.ops import DropCube, UpsertMemory
from tests.contract.graph_contract import GraphStoreContract, make_memory, position


@pytest.fixture
async def graph_store(tmp_path: Path) -> AsyncIterator[EmbeddedGraphStore]:
    store = graph_store_from_url(f"sqlite:///{tmp_path / 'store.db'}")
    assert isinstance(store, EmbeddedGraphStore)
    async with store:
        yield store


class TestEmbeddedGraphStore(GraphStoreContract):
    """The contract on SQLite."""


async def test_state_and_checkpoint_survive_a_restart(tmp_path: Path, unique: str) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    record = make_memory(f"c-{unique}", f"m-{unique}")
    async with EmbeddedGraphStore(url) as store:
        assert await store.apply([UpsertMemory(memory=record)], position(unique, 4))
    async with EmbeddedGraphStore(url) as store:
        assert await store.get([record.id]) == [record]
        assert await store.checkpoint(position(unique, 0).topic, 0) == 4
        assert not await store.apply([UpsertMemory(memory=record)], position(unique, 4))


async def test_a_record_changed_by_another_writer_is_read_fresh(tmp_path: Path, unique: str) -> None:
    # the reader keeps decoded records for repeated searches; a write through another connection (as a
    # worker process would make) must still be seen on the next read
    url = f"sqlite:///{tmp_path / 'g.db'}"
    record = make_memory(f"c-{unique}", f"m-{unique}")
    async with EmbeddedGraphStore(url) as reader, EmbeddedGraphStore(url) as writer:
        assert await writer.apply([UpsertMemory(memory=record)], position(unique, 1))
        assert await reader.get([record.id]) == [record]
        changed = record.model_copy(update={"memory": "changed by another writer", "revision": 2})
        assert await writer.apply([UpsertMemory(memory=changed)], position(unique, 2))
        assert await reader.get([record.id]) == [changed]
        assert (await reader.get([record.id]))[0] is (await reader.get([record.id]))[0]


async def test_apply_many_is_one_transaction_with_per_position_results(
    graph_store: EmbeddedGraphStore, unique: str
) -> None:
    cube = f"c-{unique}"
    a, b, c = (make_memory(cube, f"{n}-{unique}", minute=i) for i, n in enumerate("abc"))
    results = await graph_store.apply_many(
        [
            ([UpsertMemory(memory=a)], position(unique, 1)),
            ([UpsertMemory(memory=b)], position(unique, 2)),
            ([UpsertMemory(memory=c)], position(unique, 2)),  # redelivered duplicate: skipped
            ([UpsertMemory(memory=c)], position(unique, 0)),  # older position: skipped
            ([UpsertMemory(memory=c)], position(unique, 0, partition=1)),  # another partition: applied
        ]
    )
    assert results == [True, True, False, False, True]
    assert [r.id for r in await graph_store.list_memories(cube)] == [a.id, b.id, c.id]
    assert await graph_store.checkpoint(position(unique, 0).topic, 0) == 2
    assert await graph_store.checkpoint(position(unique, 0).topic, 1) == 0
    assert await graph_store.apply_many([]) == []


async def test_a_failing_batch_writes_nothing(graph_store: EmbeddedGraphStore, unique: str) -> None:
    cube = f"c-{unique}"
    good = make_memory(cube, f"good-{unique}")
    bad = make_memory(cube, f"bad-{unique}", memory="lone surrogate \ud800 cannot be stored")
    with pytest.raises(StoreError):
        await graph_store.apply_many(
            [
                ([UpsertMemory(memory=good)], position(unique, 1)),
                ([UpsertMemory(memory=bad)], position(unique, 2)),
            ]
        )
    assert await graph_store.list_memories(cube) == []
    assert await graph_store.checkpoint(position(unique, 0).topic, 0) is None


async def test_drop_cube_of_ten_thousand_memories(graph_store: EmbeddedGraphStore, unique: str) -> None:
    cube = f"c-{unique}"
    batch = [
        ([UpsertMemory(memory=make_memory(cube, f"m{i}-{unique}"))], position(unique, i))
        for i in range(10_000)
    ]
    await graph_store.apply_many(batch)
    assert await graph_store.count(cube) == 10_000
    started = time.perf_counter()
    await graph_store.apply([DropCube(cube_id=cube)], position(unique, 10_000))
    elapsed = time.perf_counter() - started
    assert await graph_store.count(cube, include_retired=True) == 0
    assert elapsed < 30  # a sanity bound only; bench/search.py reports the real figure


def test_sqlite_urls_name_absolute_paths() -> None:
    assert sqlite_path("sqlite:///abs/path.db") == "/abs/path.db"
    assert sqlite_path("sqlite:////abs/path.db") == "/abs/path.db"
    assert sqlite_path("embedded:///var/lib/memos/graph.db") == "/var/lib/memos/graph.db"
    assert sqlite_path("sqlite:///:memory:") == ":memory:"
    assert sqlite_path("/plain/path.db") == "/plain/path.db"
    with pytest.raises(ConfigError):
        sqlite_path("sqlite://")
    with pytest.raises(ConfigError):
        sqlite_path("postgres://host/db")


def test_registry_maps_schemes_to_adapters_lazily() -> None:
    assert GRAPH_STORES["falkordb"] == "memory_store.graph.falkordb:FalkorDBGraphStore"
    assert GRAPH_STORES["neo4j"] == GRAPH_STORES["bolt"] == "memory_store.graph.neo4j:Neo4jGraphStore"
    assert (
        VECTOR_STORES["http"]
        == VECTOR_STORES["weaviate+http"]
        == "memory_store.vector.weaviate:WeaviateVectorStore"
    )
    assert KEYWORD_INDEXES["https"] == "memory_store.vector.weaviate:WeaviateKeywordIndex"
    for factory in (graph_store_from_url, vector_store_from_url, keyword_index_from_url):
        with pytest.raises(ConfigError, match="unknown"):
            factory("mongodb://127.0.0.1:27017")
    with pytest.raises(ConfigError, match="bad options"):
        graph_store_from_url("sqlite:///tmp/x.db", no_such_option=1)
