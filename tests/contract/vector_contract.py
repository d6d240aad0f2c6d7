"""The VectorStore contract: every adapter's test class subclasses VectorStoreContract.

A subclass provides the fixture ``vector_store``: a started store, isolated per test. Expected results
come from a numpy brute-force cosine search over the same vectors.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import pytest

from memory_store.base import Ask, VectorStore
from schemas.errors import DimensionMismatch
from schemas.memory import MemoryRecord
from schemas.ops import DropCube, RetireMemory, ReviseMemory, UpsertMemory
from tests.contract.graph_contract import T0, make_memory, position, random_unit

__all__ = ["VectorStoreContract", "brute_force"]


def brute_force(records: Sequence[MemoryRecord], query: Sequence[float], k: int) -> list[tuple[str, float]]:
    """Exact top k (id, cosine), best first."""
    matrix = np.array([r.embedding for r in records], dtype=np.float64)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    q = np.asarray(query, dtype=np.float64)
    scores = matrix @ (q / np.linalg.norm(q))
    order = sorted(range(len(records)), key=lambda i: (-scores[i], records[i].id))
    return [(records[i].id, float(scores[i])) for i in order[:k]]


class VectorStoreContract:
    """Behaviour every VectorStore adapter must show. Needs fixtures ``vector_store`` and ``unique``."""

    dim = 16

    @pytest.fixture
    def cube(self, unique: str) -> str:
        return f"vcube-{unique}-a"

    @pytest.fixture
    def other_cube(self, unique: str) -> str:
        return f"vcube-{unique}-b"

    def _records(
        self, cube: str, unique: str, count: int, *, seed: int = 7, dim: int | None = None
    ) -> list[MemoryRecord]:
        rng = random.Random(seed)
        return [
            make_memory(cube, f"v{i:04d}-{unique}", embedding=random_unit(rng, dim or self.dim), minute=i)
            for i in range(count)
        ]

    async def _load(
        self, store: VectorStore, unique: str, records: Sequence[MemoryRecord], offset: int = 0
    ) -> None:
        assert await store.apply([UpsertMemory(memory=r) for r in records], position(unique, offset))

    async def test_top_k_matches_brute_force(self, vector_store: VectorStore, unique: str, cube: str) -> None:
        records = self._records(cube, unique, 60)
        await self._load(vector_store, unique, records)
        rng = random.Random(11)
        for _ in range(8):
            query = random_unit(rng, self.dim)
            got = await vector_store.search(cube, query, k=5)
            expected = brute_force(records, query, 5)
            assert [h.memory_id for h in got] == [i for i, _ in expected]
            assert [h.score for h in got] == pytest.approx([s for _, s in expected], abs=1e-4)
            assert all(h.cube_id == cube for h in got)

    async def test_search_many_answers_as_search_does_for_each_vector(
        self, vector_store: VectorStore, unique: str, cube: str, other_cube: str
    ) -> None:
        records = self._records(cube, unique, 40)
        await self._load(vector_store, unique, records)
        rng = random.Random(12)
        queries = [random_unit(rng, self.dim) for _ in range(6)]
        many = await vector_store.search_many(cube, queries, k=4)
        assert len(many) == 6
        for query, hits in zip(queries, many, strict=True):
            one = await vector_store.search(cube, query, k=4)
            assert [h.memory_id for h in hits] == [h.memory_id for h in one] == [i for i, _ in brute_force(records, query, 4)]
            assert [h.score for h in hits] == pytest.approx([h.score for h in one], abs=1e-6)
        assert await vector_store.search_many(cube, [], k=4) == []
        assert await vector_store.search_many(other_cube, queries[:2], k=4) == [[], []]  # no vectors there
        with pytest.raises(DimensionMismatch):
            await vector_store.search_many(cube, [queries[0], [1.0, 0.0]], k=4)

    async def test_scores_are_cosine_best_first(
        self, vector_store: VectorStore, unique: str, cube: str
    ) -> None:
        records = self._records(cube, unique, 20)
        await self._load(vector_store, unique, records)
        target = records[3]
        hits = await vector_store.search(cube, [2.0 * x for x in target.embedding], k=20)
        assert hits[0].memory_id == target.id
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
        assert all(-1.0 - 1e-6 <= s <= 1.0 + 1e-6 for s in scores)
        assert len(hits) == 20
        assert len(await vector_store.search(cube, target.embedding, k=3)) == 3

    async def test_nearest_neighbour_of_a_stored_vector_is_itself(
        self, vector_store: VectorStore, unique: str, cube: str
    ) -> None:
        records = self._records(cube, unique, 400, dim=32)
        await self._load(vector_store, unique, records)
        rng = np.random.default_rng(5)
        for record in records[::20]:
            noisy = np.asarray(record.embedding) + rng.normal(0.0, 0.01, 32)
            hits = await vector_store.search(cube, noisy.tolist(), k=1)
            assert [h.memory_id for h in hits] == [record.id]

    async def test_top_1_agrees_with_exact_search_on_random_queries(
        self, vector_store: VectorStore, unique: str, cube: str
    ) -> None:
        records = self._records(cube, unique, 400, dim=32)
        await self._load(vector_store, unique, records)
        rng = random.Random(3)
        agree = 0
        for _ in range(30):
            query = random_unit(rng, 32)
            hits = await vector_store.search(cube, query, k=1)
            agree += hits[0].memory_id == brute_force(records, query, 1)[0][0]
        assert agree >= 28

    async def test_retired_memories_are_left_out_unless_asked(
        self, vector_store: VectorStore, unique: str, cube: str
    ) -> None:
        records = self._records(cube, unique, 10)
        await self._load(vector_store, unique, records)
        target = records[4]
        retire = RetireMemory(memory_id=target.id, cube_id=cube, reason="deleted", updated_at=T0)
        assert await vector_store.apply([retire], position(unique, 1))
        hits = await vector_store.search(cube, target.embedding, k=10)
        assert target.id not in [h.memory_id for h in hits]
        assert len(hits) == 9
        with_retired = await vector_store.search(cube, target.embedding, k=1, include_retired=True)
        assert [h.memory_id for h in with_retired] == [target.id]

    async def test_a_retirement_before_its_memory_is_not_lost(
        self, vector_store: VectorStore, unique: str, cube: str
    ) -> None:
        records = self._records(cube, unique, 5)
        early = records[2]
        retire = RetireMemory(memory_id=early.id, cube_id=cube, reason="refined", updated_at=T0)
        assert await vector_store.apply([retire], position(unique, 0))
        assert await vector_store.search(cube, early.embedding, k=5) == []
        await self._load(vector_store, unique, records, offset=1)
        hits = await vector_store.search(cube, early.embedding, k=10)
        assert early.id not in [h.memory_id for h in hits] and len(hits) == 4
        assert [
            h.memory_id for h in await vector_store.search(cube, early.embedding, k=1, include_retired=True)
        ] == [early.id]
        await self._load(vector_store, unique, [early], offset=2)  # redelivered: retirement is terminal
        assert early.id not in [h.memory_id for h in await vector_store.search(cube, early.embedding, k=10)]

    async def test_memory_type_filter(self, vector_store: VectorStore, unique: str, cube: str) -> None:
        rng = random.Random(1)
        records = [
            make_memory(
                cube,
                f"t{i}-{unique}",
                embedding=random_unit(rng, self.dim),
                memory_type="PreferenceMemory" if i % 3 == 0 else "LongTermMemory",
            )  # fmt: skip
            for i in range(12)
        ]
        await self._load(vector_store, unique, records)
        prefs = [r for r in records if r.memory_type == "PreferenceMemory"]
        query = records[1].embedding
        hits = await vector_store.search(cube, query, k=10, memory_types=["PreferenceMemory"])
        assert [h.memory_id for h in hits] == [i for i, _ in brute_force(prefs, query, 10)]
        assert await vector_store.search(cube, query, k=10, memory_types=["SkillMemory"]) == []

    async def test_search_each_answers_every_ask_as_search_would(
        self, vector_store: VectorStore, unique: str, cube: str, other_cube: str
    ) -> None:
        rng = random.Random(2)
        types = ["PreferenceMemory", "LongTermMemory", "ToolTrajectoryMemory"]
        records = [
            make_memory(cube, f"e{i}-{unique}", embedding=random_unit(rng, self.dim), memory_type=types[i % 3])
            for i in range(15)
        ]
        await self._load(vector_store, unique, records)
        retire = RetireMemory(memory_id=records[1].id, cube_id=cube, reason="superseded", updated_at=T0)
        assert await vector_store.apply([retire], position(unique, 1))
        asks = [
            Ask(3, ["LongTermMemory"]),
            Ask(10, ["PreferenceMemory", "ToolTrajectoryMemory"]),
            Ask(5, ["SkillMemory"]),  # a type the cube has none of
            Ask(0, None),
            Ask(4, None),
            Ask(2, []),
        ]
        query = random_unit(rng, self.dim)
        for retired in (False, True):
            each = await vector_store.search_each(cube, query, asks, include_retired=retired)
            one = [
                await vector_store.search(cube, query, k=a.k, memory_types=a.memory_types, include_retired=retired)
                for a in asks
            ]
            assert [[h.memory_id for h in hits] for hits in each] == [[h.memory_id for h in hits] for hits in one]
            for got, want in zip(each, one, strict=True):
                assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-6)
            for ask, hits in zip(asks, each, strict=True):  # and as an exact search of those records would
                pool = [r for r in records if (ask.memory_types is None or r.memory_type in ask.memory_types)
                        and (retired or r.id != records[1].id)]  # fmt: skip
                expected = [i for i, _ in brute_force(pool, query, ask.k)] if pool and ask.k > 0 else []
                assert [h.memory_id for h in hits] == expected
            assert [len(hits) for hits in each] == [3, 10, 0, 0, 4, 0]
        assert await vector_store.search_each(other_cube, query, asks) == [[] for _ in asks]
        with pytest.raises(DimensionMismatch):
            await vector_store.search_each(cube, [1.0, 0.0], asks)

    async def test_revised_embedding_moves_the_memory(
        self, vector_store: VectorStore, unique: str, cube: str
    ) -> None:
        records = self._records(cube, unique, 10)
        await self._load(vector_store, unique, records)
        moved, anchor = records[0], records[9]
        revise = ReviseMemory(memory_id=moved.id, cube_id=cube, memory="moved", embedding=anchor.embedding,
                              revision=1, updated_at=T0)  # fmt: skip
        assert await vector_store.apply([revise], position(unique, 1))
        hits = await vector_store.search(cube, anchor.embedding, k=2)
        assert sorted(h.memory_id for h in hits) == sorted([moved.id, anchor.id])
        assert all(h.score == pytest.approx(1.0, abs=1e-4) for h in hits)
        old_hits = await vector_store.search(cube, moved.embedding, k=1)
        assert old_hits[0].memory_id != moved.id
        # Re-applying the same revision changes nothing.
        before = await vector_store.search(cube, anchor.embedding, k=20)
        assert await vector_store.apply([revise], position(unique, 2))
        after = await vector_store.search(cube, anchor.embedding, k=20)
        assert [h.memory_id for h in after] == [h.memory_id for h in before]
        assert len(after) == 10

    async def test_upserting_again_is_idempotent(
        self, vector_store: VectorStore, unique: str, cube: str
    ) -> None:
        records = self._records(cube, unique, 8)
        await self._load(vector_store, unique, records)
        before = await vector_store.search(cube, records[2].embedding, k=8)
        await self._load(vector_store, unique, records, offset=1)
        after = await vector_store.search(cube, records[2].embedding, k=8)
        assert [h.memory_id for h in after] == [h.memory_id for h in before]
        assert len(after) == 8

    async def test_memories_without_embedding_are_not_searchable(
        self, vector_store: VectorStore, unique: str, cube: str
    ) -> None:
        records = self._records(cube, unique, 3)
        bare = make_memory(cube, f"bare-{unique}", embedding=())
        await self._load(vector_store, unique, [*records, bare])
        hits = await vector_store.search(cube, records[0].embedding, k=10)
        assert sorted(h.memory_id for h in hits) == sorted(r.id for r in records)

    async def test_dimension_and_mismatch(self, vector_store: VectorStore, unique: str, cube: str) -> None:
        assert await vector_store.dimension(cube) is None
        assert await vector_store.search(cube, [1.0] * self.dim, k=3) == []
        records = self._records(cube, unique, 3)
        await self._load(vector_store, unique, records)
        assert await vector_store.dimension(cube) == self.dim
        with pytest.raises(DimensionMismatch):
            await vector_store.search(cube, [1.0] * (self.dim + 1), k=3)
        wrong = make_memory(cube, f"wrong-{unique}", embedding=(1.0, 0.0, 0.0))
        with pytest.raises(DimensionMismatch):
            await vector_store.apply([UpsertMemory(memory=wrong)], position(unique, 1))
        hits = await vector_store.search(cube, records[0].embedding, k=10)
        assert sorted(h.memory_id for h in hits) == sorted(r.id for r in records)

    async def test_same_position_twice_is_skipped_and_replay_keeps_the_checkpoint(
        self, vector_store: VectorStore, unique: str, cube: str
    ) -> None:
        first, second, third = self._records(cube, unique, 3)
        assert await vector_store.apply([UpsertMemory(memory=first)], position(unique, 5))
        assert not await vector_store.apply([UpsertMemory(memory=second)], position(unique, 5))
        assert not await vector_store.apply([UpsertMemory(memory=second)], position(unique, 1))
        hits = await vector_store.search(cube, second.embedding, k=10)
        assert [h.memory_id for h in hits] == [first.id]
        assert await vector_store.apply([UpsertMemory(memory=third)], position(unique, 2), replay=True)
        assert await vector_store.checkpoint(position(unique, 0).topic, 0) == 5
        hits = await vector_store.search(cube, third.embedding, k=10)
        assert [h.memory_id for h in hits] == [third.id, first.id]

    async def test_drop_cube_removes_only_that_cube(
        self, vector_store: VectorStore, unique: str, cube: str, other_cube: str
    ) -> None:
        mine = self._records(cube, unique, 5)
        theirs = [r.model_copy(update={"id": f"o-{r.id}", "cube_id": other_cube}) for r in mine]
        await self._load(vector_store, unique, [*mine, *theirs])
        assert await vector_store.apply([DropCube(cube_id=cube)], position(unique, 1))
        assert await vector_store.search(cube, mine[0].embedding, k=5) == []
        assert await vector_store.dimension(cube) is None
        hits = await vector_store.search(other_cube, mine[0].embedding, k=5)
        assert [h.memory_id for h in hits][0] == f"o-{mine[0].id}"
        assert len(hits) == 5
        # A dropped cube may come back with another dimension.
        again = self._records(cube, unique, 2, dim=self.dim * 2)
        await self._load(vector_store, unique, again, offset=2)
        assert await vector_store.dimension(cube) == self.dim * 2

    async def test_cubes_are_isolated(
        self, vector_store: VectorStore, unique: str, cube: str, other_cube: str
    ) -> None:
        mine = self._records(cube, unique, 4, seed=1)
        theirs = [r.model_copy(update={"id": f"o-{r.id}", "cube_id": other_cube}) for r in self._records(
            cube, unique, 4, seed=2)]  # fmt: skip
        await self._load(vector_store, unique, [*mine, *theirs])
        hits = await vector_store.search(cube, theirs[0].embedding, k=10)
        assert sorted(h.memory_id for h in hits) == sorted(r.id for r in mine)
        assert all(h.cube_id == cube for h in hits)
