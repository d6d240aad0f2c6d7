"""Replay's fast lane: raw Avro -> ops equals decode + project, and ``replay_cube`` from a real log equals the
incremental build (kind-batched ops, lazy float32 vectors, poison and old-version records on the slow path)."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from processors.projection import memory_record, project
from processors.raw_projection import project_raw
from schemas.codec import MAGIC, Float32Vector, decode, decode_raw, encode, fingerprint_of
from schemas.events import MemoryAdded, MemoryRetired
from schemas.memory import RelationRecord
from schemas.ops import AnyOp, DropCube, RetireMemory, ReviseMemory, UpsertMemory, UpsertRelation
from schemas.topics import MEMORIES
from streams.log.base import OutgoingRecord
from streams.log.local.log import LocalEventLog
from streams.pipeline.stages import apply_planned
from streams.replay import by_kind, replay_cube
from tests.integration.test_replay_property import (
    ACTIONS,
    CUBES,
    T0,
    build_history,
    open_stores,
    snapshot,
)


def _fast(payload: bytes, *, lazy: bool) -> list[AnyOp] | None:
    raw = decode_raw(payload)
    assert raw is not None
    return project_raw(raw[0], raw[1], lazy_vectors=lazy)


@settings(max_examples=40, deadline=None)
@given(actions=ACTIONS, seed=st.integers(0, 2**16))
def test_fast_lane_ops_equal_decode_then_project(actions: list[tuple[str, int, int, int]], seed: int) -> None:
    for event, _ in build_history(actions, seed):
        payload = encode(event)
        expected = project(decode(payload))
        fast = _fast(payload, lazy=False)
        if fast is None:  # declined (relations): the slow path answers
            assert type(event).__name__ not in ("MemoryAdded", "MemoryRevised", "MemoryRetired")
            continue
        assert fast == expected
        for got, want in zip(fast, expected, strict=True):  # same fields, in the model's order
            inner = [(got.memory, want.memory)] if isinstance(got, UpsertMemory) else []  # type: ignore[union-attr]
            for a, b in [(got, want), *inner]:
                assert list(a.__dict__) == list(b.__dict__)
        assert [op.model_dump() for op in fast] == [op.model_dump() for op in expected]
        lazy = _fast(payload, lazy=True)
        assert lazy == expected


def test_lazy_vector_keeps_its_bytes_and_equals_its_floats() -> None:
    event = MemoryAdded(event_id=uuid.uuid4(), occurred_at=T0, key="c", memory_id="m", cube_id="c", user_id="u",
                        memory="x", embedding=[0.5, -1.25, 3.0])  # fmt: skip
    ops = _fast(encode(event), lazy=True)
    assert ops is not None and isinstance(ops[0], UpsertMemory)
    op = ops[0]
    vector = op.memory.embedding
    assert isinstance(vector, Float32Vector) and len(vector) == 3
    assert vector == (0.5, -1.25, 3.0) and list(vector) == [0.5, -1.25, 3.0]
    assert vector.blob == b"".join(v.to_bytes(4, "little") for v in (0x3F000000, 0xBFA00000, 0x40400000))


def test_fast_lane_declines_what_the_models_reject() -> None:
    event = MemoryRetired(event_id=uuid.uuid4(), occurred_at=T0, key="c", memory_id="m", cube_id="c",
                          reason="deleted")  # fmt: skip
    name, values = decode_raw(encode(event))  # type: ignore[misc]
    assert project_raw(name, {**values, "reason": "no such reason"}) is None
    assert project_raw(name, {**values, "event_id": "NOT-A-UUID"}) is None
    assert decode_raw(MAGIC + fingerprint_of("MemoryRetired") + b"\xff") is None  # corrupt body
    assert decode_raw(b"junk") is None


def test_by_kind_keeps_the_order_on_each_memory_and_never_crosses_a_drop() -> None:
    def retire(i: str) -> RetireMemory:
        return RetireMemory(memory_id=i, cube_id="c", reason="deleted", updated_at=T0)

    def revise(i: str) -> ReviseMemory:
        return ReviseMemory(memory_id=i, cube_id="c", memory="new", revision=1, updated_at=T0)

    def upsert(i: str) -> UpsertMemory:
        return UpsertMemory(
            memory=memory_record(
                MemoryAdded(
                    event_id=uuid.uuid4(),
                    occurred_at=T0,
                    key="c",
                    memory_id=i,
                    cube_id="c",
                    user_id="u",
                    memory=i,
                )
            )
        )

    a1, b1, a2, b2, a3, drop, c1 = (
        upsert("a"),
        retire("b"),
        revise("a"),
        upsert("b"),
        retire("a"),
        DropCube(cube_id="c"),
        upsert("c"),
    )
    ordered = by_kind([a1, b1, a2, b2, a3, drop, c1])
    # level 0: upsert a, revise a, retirements b then a; level 1: upsert b (after its retirement); the drop
    assert ordered == [a1, a2, b1, a3, b2, drop, c1]
    assert by_kind([]) == []
    edge = UpsertRelation(relation=RelationRecord(id="r", cube_id="c", source_id="a", target_id="d",
                                                  relation="RELATES", created_at=T0))  # fmt: skip
    d1, a4, x1 = upsert("d"), upsert("a"), upsert("x")
    # an edge keeps its place against ops on its ends ("a", "d"), not against other memories ("x")
    assert by_kind([a1, edge, a4, d1, x1]) == [a1, x1, edge, a4, d1]


async def _scenario(tmp: Path, actions: Sequence[tuple[str, int, int, int]], seed: int, cube_index: int,
                    batch: int, keyword: str = "fts5") -> None:  # fmt: skip
    history = build_history(actions, seed)
    planned = [(project(decode(encode(event))), position) for event, position in history]
    fresh = await open_stores(tmp / "fresh.db", keyword)
    await fresh.apply_many(planned)
    expected = await snapshot(fresh)

    built = await open_stores(tmp / "built.db", keyword)
    await built.apply_many(planned)
    async with LocalEventLog(tmp / "log.db") as log:
        await log.create_topic(MEMORIES, partitions=2)
        records = [OutgoingRecord(MEMORIES, event.key.encode(), encode(event)) for event, _ in history]
        # a poison record and a record of another cube on the same partition: skipped / left out
        cube = CUBES[cube_index]
        records.insert(len(records) // 2, OutgoingRecord(MEMORIES, cube.encode(), b"\xc3\x01garbage!"))
        await log.append_batch(records)
        applied = await replay_cube(log, built.all, asyncio.Lock(), cube, batch=batch)
    assert applied == sum(1 for event, _ in history if event.key == cube)
    assert await snapshot(built) == expected
    for stores in (fresh, built):
        for store in stores.all:
            await store.aclose()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=ACTIONS, seed=st.integers(0, 2**16), cube_index=st.integers(0, len(CUBES) - 1),
       batch=st.integers(1, 9), keyword=st.sampled_from(["fts5", "tantivy", "tantivy-flush"]))  # fmt: skip
def test_replay_cube_from_the_log_equals_the_incremental_build(
    actions: list[tuple[str, int, int, int]], seed: int, cube_index: int, batch: int, keyword: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_scenario(Path(tmp), actions, seed, cube_index, batch, keyword))


async def _cypher_scenario(tmp: Path, url: str, actions: Sequence[tuple[str, int, int, int]], seed: int,
                           cube_index: int) -> None:  # fmt: skip
    from memory_store.graph import FalkorDBGraphStore

    history = build_history(actions, seed)
    planned = [(project(decode(encode(event))), position) for event, position in history]
    suffix = uuid.uuid4().hex[:10]
    async with (
        FalkorDBGraphStore(url, namespace=f"live-{suffix}", graph="memos_test") as live,
        FalkorDBGraphStore(url, namespace=f"replayed-{suffix}", graph="memos_test") as replayed,
    ):
        try:
            await apply_planned([live, replayed], planned, replay=False)
            cube = CUBES[cube_index]
            async with LocalEventLog(tmp / "log.db") as log:
                await log.create_topic(MEMORIES, partitions=2)
                await log.append_batch(
                    [OutgoingRecord(MEMORIES, event.key.encode(), encode(event)) for event, _ in history]
                )
                await replay_cube(log, [replayed], asyncio.Lock(), cube, batch=7)
            for name in CUBES:
                assert await replayed.list_memories(name, include_retired=True) == await live.list_memories(
                    name, include_retired=True
                )
                assert await replayed.relations(name) == await live.relations(name)
        finally:
            await live.drop_namespace()
            await replayed.drop_namespace()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=ACTIONS, seed=st.integers(0, 2**16), cube_index=st.integers(0, len(CUBES) - 1))
@example(  # an edge id sent again with both ends changed: the older edge touched neither new end
    actions=[("add", 0, 0, 0), ("add", 0, 0, 0), ("add", 0, 0, 0), ("relate", 0, 0, 0), ("relate", 0, 4, 0)],
    seed=0, cube_index=0)
def test_replay_cube_into_falkordb_equals_its_incremental_build(
    actions: list[tuple[str, int, int, int]], seed: int, cube_index: int
) -> None:
    from tests.engines import engine_url

    url = engine_url("falkordb")  # skips without the engine
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_cypher_scenario(Path(tmp), url, actions, seed, cube_index))
