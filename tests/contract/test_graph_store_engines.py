"""GraphStore contract on the graph engines: FalkorDB (native), the Neo4j driver over FalkorDB's Bolt port
(smoke), and a real Neo4j where MEMOS_TEST_NEO4J_URL is set.

Which engine answers each class: ``TestFalkorDBGraphStore`` -> FalkorDB over its native protocol
(``MEMOS_TEST_FALKORDB_URL``); ``TestNeo4jDriverOverBolt`` -> FalkorDB's Bolt endpoint
(``MEMOS_TEST_BOLT_URL``), i.e. our Neo4j driver code path, not a Neo4j server; ``TestNeo4jGraphStore``
-> a real Neo4j (``MEMOS_TEST_NEO4J_URL``), skipped when unset. ``bash infra/falkordb.sh start`` and
``source .infra/env.falkordb`` set the first two.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from urllib.parse import urlsplit

import pytest

from memory_store.graph import FalkorDBGraphStore, Neo4jGraphStore
from memory_store.graph.cypher import compose_apply, plan_ops
from memory_store.registry import graph_store_from_url
from schemas.errors import PayloadTooLarge, StoreError, StoreUnavailable
from schemas.ops import DropCube, RetireMemory, ReviseMemory, UpsertMemory, UpsertRelation
from tests.contract.graph_contract import T0, GraphStoreContract, make_memory, make_relation, position
from tests.engines import engine_url

# --- FalkorDB, native protocol: the full contract ---------------------------------------------------------


@pytest.fixture
async def falkordb_store(unique: str) -> AsyncIterator[FalkorDBGraphStore]:
    url = engine_url("falkordb")
    store = graph_store_from_url(url, namespace=f"test-{unique}", graph="memos_test")
    assert isinstance(store, FalkorDBGraphStore)
    async with store:
        try:
            yield store
        finally:
            await store.drop_namespace()


class TestFalkorDBGraphStore(GraphStoreContract):
    """The full contract; engine: FalkorDB over its native protocol (GRAPH.QUERY)."""

    @pytest.fixture
    async def graph_store(self, falkordb_store: FalkorDBGraphStore) -> FalkorDBGraphStore:
        return falkordb_store


async def test_falkordb_namespaces_isolate_stores_on_one_graph(unique: str) -> None:
    url = engine_url("falkordb")
    cube = f"c-{unique}"
    record = make_memory(cube, f"m-{unique}")
    async with (
        FalkorDBGraphStore(url, namespace=f"a-{unique}", graph="memos_test") as a,
        FalkorDBGraphStore(url, namespace=f"b-{unique}", graph="memos_test") as b,
    ):
        try:
            assert await a.apply([UpsertMemory(memory=record)], position(unique, 3))
            assert await b.get([record.id]) == []
            assert await b.checkpoint(position(unique, 0).topic, 0) is None
            assert await b.apply([UpsertMemory(memory=record)], position(unique, 1))
            await b.drop_namespace()
            assert await a.get([record.id]) == [record]
            assert await b.count(cube) == 0
        finally:
            await a.drop_namespace()
            await b.drop_namespace()


async def test_falkordb_a_failing_position_writes_nothing(
    falkordb_store: FalkorDBGraphStore, unique: str
) -> None:
    cube = f"c-{unique}"
    good = make_memory(cube, f"good-{unique}")
    # A lone surrogate cannot be encoded for the wire: the whole position fails, nothing is written.
    bad = make_memory(cube, f"bad-{unique}", memory="lone surrogate \ud800")
    with pytest.raises(StoreError):
        await falkordb_store.apply([UpsertMemory(memory=good), UpsertMemory(memory=bad)], position(unique, 1))
    assert await falkordb_store.list_memories(cube) == []
    assert await falkordb_store.checkpoint(position(unique, 0).topic, 0) is None


async def test_falkordb_edge_to_an_origin_id_keeps_memory_reads_clean(
    falkordb_store: FalkorDBGraphStore, unique: str
) -> None:
    cube = f"c-{unique}"
    record = make_memory(cube, f"m-{unique}")
    edge = make_relation(cube, f"r-{unique}", record.id, f"origin-{unique}", relation="DERIVED_FROM")
    ops = [UpsertMemory(memory=record), UpsertRelation(relation=edge)]
    assert await falkordb_store.apply(ops, position(unique, 0))
    assert await falkordb_store.relations(cube) == [edge]
    assert await falkordb_store.neighbors([f"origin-{unique}"]) == [edge]
    assert await falkordb_store.get([f"origin-{unique}"]) == []
    assert await falkordb_store.list_memories(cube) == [record]
    assert await falkordb_store.count(cube) == 1
    # An edge id moved to another type replaces the old edge.
    moved = edge.model_copy(update={"relation": "RELATES"})
    assert await falkordb_store.apply([UpsertRelation(relation=moved)], position(unique, 1))
    assert await falkordb_store.relations(cube) == [moved]
    assert await falkordb_store.apply([DropCube(cube_id=cube)], position(unique, 2))
    assert await falkordb_store.neighbors([f"origin-{unique}"]) == []


async def test_falkordb_many_ops_and_repeated_ids_in_one_position(
    falkordb_store: FalkorDBGraphStore, unique: str
) -> None:
    cube = f"c-{unique}"
    records = [make_memory(cube, f"m{i:03d}-{unique}", minute=i) for i in range(120)]
    later = T0 + timedelta(hours=1)
    ops = [
        *(UpsertMemory(memory=r) for r in records),
        UpsertMemory(memory=records[0].model_copy(update={"memory": "second write wins"})),
        ReviseMemory(memory_id=records[1].id, cube_id=cube, memory="rev 1", revision=1, updated_at=later),
        ReviseMemory(
            memory_id=records[1].id,
            cube_id=cube,
            memory="rev 2",
            metadata={"k": 1},
            revision=2,
            updated_at=later,
        ),  # fmt: skip
        RetireMemory(memory_id=records[2].id, cube_id=cube, reason="deleted", updated_at=later),
    ]
    assert await falkordb_store.apply(ops, position(unique, 0))
    assert await falkordb_store.count(cube) == 119
    first, second = await falkordb_store.get([records[0].id, records[1].id])
    assert first.memory == "second write wins"
    assert (second.memory, second.revision, second.metadata["k"]) == ("rev 2", 2, 1)


def test_statements_of_a_position_compose_into_one_query() -> None:
    cube = "c"
    ops = [
        UpsertMemory(memory=make_memory(cube, "a")),
        UpsertMemory(memory=make_memory(cube, "b")),
        UpsertMemory(memory=make_memory(cube, "a")),
        UpsertRelation(relation=make_relation(cube, "r", "a", "b")),
        DropCube(cube_id=cube),
    ]
    statements = plan_ops(ops, "ns")
    assert [len(s.rows) for s in statements] == [2, 1, 1, 1]
    query = compose_apply(statements, "graph", position("u", 3), replay=False)
    assert query.text.count("CALL {") == len(statements) + 1  # + the checkpoint
    assert set(query.params) == {"cp", "p0", "p1", "p2", "p3", "p4"}
    with pytest.raises(PayloadTooLarge):
        plan_ops([UpsertMemory(memory=make_memory(cube, "big", memory="x" * 5000))], "ns", max_bytes=4000)
    small = plan_ops([UpsertMemory(memory=make_memory(cube, f"s{i}", embedding=())) for i in range(10)], "ns",
                     store_embedding=False, max_bytes=3000)  # fmt: skip
    assert len(small) > 1 and sum(len(s.rows) for s in small) == 10


async def test_falkordb_down_is_store_unavailable(unique: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = FalkorDBGraphStore(f"falkordb://127.0.0.1:{port}", namespace=unique, timeout_s=2.0)
    with pytest.raises(StoreUnavailable):
        await store.start()


# --- the Neo4j driver over FalkorDB's Bolt endpoint: a smoke suite ------------------------------------------


def _bolt_settle(url: str) -> None:
    """Open and drop one raw Bolt handshake after a driver closes.

    FalkorDB's Bolt endpoint (4.16) leaves the next connection's handshake unanswered after a client
    sends GOODBYE; a bare handshake without GOODBYE takes that hit so the next driver connects.
    """
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 7687), timeout=2.0) as sock:
        sock.settimeout(0.2)
        sock.sendall(b"\x60\x60\xb0\x17" + struct.pack(">IIII", 0x0505, 0x0404, 0, 0))
        try:
            sock.recv(4)
        except TimeoutError:
            pass


@pytest.fixture(scope="module")
def bolt_url() -> Iterator[str]:
    url = engine_url("bolt")
    yield url
    _bolt_settle(url)


@pytest.fixture
async def bolt_store(bolt_url: str, unique: str) -> AsyncIterator[Neo4jGraphStore]:
    # Small queries only: FalkorDB's Bolt endpoint crashes past ~4 KB, has no Neo4j index DDL and
    # prints doubles with 6 digits, so embeddings are not stored on this path.
    store = Neo4jGraphStore(bolt_url, namespace=f"bolt-{unique}", create_indexes=False, store_embeddings=False,
                            max_query_bytes=3000)  # fmt: skip
    async with store:
        try:
            yield store
        finally:
            await store.drop_namespace()
    _bolt_settle(bolt_url)


def _small(cube: str, memory_id: str, minute: int = 0) -> object:
    return make_memory(cube, memory_id, minute=minute, embedding=(), sources=(), confidence=0.5,
                       metadata={"n": 1})  # fmt: skip


class TestNeo4jDriverOverBolt:
    """Smoke suite of Neo4jGraphStore; engine: FalkorDB's Bolt endpoint (NOT a Neo4j server)."""

    async def test_upsert_then_get(self, bolt_store: Neo4jGraphStore, unique: str) -> None:
        cube = f"c-{unique}"
        record = _small(cube, f"m-{unique}")
        assert await bolt_store.apply([UpsertMemory(memory=record)], position(unique, 0))
        assert await bolt_store.get([record.id]) == [record]
        assert await bolt_store.get([record.id], cube_id=f"other-{unique}") == []

    async def test_list_and_count(self, bolt_store: Neo4jGraphStore, unique: str) -> None:
        cube = f"c-{unique}"
        b, a = _small(cube, f"b-{unique}", minute=1), _small(cube, f"a-{unique}")
        assert await bolt_store.apply([UpsertMemory(memory=b), UpsertMemory(memory=a)], position(unique, 0))
        assert [r.id for r in await bolt_store.list_memories(cube)] == [a.id, b.id]
        assert [r.id for r in await bolt_store.list_memories(cube, limit=1, offset=1)] == [b.id]
        assert await bolt_store.count(cube) == 2
        assert await bolt_store.cubes() == [cube]

    async def test_retire(self, bolt_store: Neo4jGraphStore, unique: str) -> None:
        cube = f"c-{unique}"
        record = _small(cube, f"m-{unique}")
        retire = RetireMemory(memory_id=record.id, cube_id=cube, reason="deleted", updated_at=T0)
        assert await bolt_store.apply([UpsertMemory(memory=record), retire], position(unique, 0))
        assert await bolt_store.list_memories(cube) == []
        (got,) = await bolt_store.get([record.id])
        assert (got.status, got.retire_reason) == ("retired", "deleted")
        assert await bolt_store.count(cube, include_retired=True) == 1

    async def test_relation(self, bolt_store: Neo4jGraphStore, unique: str) -> None:
        cube = f"c-{unique}"
        a, b = _small(cube, f"a-{unique}"), _small(cube, f"b-{unique}", minute=1)
        edge = make_relation(cube, f"r-{unique}", a.id, b.id, relation="SUPERSEDES", metadata={})
        ops = [UpsertMemory(memory=a), UpsertMemory(memory=b), UpsertRelation(relation=edge)]
        assert await bolt_store.apply(ops, position(unique, 0))
        assert await bolt_store.relations(cube) == [edge]
        assert await bolt_store.neighbors([b.id]) == [edge]
        assert await bolt_store.neighbors([b.id], relations=["RELATES"]) == []

    async def test_checkpoint_skip(self, bolt_store: Neo4jGraphStore, unique: str) -> None:
        cube = f"c-{unique}"
        first, second = _small(cube, f"a-{unique}"), _small(cube, f"b-{unique}", minute=1)
        assert await bolt_store.apply([UpsertMemory(memory=first)], position(unique, 4))
        assert not await bolt_store.apply([UpsertMemory(memory=second)], position(unique, 4))
        assert await bolt_store.checkpoint(position(unique, 0).topic, 0) == 4
        assert await bolt_store.apply([UpsertMemory(memory=second)], position(unique, 1), replay=True)
        assert await bolt_store.checkpoint(position(unique, 0).topic, 0) == 4
        assert await bolt_store.count(cube) == 2

    async def test_oversized_query_is_refused_before_it_reaches_the_server(
        self, bolt_store: Neo4jGraphStore, unique: str
    ) -> None:
        record = _small(f"c-{unique}", f"m-{unique}").model_copy(update={"memory": "x" * 4000})
        with pytest.raises(PayloadTooLarge):
            await bolt_store.apply([UpsertMemory(memory=record)], position(unique, 0))
        assert await bolt_store.checkpoint(position(unique, 0).topic, 0) is None


# --- a real Neo4j: the full contract where a URL is given ---------------------------------------------------


@pytest.fixture
async def neo4j_store(unique: str) -> AsyncIterator[Neo4jGraphStore]:
    url = engine_url("neo4j")
    store = graph_store_from_url(url, namespace=f"test-{unique}")
    assert isinstance(store, Neo4jGraphStore)
    async with store:
        try:
            yield store
        finally:
            await store.drop_namespace()


class TestNeo4jGraphStore(GraphStoreContract):
    """The full contract; engine: a real Neo4j (MEMOS_TEST_NEO4J_URL), skipped where none is given."""

    @pytest.fixture
    async def graph_store(self, neo4j_store: Neo4jGraphStore) -> Neo4jGraphStore:
        return neo4j_store
