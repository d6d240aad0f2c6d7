"""The embedded vector store shared by two processes: writes made through one store are found by the other's
next search (the journal), as two connections to one file; the server beside its derivation process."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from memory_store.embedded import EmbeddedVectorStore
from schemas.memory import MemoryRecord
from schemas.ops import DropCube, RetireMemory, ReviseMemory, UpsertMemory
from tests.contract.graph_contract import T0, make_memory, position, random_unit
from tests.contract.vector_contract import brute_force


def _memories(cube: str, unique: str, rng: random.Random, n: int, dim: int = 8, tag: str = "m") -> list[MemoryRecord]:
    return [make_memory(cube, f"{tag}{i}-{unique}", embedding=random_unit(rng, dim)) for i in range(n)]


async def _ids(store: EmbeddedVectorStore, cube: str, query: tuple[float, ...], k: int = 5) -> list[str]:
    return [h.memory_id for h in await store.search(cube, query, k=k)]


@pytest.mark.parametrize("ann", [False, True], ids=["exact", "ann"])
async def test_every_kind_of_write_in_one_store_is_seen_by_the_other(tmp_path: Path, unique: str, ann: bool) -> None:
    cube = f"c-{unique}"
    rng = random.Random(11)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    opts = {"ann_threshold": 8, "ann_pending_limit": 4} if ann else {}
    records = _memories(cube, unique, rng, 40)
    query = random_unit(rng, 8)
    async with EmbeddedVectorStore(url, **opts) as writer, EmbeddedVectorStore(url, **opts) as reader:
        assert await reader.dimension(cube) is None
        await writer.apply([UpsertMemory(memory=r) for r in records], position(unique, 0))
        assert await reader.dimension(cube) == 8
        assert await _ids(reader, cube, query) == [i for i, _ in brute_force(records, query, 5)]

        retired = await _ids(reader, cube, query, k=3)
        await writer.apply([RetireMemory(memory_id=i, cube_id=cube, reason="deleted", updated_at=T0)
                            for i in retired], position(unique, 1))  # fmt: skip
        left = [r for r in records if r.id not in retired]
        assert await _ids(reader, cube, query) == [i for i, _ in brute_force(left, query, 5)]

        target = left[-1]  # revised to the query's own vector: now the best hit
        await writer.apply([ReviseMemory(memory_id=target.id, cube_id=cube, memory="revised", embedding=query,
                                         revision=2, updated_at=T0)], position(unique, 2))  # fmt: skip
        assert (await _ids(reader, cube, query))[0] == target.id

        await writer.apply([DropCube(cube_id=cube)], position(unique, 3))
        assert await reader.search(cube, query, k=5) == []
        assert await reader.dimension(cube) is None

        again = _memories(cube, unique, rng, 6, dim=4, tag="n")  # the dropped cube's id with another dimension
        await writer.apply([UpsertMemory(memory=r) for r in again], position(unique, 4))
        query4 = random_unit(rng, 4)
        assert await _ids(reader, cube, query4) == [i for i, _ in brute_force(again, query4, 5)]
        assert await reader.dimension(cube) == 4


async def test_own_writes_are_not_read_back_and_interleaved_writes_are(tmp_path: Path, unique: str) -> None:
    cube = f"c-{unique}"
    rng = random.Random(12)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    a_records, b_records = _memories(cube, unique, rng, 10, tag="a"), _memories(cube, unique, rng, 10, tag="b")
    async with EmbeddedVectorStore(url) as a, EmbeddedVectorStore(url) as b:
        await a.apply([UpsertMemory(memory=r) for r in a_records], position(unique, 0))
        assert a._seen_seq == 1  # its own batch: nothing to read back
        # b has not looked since a wrote: its own batch does not move it past a's, so its next search reads both
        await b.apply([UpsertMemory(memory=r) for r in b_records], position(unique, 1))
        assert b._seen_seq == 0
        query = random_unit(rng, 8)
        expected = [i for i, _ in brute_force(a_records + b_records, query, 8)]
        assert await _ids(b, cube, query, k=8) == expected
        assert b._seen_seq == 2
        assert await _ids(a, cube, query, k=8) == expected
        assert a._seen_seq == 2


async def test_a_store_behind_the_pruned_journal_reloads_everything(tmp_path: Path, unique: str) -> None:
    cube = f"c-{unique}"
    rng = random.Random(13)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    records = _memories(cube, unique, rng, 30)
    async with EmbeddedVectorStore(url) as writer, EmbeddedVectorStore(url) as reader:
        writer.journal_keep, writer.journal_prune_every = 2, 1
        await writer.apply([UpsertMemory(memory=records[0])], position(unique, 0))
        assert await _ids(reader, cube, records[0].embedding, k=1) == [records[0].id]
        for n, record in enumerate(records[1:], start=1):
            await writer.apply([UpsertMemory(memory=record)], position(unique, n))
        await writer.apply([RetireMemory(memory_id=records[0].id, cube_id=cube, reason="deleted", updated_at=T0)],
                           position(unique, 30))  # fmt: skip
        query = random_unit(rng, 8)
        assert await _ids(reader, cube, query, k=30) == [i for i, _ in brute_force(records[1:], query, 30)]
        assert reader.stats()[cube]["live"] == 30  # the retired one is kept (include_retired), not duplicated


async def test_a_cube_dropped_and_rebuilt_elsewhere_is_read_back_once(tmp_path: Path, unique: str) -> None:
    """What a replay in another process (``memos replay`` beside a server) leaves: the cube dropped, then
    written again in several batches, all read back by one refresh (the cube's rows once, each memory once)."""
    cube, other = f"c-{unique}", f"o-{unique}"
    rng = random.Random(15)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    old, kept = _memories(cube, unique, rng, 12, tag="old"), _memories(other, unique, rng, 5, tag="k")
    new = _memories(cube, unique, rng, 30, tag="new")
    async with EmbeddedVectorStore(url) as writer, EmbeddedVectorStore(url) as reader:
        await writer.apply([UpsertMemory(memory=r) for r in old + kept], position(unique, 0))
        query = random_unit(rng, 8)
        assert await _ids(reader, cube, query, k=3) == [i for i, _ in brute_force(old, query, 3)]
        await writer.apply([DropCube(cube_id=cube)], position(unique, 1))
        for n, start in enumerate(range(0, 30, 10), start=2):
            await writer.apply([UpsertMemory(memory=r) for r in new[start:start + 10]], position(unique, n))
        gone = new[0].id
        await writer.apply([RetireMemory(memory_id=gone, cube_id=cube, reason="deleted", updated_at=T0)],
                           position(unique, 5))  # fmt: skip
        assert await _ids(reader, cube, query, k=30) == [i for i, _ in brute_force(new[1:], query, 30)]
        assert await _ids(reader, other, query, k=5) == [i for i, _ in brute_force(kept, query, 5)]
        assert reader.stats()[cube]["live"] == 30 and reader.stats()[other]["live"] == 5
        assert reader._seen_seq == writer._seen_seq
