"""The GraphStore contract: every adapter's test class subclasses GraphStoreContract.

A subclass provides the fixture ``graph_store``: a started store, isolated per test (its own file,
graph or namespace). Tests name cubes and topics with the ``unique`` fixture and compare through port
methods only, so the suite runs unchanged on every engine.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from memory_store.base import GraphStore
from schemas.envelope import Position
from schemas.events import SourceRef
from schemas.memory import MAX_SOURCES, MemoryRecord, RelationRecord
from schemas.ops import DropCube, RetireMemory, ReviseMemory, UpsertMemory, UpsertRelation

__all__ = ["T0", "GraphStoreContract", "make_memory", "make_relation", "position", "random_unit"]

T0 = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)


def random_unit(rng: random.Random, dim: int) -> tuple[float, ...]:
    """A random vector whose components are exact float32 values (so every engine stores them exactly)."""
    values = np.array([rng.gauss(0.0, 1.0) for _ in range(dim)], dtype=np.float32)
    values /= np.linalg.norm(values)
    return tuple(float(v) for v in values.astype(np.float32))


def make_memory(cube_id: str, memory_id: str, **overrides: Any) -> MemoryRecord:
    """A fully populated memory record; ``overrides`` replace any field."""
    minute = overrides.pop("minute", 0)
    fields: dict[str, Any] = {
        "id": memory_id,
        "cube_id": cube_id,
        "user_id": "alice",
        "session_id": "s-1",
        "memory": f"memory {memory_id} about green tea",
        "memory_type": "LongTermMemory",
        "key": f"title {memory_id}",
        "tags": ("tea", "drinks"),
        "background": "a chat about drinks",
        "sources": (SourceRef(role="user", message_index=1, content="I like green tea"),),
        "metadata": {"info": {"agent": "a1"}, "score": 0.5, "n": 3},
        "embedding": (0.5, -0.25, 0.125, 1.0),
        "embedding_model": "test/emb",
        "extractor": "rules",
        "origin_event_id": "00000000-0000-4000-8000-000000000001",
        "confidence": 0.75,
        "created_at": T0 + timedelta(minutes=minute),
        "updated_at": T0 + timedelta(minutes=minute),
        "valid_from": T0 - timedelta(days=1),
    }
    fields.update(overrides)
    return MemoryRecord(**fields)


def make_relation(
    cube_id: str, relation_id: str, source_id: str, target_id: str, **overrides: Any
) -> RelationRecord:
    """An edge record; ``overrides`` replace any field."""
    fields: dict[str, Any] = {
        "id": relation_id,
        "cube_id": cube_id,
        "source_id": source_id,
        "target_id": target_id,
        "relation": "RELATES",
        "weight": 0.5,
        "metadata": {"why": "test"},
        "created_at": T0,
    }
    fields.update(overrides)
    return RelationRecord(**fields)


def _by_id(relations: list[RelationRecord]) -> list[RelationRecord]:
    return sorted(relations, key=lambda r: r.id)


def position(unique: str, offset: int, partition: int = 0) -> Position:
    """A position on a topic private to the test."""
    return Position(f"memos.test.{unique}", partition, offset)


class GraphStoreContract:
    """Behaviour every GraphStore adapter must show. Needs fixtures ``graph_store`` and ``unique``."""

    @pytest.fixture
    def cube(self, unique: str) -> str:
        return f"cube-{unique}-a"

    @pytest.fixture
    def other_cube(self, unique: str) -> str:
        return f"cube-{unique}-b"

    async def _upsert(self, store: GraphStore, unique: str, offset: int, *records: MemoryRecord) -> None:
        assert await store.apply([UpsertMemory(memory=r) for r in records], position(unique, offset))

    async def test_upsert_then_get_returns_the_same_record(
        self, graph_store: GraphStore, unique: str, cube: str
    ) -> None:
        record = make_memory(cube, f"m1-{unique}")
        await self._upsert(graph_store, unique, 0, record)
        assert await graph_store.get([record.id]) == [record]
        assert await graph_store.get([record.id], cube_id=cube) == [record]

    async def test_get_keeps_the_order_asked_and_skips_unknown_ids(
        self, graph_store: GraphStore, unique: str, cube: str, other_cube: str
    ) -> None:
        a, b = make_memory(cube, f"a-{unique}"), make_memory(cube, f"b-{unique}", minute=1)
        c = make_memory(other_cube, f"c-{unique}")
        await self._upsert(graph_store, unique, 0, a, b, c)
        got = await graph_store.get([b.id, f"missing-{unique}", a.id, c.id])
        assert [r.id for r in got] == [b.id, a.id, c.id]
        assert [r.id for r in await graph_store.get([c.id, a.id], cube_id=cube)] == [a.id]
        assert await graph_store.get([]) == []

    async def test_upsert_twice_is_idempotent(self, graph_store: GraphStore, unique: str, cube: str) -> None:
        record = make_memory(cube, f"m-{unique}")
        await self._upsert(graph_store, unique, 0, record)
        await self._upsert(graph_store, unique, 1, record)
        assert await graph_store.list_memories(cube) == [record]
        assert await graph_store.count(cube) == 1

    async def test_list_orders_by_created_at_then_id_and_pages(
        self, graph_store: GraphStore, unique: str, cube: str
    ) -> None:
        records = [
            make_memory(cube, f"m3-{unique}", minute=2),
            make_memory(cube, f"m2-{unique}", minute=1),
            make_memory(cube, f"m1b-{unique}", minute=0),
            make_memory(cube, f"m1a-{unique}", minute=0),
        ]
        await self._upsert(graph_store, unique, 0, *records)
        expected = [f"m1a-{unique}", f"m1b-{unique}", f"m2-{unique}", f"m3-{unique}"]
        assert [r.id for r in await graph_store.list_memories(cube)] == expected
        assert [r.id for r in await graph_store.list_memories(cube, limit=2)] == expected[:2]
        assert [r.id for r in await graph_store.list_memories(cube, limit=2, offset=1)] == expected[1:3]
        assert [r.id for r in await graph_store.list_memories(cube, offset=3)] == expected[3:]

    async def test_list_filters_by_memory_type(self, graph_store: GraphStore, unique: str, cube: str) -> None:
        pref = make_memory(cube, f"p-{unique}", memory_type="PreferenceMemory")
        fact = make_memory(cube, f"f-{unique}", memory_type="LongTermMemory", minute=1)
        tool = make_memory(cube, f"t-{unique}", memory_type="ToolTrajectoryMemory", minute=2)
        await self._upsert(graph_store, unique, 0, pref, fact, tool)
        got = await graph_store.list_memories(cube, memory_types=["PreferenceMemory", "ToolTrajectoryMemory"])
        assert [r.id for r in got] == [pref.id, tool.id]
        assert await graph_store.list_memories(cube, memory_types=[]) == []

    async def test_find_filters_by_text_extractor_status_and_type_and_pages(
        self, graph_store: GraphStore, unique: str, cube: str, other_cube: str
    ) -> None:
        tea = [make_memory(cube, f"t{n}-{unique}", minute=n, memory=f"Note {n}: GREEN Tea in the Straße",
                           extractor="llm" if n % 2 else "rules") for n in range(5)]
        coffee = make_memory(cube, f"c-{unique}", minute=10, memory="black coffee", memory_type="UserMemory")
        elsewhere = make_memory(other_cube, f"x-{unique}", memory="green tea elsewhere")
        await self._upsert(graph_store, unique, 0, *tea, coffee, elsewhere)
        retire = RetireMemory(memory_id=tea[1].id, cube_id=cube, reason="deleted", updated_at=T0)
        assert await graph_store.apply([retire], position(unique, 1))

        async def ids(**filters: Any) -> list[str]:
            return [r.id for r in await graph_store.find_memories(cube, **filters)]

        current = [tea[0].id, tea[2].id, tea[3].id, tea[4].id]
        assert await ids() == [*current, coffee.id]
        assert await ids(text="green tea") == current  # case-folded on both sides
        assert await ids(text="STRASSE") == current  # casefold, not lower(): "ß" matches "ss"
        assert await ids(text="green tea", limit=2, offset=1) == current[1:3]
        assert await ids(text="green tea", extractor="llm") == [tea[3].id]
        assert await ids(text="green tea", status="retired") == [tea[1].id]
        assert await ids(text="green tea", status="all", extractor="llm") == [tea[1].id, tea[3].id]
        assert await ids(memory_types=["UserMemory"]) == [coffee.id]
        assert await ids(text="tea", memory_types=["UserMemory"]) == []
        assert await ids(text="no such words") == []
        (found,) = await graph_store.find_memories(cube, text="coffee")
        assert found == coffee

    async def test_revise_replaces_text_merges_metadata_and_appends_sources(
        self, graph_store: GraphStore, unique: str, cube: str
    ) -> None:
        record = make_memory(cube, f"m-{unique}")
        await self._upsert(graph_store, unique, 0, record)
        new_source = SourceRef(role="assistant", message_index=4, content="she loves it")
        revise = ReviseMemory(
            memory_id=record.id,
            cube_id=cube,
            memory="Alice loves green tea",
            tags=("tea", "love"),
            metadata={"score": 0.9, "merged": True},
            sources=(record.sources[0], new_source),
            embedding=(0.0, 1.0, 0.0, 0.0),
            embedding_model="test/emb2",
            revision=1,
            updated_at=T0 + timedelta(hours=1),
        )
        assert await graph_store.apply([revise], position(unique, 1))
        (got,) = await graph_store.get([record.id])
        assert got.memory == "Alice loves green tea"
        assert got.tags == ("tea", "love")
        assert got.metadata == {"info": {"agent": "a1"}, "score": 0.9, "n": 3, "merged": True}
        assert got.sources == (record.sources[0], new_source)
        assert got.embedding == (0.0, 1.0, 0.0, 0.0)
        assert got.embedding_model == "test/emb2"
        assert got.revision == 1
        assert got.updated_at == T0 + timedelta(hours=1)
        assert got.created_at == record.created_at
        assert got.status == "activated"
        # Re-applying the same op (a redelivery under another position) changes nothing.
        assert await graph_store.apply([revise], position(unique, 2))
        assert await graph_store.get([record.id]) == [got]

    async def test_a_memory_revised_many_times_keeps_its_first_and_latest_sources(
        self, graph_store: GraphStore, unique: str, cube: str
    ) -> None:
        record = make_memory(cube, f"m-{unique}")
        await self._upsert(graph_store, unique, 0, record)
        added = [SourceRef(role="user", message_index=i, content=f"said again {i}") for i in range(MAX_SOURCES + 8)]

        def revise(i: int) -> ReviseMemory:
            return ReviseMemory(memory_id=record.id, cube_id=cube, memory="Alice loves tea", sources=(added[i],),
                                revision=i + 1, updated_at=T0 + timedelta(minutes=i))  # fmt: skip

        for i in range(10):  # one batch each
            assert await graph_store.apply([revise(i)], position(unique, 1 + i))
        assert await graph_store.apply([revise(i) for i in range(10, len(added))], position(unique, 11))  # one batch
        (got,) = await graph_store.get([record.id])
        everything = [*record.sources, *added]
        assert list(got.sources) == [everything[0], *everything[-(MAX_SOURCES - 1):]]
        assert len(got.sources) == MAX_SOURCES

    async def test_revise_keeps_what_it_does_not_give(
        self, graph_store: GraphStore, unique: str, cube: str
    ) -> None:
        record = make_memory(cube, f"m-{unique}")
        await self._upsert(graph_store, unique, 0, record)
        revise = ReviseMemory(memory_id=record.id, cube_id=cube, memory="new text", revision=2,
                              updated_at=T0 + timedelta(hours=2))  # fmt: skip
        await graph_store.apply([revise], position(unique, 1))
        (got,) = await graph_store.get([record.id])
        assert (got.memory, got.revision) == ("new text", 2)
        assert (got.tags, got.embedding, got.sources, got.metadata) == (
            record.tags, record.embedding, record.sources, record.metadata,
        )  # fmt: skip

    async def test_revise_and_retire_of_unknown_or_foreign_memory_change_nothing(
        self, graph_store: GraphStore, unique: str, cube: str, other_cube: str
    ) -> None:
        record = make_memory(cube, f"m-{unique}")
        await self._upsert(graph_store, unique, 0, record)
        ops = [
            ReviseMemory(memory_id=record.id, cube_id=other_cube, memory="hijack", revision=1, updated_at=T0),
            RetireMemory(memory_id=record.id, cube_id=other_cube, reason="deleted", updated_at=T0),
            ReviseMemory(
                memory_id=f"ghost-{unique}", cube_id=cube, memory="ghost", revision=1, updated_at=T0
            ),
            RetireMemory(memory_id=f"ghost-{unique}", cube_id=cube, reason="deleted", updated_at=T0),
        ]
        assert await graph_store.apply(ops, position(unique, 1))
        assert await graph_store.list_memories(cube, include_retired=True) == [record]
        assert await graph_store.get([f"ghost-{unique}"]) == []
        assert await graph_store.count(other_cube, include_retired=True) == 0

    async def test_retired_memory_resolves_by_id_but_leaves_lists(
        self, graph_store: GraphStore, unique: str, cube: str
    ) -> None:
        old, new = make_memory(cube, f"old-{unique}"), make_memory(cube, f"new-{unique}", minute=1)
        await self._upsert(graph_store, unique, 0, old, new)
        retire = RetireMemory(memory_id=old.id, cube_id=cube, reason="refined", successor_ids=(new.id,),
                              valid_to=T0 + timedelta(hours=3), updated_at=T0 + timedelta(hours=4))  # fmt: skip
        assert await graph_store.apply([retire], position(unique, 1))
        (got,) = await graph_store.get([old.id])
        assert got.status == "retired"
        assert got.retire_reason == "refined"
        assert got.successor_ids == (new.id,)
        assert got.valid_to == T0 + timedelta(hours=3)
        assert got.updated_at == T0 + timedelta(hours=4)
        assert got.memory == old.memory
        assert [r.id for r in await graph_store.list_memories(cube)] == [new.id]
        assert [r.id for r in await graph_store.list_memories(cube, include_retired=True)] == [old.id, new.id]
        assert await graph_store.count(cube) == 1
        assert await graph_store.count(cube, include_retired=True) == 2
        assert await graph_store.apply([retire], position(unique, 2))
        assert await graph_store.get([old.id]) == [got]

    async def test_a_retirement_before_its_memory_is_not_lost(
        self, graph_store: GraphStore, unique: str, cube: str
    ) -> None:
        """The fine phase of an async add can log its retirement before the fast phase logs the memory."""
        early, new = make_memory(cube, f"early-{unique}"), make_memory(cube, f"new-{unique}", minute=1)
        retire = RetireMemory(memory_id=early.id, cube_id=cube, reason="refined", successor_ids=(new.id,),
                              valid_to=T0 + timedelta(hours=1), updated_at=T0 + timedelta(hours=2))  # fmt: skip
        assert await graph_store.apply([retire], position(unique, 0))
        assert await graph_store.get([early.id]) == []
        await self._upsert(graph_store, unique, 1, new)
        await self._upsert(graph_store, unique, 2, early)
        (got,) = await graph_store.get([early.id])
        assert (got.status, got.retire_reason, got.successor_ids) == ("retired", "refined", (new.id,))
        assert (got.valid_to, got.updated_at) == (T0 + timedelta(hours=1), T0 + timedelta(hours=2))
        assert got.memory == early.memory
        assert [r.id for r in await graph_store.list_memories(cube)] == [new.id]
        await self._upsert(graph_store, unique, 3, early)  # redelivered: retirement is terminal
        assert await graph_store.get([early.id]) == [got]
        assert await graph_store.count(cube) == 1

    async def test_ops_of_one_position_apply_in_order(
        self, graph_store: GraphStore, unique: str, cube: str
    ) -> None:
        record = make_memory(cube, f"m-{unique}")
        ops = [
            UpsertMemory(memory=record),
            RetireMemory(memory_id=record.id, cube_id=cube, reason="deleted", updated_at=T0),
        ]
        assert await graph_store.apply(ops, position(unique, 0))
        (got,) = await graph_store.get([record.id])
        assert got.status == "retired"

    async def test_relations_and_neighbors(self, graph_store: GraphStore, unique: str, cube: str) -> None:
        a, b, c, d = (make_memory(cube, f"{n}-{unique}", minute=i) for i, n in enumerate("abcd"))
        await self._upsert(graph_store, unique, 0, a, b, c, d)
        r1 = make_relation(cube, f"r1-{unique}", a.id, b.id, relation="SUPERSEDES")
        r2 = make_relation(cube, f"r2-{unique}", c.id, a.id, relation="RELATES", weight=0.25)
        r3 = make_relation(cube, f"r3-{unique}", c.id, d.id, relation="DERIVED_FROM")
        ops = [UpsertRelation(relation=r) for r in (r3, r1, r2)]
        assert await graph_store.apply(ops, position(unique, 1))
        assert await graph_store.relations(cube) == [r1, r2, r3]
        assert _by_id(await graph_store.neighbors([a.id])) == [r1, r2]
        assert await graph_store.neighbors([b.id]) == [r1]
        assert _by_id(await graph_store.neighbors([a.id, d.id])) == [r1, r2, r3]
        assert await graph_store.neighbors([a.id], relations=["SUPERSEDES"]) == [r1]
        assert _by_id(await graph_store.neighbors([c.id], relations=["RELATES", "DERIVED_FROM"])) == [r2, r3]
        limited = await graph_store.neighbors([a.id, d.id], limit=2)
        assert len(limited) == 2 and all(r in (r1, r2, r3) for r in limited)
        assert await graph_store.neighbors([f"nobody-{unique}"]) == []
        # Upserting an edge again overwrites it (idempotent by id).
        changed = make_relation(cube, f"r1-{unique}", a.id, b.id, relation="SUPERSEDES", weight=0.9)
        assert await graph_store.apply([UpsertRelation(relation=changed)], position(unique, 2))
        assert await graph_store.relations(cube) == [changed, r2, r3]

    async def test_same_position_twice_is_skipped_and_changes_nothing(
        self, graph_store: GraphStore, unique: str, cube: str
    ) -> None:
        first, second = make_memory(cube, f"m1-{unique}"), make_memory(cube, f"m2-{unique}", minute=1)
        assert await graph_store.apply([UpsertMemory(memory=first)], position(unique, 5))
        assert await graph_store.checkpoint(position(unique, 0).topic, 0) == 5
        assert not await graph_store.apply([UpsertMemory(memory=second)], position(unique, 5))
        assert not await graph_store.apply([UpsertMemory(memory=second)], position(unique, 3))
        assert await graph_store.list_memories(cube) == [first]
        assert await graph_store.checkpoint(position(unique, 0).topic, 0) == 5

    async def test_checkpoints_are_per_topic_and_partition(
        self, graph_store: GraphStore, unique: str, cube: str
    ) -> None:
        topic = position(unique, 0).topic
        assert await graph_store.checkpoint(topic, 0) is None
        await graph_store.apply(
            [UpsertMemory(memory=make_memory(cube, f"a-{unique}"))], position(unique, 7, 0)
        )
        assert await graph_store.apply(
            [UpsertMemory(memory=make_memory(cube, f"b-{unique}", minute=1))],
            position(unique, 2, partition=1),
        )
        assert await graph_store.checkpoint(topic, 0) == 7
        assert await graph_store.checkpoint(topic, 1) == 2
        assert await graph_store.checkpoint(f"{topic}.other", 0) is None
        assert await graph_store.count(cube) == 2

    async def test_replay_applies_and_keeps_the_checkpoint(
        self, graph_store: GraphStore, unique: str, cube: str
    ) -> None:
        first, second = make_memory(cube, f"m1-{unique}"), make_memory(cube, f"m2-{unique}", minute=1)
        assert await graph_store.apply([UpsertMemory(memory=first)], position(unique, 5))
        assert await graph_store.apply([UpsertMemory(memory=second)], position(unique, 2), replay=True)
        assert await graph_store.apply([UpsertMemory(memory=second)], position(unique, 9), replay=True)
        assert [r.id for r in await graph_store.list_memories(cube)] == [first.id, second.id]
        assert await graph_store.checkpoint(position(unique, 0).topic, 0) == 5

    async def test_drop_cube_removes_only_that_cube(
        self, graph_store: GraphStore, unique: str, cube: str, other_cube: str
    ) -> None:
        a, b = make_memory(cube, f"a-{unique}"), make_memory(cube, f"b-{unique}", minute=1)
        keep = make_memory(other_cube, f"k-{unique}")
        keep2 = make_memory(other_cube, f"k2-{unique}", minute=1)
        await self._upsert(graph_store, unique, 0, a, b, keep, keep2)
        edges = [
            UpsertRelation(relation=make_relation(cube, f"ra-{unique}", a.id, b.id)),
            UpsertRelation(relation=make_relation(other_cube, f"rk-{unique}", keep.id, keep2.id)),
        ]
        await graph_store.apply(edges, position(unique, 1))
        await graph_store.apply([RetireMemory(memory_id=b.id, cube_id=cube, reason="deleted", updated_at=T0)],
                                position(unique, 2))  # fmt: skip
        assert cube in await graph_store.cubes()
        assert await graph_store.apply([DropCube(cube_id=cube)], position(unique, 3))
        assert await graph_store.list_memories(cube, include_retired=True) == []
        assert await graph_store.count(cube, include_retired=True) == 0
        assert await graph_store.relations(cube) == []
        assert await graph_store.get([a.id, b.id]) == []
        assert cube not in await graph_store.cubes()
        assert await graph_store.list_memories(other_cube) == [keep, keep2]
        assert [r.id for r in await graph_store.relations(other_cube)] == [f"rk-{unique}"]
        assert other_cube in await graph_store.cubes()
        # The cube can be rebuilt afterwards.
        await self._upsert(graph_store, unique, 4, a)
        assert await graph_store.list_memories(cube) == [a]

    async def test_cubes_are_isolated(
        self, graph_store: GraphStore, unique: str, cube: str, other_cube: str
    ) -> None:
        mine = make_memory(cube, f"mine-{unique}")
        theirs = make_memory(other_cube, f"theirs-{unique}")
        await self._upsert(graph_store, unique, 0, mine, theirs)
        await graph_store.apply(
            [UpsertRelation(relation=make_relation(other_cube, f"r-{unique}", theirs.id, theirs.id))],
            position(unique, 1),
        )
        assert await graph_store.list_memories(cube) == [mine]
        assert await graph_store.list_memories(other_cube) == [theirs]
        assert await graph_store.count(cube) == 1
        assert await graph_store.relations(cube) == []
        assert await graph_store.get([theirs.id], cube_id=cube) == []
        assert {cube, other_cube} <= set(await graph_store.cubes())

    async def test_unicode_and_nested_metadata_round_trip(
        self, graph_store: GraphStore, unique: str, cube: str
    ) -> None:
        record = make_memory(
            cube,
            f"u-{unique}",
            memory="用户喜欢喝咖啡 ☕ — café « naïve »",
            tags=("咖啡", "préférence"),
            metadata={"nested": {"list": [1, 2.5, "x", None, True]}, "emoji": "🙂", "empty": {}},
            embedding=(),
            valid_from=None,
        )
        await self._upsert(graph_store, unique, 0, record)
        assert await graph_store.get([record.id]) == [record]
