"""VectorStore contract on the embedded adapter, on the exact and on the ANN (hnswlib) path."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from memory_store.embedded import EmbeddedVectorStore
from memory_store.embedded.ann import CubeVectors, Hnsw
from memory_store.registry import vector_store_from_url
from schemas.errors import DimensionMismatch
from schemas.ops import RetireMemory, UpsertMemory
from tests.contract.graph_contract import T0, make_memory, position, random_unit
from tests.contract.vector_contract import VectorStoreContract, brute_force


@pytest.fixture(params=["exact", "ann"])
async def vector_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EmbeddedVectorStore]:
    # "ann": cubes above 8 vectors use hnswlib, indexed as soon as more than 4 vectors wait.
    opts = {"ann_threshold": 8, "ann_pending_limit": 4} if request.param == "ann" else {}
    store = vector_store_from_url(f"sqlite:///{tmp_path / 'store.db'}", **opts)
    assert isinstance(store, EmbeddedVectorStore)
    async with store:
        yield store


class TestEmbeddedVectorStore(VectorStoreContract):
    """The contract on SQLite + numpy (+ hnswlib)."""


async def test_ann_path_is_used_and_agrees_with_exact(tmp_path: Path, unique: str) -> None:
    cube = f"c-{unique}"
    rng = random.Random(9)
    records = [make_memory(cube, f"m{i:04d}-{unique}", embedding=random_unit(rng, 24)) for i in range(500)]
    async with EmbeddedVectorStore(
        f"sqlite:///{tmp_path / 'v.db'}", ann_threshold=100, ann_pending_limit=50
    ) as store:
        await store.apply([UpsertMemory(memory=r) for r in records], position(unique, 0))
        assert store.stats()[cube] == {"live": 500, "indexed": 0, "pending": 500}
        query = random_unit(rng, 24)
        hits = await store.search(cube, query, k=1)
        assert store.stats()[cube]["indexed"] == 500
        assert hits[0].memory_id == brute_force(records, query, 1)[0][0]
        # Vectors added after the build are found exactly until the next build.
        late = make_memory(cube, f"late-{unique}", embedding=random_unit(rng, 24))
        await store.apply([UpsertMemory(memory=late)], position(unique, 1))
        assert store.stats()[cube]["pending"] == 1
        assert [h.memory_id for h in await store.search(cube, late.embedding, k=1)] == [late.id]
        # A very selective filter (most memories retired) still finds the few that are left.
        retire = [
            RetireMemory(memory_id=r.id, cube_id=cube, reason="deleted", updated_at=T0) for r in records[5:]
        ]
        await store.apply(retire, position(unique, 2))
        left = [*records[:5], late]
        hits = await store.search(cube, query, k=3)
        assert [h.memory_id for h in hits] == [i for i, _ in brute_force(left, query, 3)]


async def test_vectors_are_reloaded_after_a_restart(tmp_path: Path, unique: str) -> None:
    cube = f"c-{unique}"
    rng = random.Random(2)
    records = [make_memory(cube, f"m{i}-{unique}", embedding=random_unit(rng, 8)) for i in range(30)]
    url = f"sqlite:///{tmp_path / 'v.db'}"
    async with EmbeddedVectorStore(url) as store:
        await store.apply([UpsertMemory(memory=r) for r in records], position(unique, 0))
        await store.apply([RetireMemory(memory_id=records[0].id, cube_id=cube, reason="deleted", updated_at=T0)],
                          position(unique, 1))  # fmt: skip
        before = await store.search(cube, records[0].embedding, k=30, include_retired=True)
    async with EmbeddedVectorStore(url, ann_threshold=10, ann_pending_limit=1) as store:
        assert await store.dimension(cube) == 8
        assert await store.search(cube, records[0].embedding, k=30, include_retired=True) == before
        assert records[0].id not in [
            h.memory_id for h in await store.search(cube, records[0].embedding, k=30)
        ]


async def test_a_rejected_batch_leaves_memory_and_disk_unchanged(tmp_path: Path, unique: str) -> None:
    cube = f"c-{unique}"
    rng = random.Random(4)
    good = make_memory(cube, f"good-{unique}", embedding=random_unit(rng, 8))
    other = make_memory(cube, f"other-{unique}", embedding=random_unit(rng, 8))
    wrong = make_memory(cube, f"wrong-{unique}", embedding=random_unit(rng, 5))
    async with EmbeddedVectorStore(f"sqlite:///{tmp_path / 'v.db'}") as store:
        await store.apply([UpsertMemory(memory=good)], position(unique, 0))
        with pytest.raises(DimensionMismatch):
            await store.apply_many(
                [
                    ([UpsertMemory(memory=other)], position(unique, 1)),
                    ([UpsertMemory(memory=wrong)], position(unique, 2)),
                ]
            )
        assert [h.memory_id for h in await store.search(cube, other.embedding, k=5)] == [good.id]
        assert await store.checkpoint(position(unique, 0).topic, 0) == 0


async def test_many_replacements_compact_without_changing_results(tmp_path: Path, unique: str) -> None:
    cube = f"c-{unique}"
    rng = random.Random(8)
    async with EmbeddedVectorStore(
        f"sqlite:///{tmp_path / 'v.db'}", ann_threshold=50, ann_pending_limit=10
    ) as store:
        latest = {}
        for round_ in range(30):
            records = [make_memory(cube, f"m{i}-{unique}", embedding=random_unit(rng, 8)) for i in range(100)]
            latest = {r.id: r for r in records}
            await store.apply([UpsertMemory(memory=r) for r in records], position(unique, round_))
            await store.search(cube, records[0].embedding, k=1)
        assert store.stats()[cube]["live"] == 100
        query = random_unit(rng, 8)
        hits = await store.search(cube, query, k=5)
        assert [h.memory_id for h in hits] == [i for i, _ in brute_force(list(latest.values()), query, 5)]


def test_an_index_built_off_the_lock_survives_writes_made_meanwhile() -> None:
    rng = np.random.default_rng(6)
    cube = CubeVectors(16, hnsw=Hnsw())
    ids = [f"m{i}" for i in range(300)]
    cube.append(
        ids, rng.standard_normal((300, 16)).astype(np.float32), np.ones(300, bool), np.zeros(300, np.int32)
    )
    build = cube.plan()
    # Writes while the build runs elsewhere: a removal, a replaced vector and a new memory.
    cube.remove("m0")
    moved = rng.standard_normal(16).astype(np.float32)
    cube.put("m1", moved, True, 0)
    cube.append(
        ["new"], rng.standard_normal((1, 16)).astype(np.float32), np.ones(1, bool), np.zeros(1, np.int32)
    )
    assert cube.install(build, build.build())
    assert (cube.live, cube.indexed, cube.pending) == (300, 298, 2)
    hits = cube.search(moved, 300, codes=None, include_retired=False, use_index=True)
    assert hits[0][0] == "m1"
    assert sorted(i for i, _ in hits) == sorted(["new", *ids[1:]])


def test_an_index_planned_before_a_compaction_is_discarded() -> None:
    rng = np.random.default_rng(7)
    cube = CubeVectors(8, hnsw=Hnsw())
    cube.append([f"m{i}" for i in range(3000)], rng.standard_normal((3000, 8)).astype(np.float32),
                np.ones(3000, bool), np.zeros(3000, np.int32))  # fmt: skip
    build = cube.plan()
    for i in range(2500):  # renumbers the rows
        cube.remove(f"m{i}")
    assert not cube.install(build, build.build())
    assert not cube.has_index and cube.live == 500


async def test_a_memorys_score_does_not_depend_on_where_its_row_lies(tmp_path: Path, unique: str) -> None:
    """The same vectors in two cubes laid out in opposite orders (as a replay may lay out a live cube)
    score bit for bit the same: equal ties rank equally live and after replay."""
    rng = random.Random(21)
    vectors = [random_unit(rng, 384) for _ in range(37)]
    async with EmbeddedVectorStore(f"sqlite:///{tmp_path / 'v.db'}") as store:
        for cube, order in ((f"a-{unique}", range(37)), (f"b-{unique}", reversed(range(37)))):
            ops = [UpsertMemory(memory=make_memory(cube, f"{cube}-{i:02d}", embedding=vectors[i])) for i in order]
            await store.apply(ops, position(cube, 0))
        for query in (vectors[0], vectors[36], random_unit(rng, 384)):
            a = {h.memory_id[-2:]: h.score for h in await store.search(f"a-{unique}", query, k=37)}
            b = {h.memory_id[-2:]: h.score for h in await store.search(f"b-{unique}", query, k=37)}
            assert len(a) == 37 and a == b
