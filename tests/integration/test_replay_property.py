"""Replay property: redelivered, incremental, rebuilt and fresh projections all end in the same state.

Random histories of memory events (adds, revisions, retirements, relations over three cubes on two
partitions) go through the real projector into the embedded graph, vector and keyword stores:

* incrementally, in random batches, with duplicates and re-sends of earlier positions;
* into a fresh store, each position once;
* after dropping one cube of the incremental store and replaying that cube's events with replay=True,
  position by position and then as ``replay_cube`` plans batches (revisions folded, ops by kind).

All three must agree on every cube's memories (retired included), edges, vector and keyword results.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory_store.embedded import EmbeddedGraphStore, EmbeddedKeywordIndex, EmbeddedVectorStore
from memory_store.embedded.db import EmbeddedProjection
from memory_store.embedded.keyword_tantivy import TantivyKeywordIndex
from processors.fold import fold_revisions
from processors.projection import project
from schemas.codec import decode, encode
from schemas.envelope import Position
from schemas.events import (
    Event,
    MemoryAdded,
    MemoryRetired,
    MemoryRevised,
    RelationAdded,
    SourceRef,
    derive_id,
)
from schemas.ops import AnyOp, DropCube
from schemas.topics import MEMORIES
from streams.replay import by_kind

CUBES = ("alpha", "beta", "gamma")
PARTITION = {"alpha": 0, "beta": 1, "gamma": 0}
WORDS = ("tea", "coffee", "berlin", "paris", "violin", "garden", "咖啡", "天气", "budget", "river")
DIM = 6
T0 = datetime(2024, 3, 1, tzinfo=UTC)
ROOT = uuid.UUID("00000000-0000-4000-8000-00000000beef")

Planned = tuple[Sequence[AnyOp], Position]


def _vector(rng: random.Random) -> list[float]:
    return [rng.uniform(-1.0, 1.0) for _ in range(DIM)]


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))


def build_history(actions: Sequence[tuple[str, int, int, int]], seed: int) -> list[tuple[Event, Position]]:
    """Turn abstract actions (kind, cube, a, b) into valid events at positions of the memories topic."""
    rng = random.Random(seed)
    memories: dict[str, list[str]] = {c: [] for c in CUBES}
    offsets = {0: 0, 1: 0}
    revisions: dict[str, int] = {}
    history: list[tuple[Event, Position]] = []
    for i, (kind, cube_index, a, b) in enumerate(actions):
        cube = CUBES[cube_index]
        own = memories[cube]
        event_id = derive_id(ROOT, i)
        at = T0 + timedelta(seconds=i)
        event: Event
        if kind == "add" or not own:
            memory_id = f"{cube}-m{len(own)}"
            own.append(memory_id)
            event = MemoryAdded(
                event_id=event_id, occurred_at=at, key=cube, memory_id=memory_id, cube_id=cube, user_id="u",
                memory=_text(rng), memory_type=rng.choice(["LongTermMemory", "UserMemory"]),
                tags=[rng.choice(WORDS)], sources=[SourceRef(content=f"src {i}")], metadata={"i": i},
                embedding=[] if a % 7 == 6 else _vector(rng), embedding_model="test",
            )  # fmt: skip
        elif kind == "revise":
            memory_id = own[a % len(own)]
            revisions[memory_id] = revisions.get(memory_id, 0) + 1
            event = MemoryRevised(
                event_id=event_id, occurred_at=at, key=cube, memory_id=memory_id, cube_id=cube,
                revision=revisions[memory_id], memory=_text(rng) if b % 3 else "",
                tags=[rng.choice(WORDS)] if b % 2 else [], metadata={"rev": i, "i": -i},
                sources=[SourceRef(content=f"src {a % 3}")], embedding=_vector(rng) if b % 2 else [],
            )  # fmt: skip
        elif kind == "retire":
            memory_id = own[a % len(own)]
            successors = [own[b % len(own)]] if b % 2 else []
            event = MemoryRetired(event_id=event_id, occurred_at=at, key=cube, memory_id=memory_id, cube_id=cube,
                                  reason="superseded", successor_ids=successors)  # fmt: skip
        else:
            event = RelationAdded(
                event_id=event_id, occurred_at=at, key=cube, relation_id=f"{cube}-r{a % 4}", cube_id=cube,
                source_id=own[a % len(own)], target_id=own[b % len(own)], relation="RELATES", weight=(b % 5) / 4,
            )  # fmt: skip
        partition = PARTITION[cube]
        history.append((event, Position(MEMORIES, partition, offsets[partition])))
        offsets[partition] += 1
    return history


@dataclass
class Stores:
    graph: EmbeddedGraphStore
    vector: EmbeddedVectorStore
    keyword: EmbeddedKeywordIndex | TantivyKeywordIndex

    @property
    def all(self) -> tuple[EmbeddedProjection, ...]:
        return (self.graph, self.vector, self.keyword)

    async def apply_many(self, batch: Sequence[Planned], *, replay: bool = False) -> None:
        for store in self.all:
            await store.apply_many(batch, replay=replay)


async def open_stores(path: Path, keyword: str = "fts5") -> Stores:
    """The three embedded stores in one file; the keyword index FTS5 or ("tantivy", "tantivy-flush") tantivy beside
    it (live batches leave documents pending: the pending ones must search like committed ones)."""
    url = f"sqlite:///{path}"
    keywords: EmbeddedKeywordIndex | TantivyKeywordIndex
    if keyword.startswith("tantivy"):  # "tantivy-flush": a cube's pending documents written every 2, not 128
        keywords = TantivyKeywordIndex(url, synchronous="OFF", flush_docs=2 if keyword == "tantivy-flush" else 128)
    else:
        keywords = EmbeddedKeywordIndex(url, synchronous="OFF")
    stores = Stores(EmbeddedGraphStore(url, synchronous="OFF"), EmbeddedVectorStore(url, synchronous="OFF"), keywords)
    for store in stores.all:
        await store.start()
    return stores


async def snapshot(stores: Stores) -> dict[str, Any]:
    """Everything observable through the ports, per cube."""
    probe = random.Random(99)
    queries = [_vector(probe) for _ in range(3)]
    state: dict[str, Any] = {}
    for cube in CUBES:
        vector_hits = []
        for query in queries:
            for retired in (False, True):
                hits = await stores.vector.search(cube, query, k=5, include_retired=retired)
                vector_hits.append([(h.memory_id, round(h.score, 5)) for h in hits])
        keyword_hits = []
        for word in (*WORDS, "tea paris 天气"):
            for retired in (False, True):
                hits = await stores.keyword.search(cube, word, k=5, include_retired=retired)
                keyword_hits.append([(h.memory_id, round(h.score, 6)) for h in hits])
        state[cube] = {
            "memories": [
                r.model_dump() for r in await stores.graph.list_memories(cube, include_retired=True)
            ],
            "relations": [r.model_dump() for r in await stores.graph.relations(cube)],
            "vector": vector_hits,
            "dimension": await stores.vector.dimension(cube),
            "keyword": keyword_hits,
        }
    return state


async def checkpoints(stores: Stores) -> list[int | None]:
    return [await s.checkpoint(MEMORIES, p) for s in stores.all for p in (0, 1)]


def _chunks(items: Sequence[Planned], sizes: Sequence[int]) -> list[list[Planned]]:
    chunks, start, i = [], 0, 0
    while start < len(items):
        size = sizes[i % len(sizes)] if sizes else len(items)
        chunks.append(list(items[start : start + size]))
        start += size
        i += 1
    return chunks


async def scenario(
    tmp: Path, actions: Sequence[tuple[str, int, int, int]], seed: int, resends: Sequence[tuple[int, int]],
    sizes: Sequence[int], replay_cube: int, keyword: str = "fts5",
) -> None:  # fmt: skip
    # Events as the log holds them (float32 vectors). The fresh and incremental builds project them with
    # plain float lists; the cube replay below projects them as decoded from the log's bytes (vectors
    # carrying their float32 bytes, which the stores then use as they are).
    logged = [(decode(encode(event)), pos) for event, pos in build_history(actions, seed)]
    history = [(type(event).model_validate(event.model_dump()), pos) for event, pos in logged]
    planned: list[Planned] = [(project(event), pos) for event, pos in history]

    # Each position once, into a fresh store.
    fresh = await open_stores(tmp / "fresh.db", keyword)
    await fresh.apply_many(planned)
    expected = await snapshot(fresh)
    expected_checkpoints = await checkpoints(fresh)

    # Incrementally, in batches, with duplicates and re-sends of earlier positions.
    deliveries: list[Planned] = []
    extra: dict[int, list[int]] = {}
    for after, earlier in resends:
        extra.setdefault(after % len(planned), []).append(min(earlier % len(planned), after % len(planned)))
    for i, item in enumerate(planned):
        deliveries.append(item)
        deliveries.extend(planned[j] for j in extra.get(i, []))
    incremental = await open_stores(tmp / "incremental.db", keyword)
    for chunk in _chunks(deliveries, sizes):
        await incremental.apply_many(chunk)
    assert await snapshot(incremental) == expected
    assert await checkpoints(incremental) == expected_checkpoints

    # Drop one cube and rebuild it from its own events with replay=True.
    cube = CUBES[replay_cube]
    partition = PARTITION[cube]
    own = [(project(event), pos) for event, pos in logged if event.key == cube]
    await incremental.apply_many([([DropCube(cube_id=cube)], Position(MEMORIES, partition, -1))], replay=True)
    dropped = await snapshot(incremental)
    assert dropped[cube]["memories"] == [] and dropped[cube]["relations"] == []
    for chunk in _chunks(own, sizes):
        await incremental.apply_many(chunk, replay=True)
    assert await snapshot(incremental) == expected
    assert await checkpoints(incremental) == expected_checkpoints

    # Again as replay_cube plans it: each batch's ops with revisions folded into their upserts, by kind.
    assert all(store.folds_revisions for store in incremental.all)
    await incremental.apply_many([([DropCube(cube_id=cube)], Position(MEMORIES, partition, -1))], replay=True)
    retired: set[str] = set()
    for chunk in _chunks(own, [size * 3 for size in sizes]):
        ops = by_kind(fold_revisions([op for ops, _ in chunk for op in ops], retired))
        await incremental.apply_many([(ops, chunk[-1][1])], replay=True)
    assert await snapshot(incremental) == expected
    assert await checkpoints(incremental) == expected_checkpoints

    for stores in (fresh, incremental):
        for store in stores.all:
            await store.aclose()


ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["add", "add", "revise", "retire", "relate"]),
        st.integers(0, len(CUBES) - 1),
        st.integers(0, 20),
        st.integers(0, 20),
    ),
    min_size=1,
    max_size=24,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    actions=ACTIONS,
    seed=st.integers(0, 2**16),
    resends=st.lists(st.tuples(st.integers(0, 100), st.integers(0, 100)), max_size=12),
    sizes=st.lists(st.integers(1, 8), max_size=4),
    replay_cube=st.integers(0, len(CUBES) - 1),
    keyword=st.sampled_from(["fts5", "tantivy", "tantivy-flush"]),
)
def test_incremental_with_redelivery_equals_fresh_and_equals_cube_replay(
    actions: list[tuple[str, int, int, int]], seed: int, resends: list[tuple[int, int]], sizes: list[int],
    replay_cube: int, keyword: str,
) -> None:  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp), actions, seed, resends, sizes, replay_cube, keyword))


def test_revision_heavy_history_folds_and_still_equals_the_fresh_build() -> None:
    """Revisions right after their adds, around retirements and edges: folded they still give the same state."""
    actions = [("add", 0, 0, 0), ("revise", 0, 0, 1), ("revise", 0, 0, 2), ("add", 0, 0, 0), ("revise", 0, 1, 5),
               ("retire", 0, 1, 0), ("revise", 0, 1, 3), ("relate", 0, 0, 1), ("revise", 0, 0, 4),
               ("add", 1, 0, 0), ("revise", 1, 0, 1), ("add", 0, 0, 0), ("revise", 0, 2, 1)]  # fmt: skip
    own = [project(event) for event, _ in build_history(actions, 7) if event.key == CUBES[0]]
    ops = [op for ops in own for op in ops]
    # three revisions of alpha-m0 (one past an edge), alpha-m1's before its retirement, alpha-m2's fold
    assert len(fold_revisions(ops, set())) == len(ops) - 5
    for keyword in ("fts5", "tantivy", "tantivy-flush"):
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(scenario(Path(tmp), actions, 7, [], [], 0, keyword))
