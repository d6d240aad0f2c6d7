"""KeywordIndex contract on the tantivy adapter, plus its exact per-cube BM25 and crash-safe layout."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import tantivy

from memory_store.embedded.keyword_tantivy import TantivyKeywordIndex
from memory_store.embedded.keyword_tantivy_parts import TANTIVY_SCHEMA, analyze, bm25, idf, tantivy_stats
from memory_store.registry import keyword_index_from_url
from schemas.errors import StoreUnavailable
from schemas.ops import AnyOp, DropCube, RetireMemory, ReviseMemory, UpsertMemory
from schemas.text import index_text, query_tokens
from tests.contract.graph_contract import T0, make_memory, position
from tests.contract.keyword_contract import KeywordIndexContract


@pytest.fixture
async def keyword_index(tmp_path: Path) -> AsyncIterator[TantivyKeywordIndex]:
    store = keyword_index_from_url(f"tantivy:///{tmp_path / 'store.db'}")
    assert isinstance(store, TantivyKeywordIndex)
    async with store:
        yield store


class TestTantivyKeywordIndex(KeywordIndexContract):
    """The contract on tantivy, one index folder per cube."""


WORDS = ("tea", "coffee", "berlin", "paris", "violin", "garden", "river", "budget", "咖啡", "天气", "running")


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _expected(
    docs: dict[str, tuple[str, str, str, str]], query: str, k: int, types: list[str] | None, retired: bool
) -> list[tuple[str, float]]:
    """Brute-force BM25 over the cube's live documents (memory, key, type, status), as documented."""
    terms = {i: analyze(f"{index_text(m)} {index_text(key)}") for i, (m, key, _, _) in docs.items()}
    n, total = len(terms), sum(len(t) for t in terms.values())
    wanted = list(dict.fromkeys(analyze(" ".join(query_tokens(query)))))
    df = {w: sum(w in t for t in terms.values()) for w in wanted}
    hits = []
    for i, words in terms.items():
        _, _, memory_type, status = docs[i]
        if (not retired and status == "retired") or (types is not None and memory_type not in types):
            continue
        counts = Counter(words)
        present = [w for w in wanted if counts[w]]
        if present:
            score = sum(bm25(counts[w], len(words), idf(n, df[w]), total / n) for w in present)
            hits.append((i, score))
    return sorted(hits, key=lambda h: (-h[1], h[0]))[:k]


@pytest.mark.parametrize("flush_docs", [1, 7, 128, 100_000])
async def test_scores_are_exact_per_cube_bm25_whatever_the_history(
    tmp_path: Path, unique: str, flush_docs: int
) -> None:
    """Many revisions leave deleted documents in tantivy's segments (its statistics count them); the
    results are still the exact top k of BM25 over the cube's current documents, scores included, whether
    live batches write every document (1), leave some pending (7, 128) or all of them (100,000)."""
    async with TantivyKeywordIndex(f"tantivy:///{tmp_path / 'store.db'}", flush_docs=flush_docs) as keyword_index:
        await _exact_whatever_the_history(keyword_index, unique)


async def _exact_whatever_the_history(keyword_index: TantivyKeywordIndex, unique: str) -> None:
    cube, rng = f"c-{unique}", random.Random(7)
    docs: dict[str, tuple[str, str, str, str]] = {}
    offset = 0
    for round_ in range(4):
        batch = []
        for i in range(300):
            if round_ and i % 3:
                continue  # later rounds rewrite a third of the memories
            memory_id = f"m{i:04d}"
            text, key = _text(rng, rng.randint(1, 12 if i % 5 else 40)), _text(rng, rng.randint(0, 2))
            memory_type = "UserMemory" if i % 4 == 0 else "LongTermMemory"
            docs[memory_id] = (text, key, memory_type, "activated")
            record = make_memory(cube, memory_id, memory=text, key=key, memory_type=memory_type)
            batch.append(([UpsertMemory(memory=record)], position(unique, offset)))
            offset += 1
        await keyword_index.apply_many(batch)
    for i in range(0, 300, 7):
        memory_id = f"m{i:04d}"
        text = _text(rng, rng.randint(1, 6))
        await keyword_index.apply(
            [ReviseMemory(memory_id=memory_id, cube_id=cube, memory=text, revision=1, updated_at=T0)],
            position(unique, offset),
        )
        docs[memory_id] = (text, *docs[memory_id][1:])
        offset += 1
    retire = [
        RetireMemory(memory_id=f"m{i:04d}", cube_id=cube, reason="r", updated_at=T0)
        for i in range(0, 300, 11)
    ]
    await keyword_index.apply(retire, position(unique, offset))
    for op in retire:
        docs[op.memory_id] = (*docs[op.memory_id][:3], "retired")
    for query in (
        "tea",
        "berlin paris",
        "violin garden river",
        "咖啡 天气",
        "run budget coffee",
        "tea coffee",
    ):
        for k, types, retired in (
            (5, None, False),
            (40, None, True),
            (10, ["UserMemory"], False),
            (10, ["SkillMemory"], True),  # a type no document has: nothing, at once
            (10, ["SkillMemory", "UserMemory"], False),
            (500, None, False),
        ):
            got = await keyword_index.search(cube, query, k=k, memory_types=types, include_retired=retired)
            want = _expected(docs, query, k, types, retired)
            assert [(h.memory_id, round(h.score, 9)) for h in got] == [(i, round(s, 9)) for i, s in want]
            assert [h.score for h in got] == pytest.approx([s for _, s in want], rel=1e-9)


async def test_a_cubes_ranking_does_not_depend_on_other_cubes(
    keyword_index: TantivyKeywordIndex, unique: str, tmp_path: Path
) -> None:
    """10k memories added to cube B, then B dropped, leave A's results and A's files as they were."""
    mine, theirs = f"a-{unique}", f"b-{unique}"
    texts = ["green tea with honey", "Alice drinks green tea every morning", "black coffee, no sugar",
             "tea ceremony in Kyoto", "the green door of the tea house"]  # fmt: skip
    await keyword_index.apply_many(
        [([UpsertMemory(memory=make_memory(mine, f"a{i}", memory=t, key="", minute=i))], position(unique, i))
         for i, t in enumerate(texts)]
    )  # fmt: skip
    queries = ("green tea", "tea", "coffee honey", "Kyoto door")
    before = [await keyword_index.search(mine, q, k=10) for q in queries]
    assert all(before)
    folders = tmp_path / "store.db.tantivy"
    (own,) = list(folders.iterdir())
    files = {p.name: p.stat().st_mtime_ns for p in own.iterdir()}
    flood = [UpsertMemory(memory=make_memory(theirs, f"b{i}", memory=f"tea {i} and more tea, green {i % 7}"))
             for i in range(10_000)]  # fmt: skip
    await keyword_index.apply_many(
        [(flood[i : i + 1000], position(unique, 100 + i)) for i in range(0, 10_000, 1000)]
    )
    assert len(await keyword_index.search(theirs, "green tea", k=50)) == 50
    assert len(list(folders.iterdir())) == 2
    assert [await keyword_index.search(mine, q, k=10) for q in queries] == before
    await keyword_index.apply([DropCube(cube_id=theirs)], position(unique, 20_000))
    assert list(folders.iterdir()) == [own]
    assert {p.name: p.stat().st_mtime_ns for p in own.iterdir()} == files
    assert [await keyword_index.search(mine, q, k=10) for q in queries] == before


async def test_two_handles_on_one_home_see_each_others_commits(tmp_path: Path, unique: str) -> None:
    """Like a CLI command beside the server: each takes a cube's writer for one batch only."""
    url = f"tantivy:///{tmp_path / 'store.db'}"
    cube = f"c-{unique}"
    async with TantivyKeywordIndex(url) as first, TantivyKeywordIndex(url) as second:
        await first.apply(
            [UpsertMemory(memory=make_memory(cube, "m1", memory="orchid care"))], position(unique, 0)
        )
        assert [h.memory_id for h in await second.search(cube, "orchid")] == ["m1"]
        await second.apply(
            [UpsertMemory(memory=make_memory(cube, "m2", memory="orchid soil"))], position(unique, 1)
        )
        assert sorted(h.memory_id for h in await first.search(cube, "orchid")) == ["m1", "m2"]


async def test_a_writer_held_elsewhere_is_waited_for_then_the_batch_is_retryable(
    tmp_path: Path, unique: str
) -> None:
    """A cube's writer is kept between batches and let go when idle; another holder is waited for up to
    the busy timeout, then the batch fails retryably and applies once the writer is free (batches that
    write the index: here every one)."""
    cube = f"c-{unique}"
    async with TantivyKeywordIndex(f"tantivy:///{tmp_path / 'store.db'}", busy_timeout_s=0.2, flush_docs=1) as store:
        await store.apply(
            [UpsertMemory(memory=make_memory(cube, "m1", memory="orchid care"))], position(unique, 0)
        )
        assert store.release_writers() == 1
        (folder,) = list((tmp_path / "store.db.tantivy").iterdir())
        other = tantivy.Index(TANTIVY_SCHEMA, path=str(folder), reuse=True)
        writer = other.writer(15_000_000, 1)
        batch = [UpsertMemory(memory=make_memory(cube, "m2", memory="orchid soil"))]
        with pytest.raises(StoreUnavailable):
            await store.apply(batch, position(unique, 1))
        writer.wait_merging_threads()
        assert await store.apply(batch, position(unique, 1))
        assert sorted(h.memory_id for h in await store.search(cube, "orchid")) == ["m1", "m2"]


@pytest.mark.parametrize("flush_docs", [1, 4])
async def test_a_batch_that_fails_after_the_index_commit_is_applied_again_to_the_same_state(
    unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flush_docs: int
) -> None:
    """The tantivy commit precedes the SQLite one: a failure between them leaves the checkpoint behind,
    and the batch applied again ends where a clean apply ends (the second batch writes the index: every
    batch does at 1; at 4 its pending documents reach the flush)."""
    async with TantivyKeywordIndex(f"tantivy:///{tmp_path / 'store.db'}", flush_docs=flush_docs) as keyword_index:
        await _fails_after_the_commit(keyword_index, unique, tmp_path, monkeypatch)


async def _fails_after_the_commit(keyword_index: TantivyKeywordIndex, unique: str, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cube = f"c-{unique}"
    first = [
        UpsertMemory(memory=make_memory(cube, f"m{i}", memory=f"orchid {'care ' * i}")) for i in range(1, 4)
    ]
    second: list[AnyOp] = [
        ReviseMemory(memory_id="m1", cube_id=cube, memory="orchid soil", revision=1, updated_at=T0),
        RetireMemory(memory_id="m2", cube_id=cube, reason="r", updated_at=T0),
        UpsertMemory(memory=make_memory(cube, "m4", memory="orchid orchid")),
    ]
    await keyword_index.apply(first, position(unique, 0))

    def fail(*args: object) -> None:
        raise StoreUnavailable("disk went away")

    with monkeypatch.context() as patch:
        patch.setattr(keyword_index.db, "set_checkpoint_in", fail)
        with pytest.raises(StoreUnavailable):
            await keyword_index.apply(second, position(unique, 1))
    assert await keyword_index.checkpoint(position(unique, 0).topic, 0) == 0
    assert await keyword_index.apply(second, position(unique, 1))
    async with TantivyKeywordIndex(f"tantivy:///{tmp_path / 'clean.db'}") as clean:
        await clean.apply_many([(first, position(unique, 0)), (second, position(unique, 1))])
        for query, retired in (("orchid", False), ("orchid care soil", True)):
            assert await keyword_index.search(cube, query, include_retired=retired) == await clean.search(
                cube, query, include_retired=retired
            )


async def test_a_batch_over_many_cubes_keeps_a_few_writers(tmp_path: Path, unique: str) -> None:
    async with TantivyKeywordIndex(f"tantivy:///{tmp_path / 'store.db'}", flush_docs=1) as keyword_index:
        await _few_writers(keyword_index, unique)


async def _few_writers(keyword_index: TantivyKeywordIndex, unique: str) -> None:
    cubes = [f"c{i}-{unique}" for i in range(20)]
    ops = [
        UpsertMemory(memory=make_memory(c, f"m-{c}", memory=f"orchid number {i}"))
        for i, c in enumerate(cubes)
    ]
    assert await keyword_index.apply(ops, position(unique, 0))
    for cube in cubes:
        assert [h.memory_id for h in await keyword_index.search(cube, "orchid")] == [f"m-{cube}"]
    assert keyword_index.release_writers() <= 8


def test_tantivys_own_statistics_are_read_from_its_explanation() -> None:
    """The exactness bound needs tantivy's N and average length (deleted documents counted)."""
    index = tantivy.Index(TANTIVY_SCHEMA)
    writer = index.writer(15_000_000, 1)
    for n, text in enumerate(["tea green", "tea", "coffee black tea"]):
        doc = tantivy.Document()
        doc.add_unsigned("doc_no", n)
        doc.add_text("key", str(n))
        doc.add_text("text", text)
        writer.add_document(doc)
    writer.commit()
    writer.delete_documents_by_term("key", "0")
    writer.commit()
    writer.wait_merging_threads()
    index.reload()
    searcher = index.searcher()
    query = tantivy.Query.term_query(TANTIVY_SCHEMA, "text", "tea")
    hits = searcher.search(query, 1).hits
    stats = tantivy_stats(json.loads(query.explain(searcher, hits[0][1]).to_json()))
    assert searcher.num_docs == 2
    assert stats == {"N": 3.0, "avgdl": pytest.approx(2.0)}


async def test_a_cube_dropped_by_another_handle_can_be_written_again(tmp_path: Path, unique: str) -> None:
    url = f"tantivy:///{tmp_path / 'store.db'}"
    cube = f"c-{unique}"
    async with TantivyKeywordIndex(url) as server, TantivyKeywordIndex(url) as cli:
        await server.apply(
            [UpsertMemory(memory=make_memory(cube, "m1", memory="orchid care"))], position(unique, 0)
        )
        server.release_writers()
        await cli.apply([DropCube(cube_id=cube)], position(unique, 1))
        assert await server.search(cube, "orchid") == []
        await server.apply(
            [UpsertMemory(memory=make_memory(cube, "m2", memory="orchid soil"))], position(unique, 2)
        )
        assert [h.memory_id for h in await server.search(cube, "orchid")] == ["m2"]
        assert [h.memory_id for h in await cli.search(cube, "orchid")] == ["m2"]


def _committed_docs(folder: Path) -> int:
    """Documents in the cube's tantivy index as committed (0 when it has none yet)."""
    if not (folder / "meta.json").exists():
        return 0
    index = tantivy.Index(TANTIVY_SCHEMA, path=str(folder), reuse=True)
    return int(index.searcher().num_docs)


async def test_live_batches_leave_documents_pending_until_flush_docs(tmp_path: Path, unique: str) -> None:
    """A live batch writes no tantivy segment (a commit costs milliseconds of CPU whatever it holds): the
    cube's documents wait in SQLite, are found from there, stay found after a restart, and are written
    and committed once ``flush_docs`` are pending."""
    url = f"tantivy:///{tmp_path / 'store.db'}"
    cube = f"c-{unique}"

    def add(i: int, text: str) -> tuple[list[AnyOp], object]:
        return [UpsertMemory(memory=make_memory(cube, f"m{i}", memory=text, key=""))], position(unique, i)

    async with TantivyKeywordIndex(url, flush_docs=5) as store:
        for i in range(4):
            await store.apply(*add(i, f"orchid care {'water ' * i}"))  # type: ignore[arg-type]
        found = await store.search(cube, "orchid water", k=10)
        assert [h.memory_id for h in found] == ["m3", "m2", "m1", "m0"]
    (folder,) = list((tmp_path / "store.db.tantivy").iterdir())
    assert _committed_docs(folder) == 0
    async with TantivyKeywordIndex(url, flush_docs=5) as store:
        assert await store.search(cube, "orchid water", k=10) == found  # pending documents outlive the process
        await store.apply(*add(4, "orchid soil"))  # type: ignore[arg-type]
        assert _committed_docs(folder) == 5
        with store.db.read() as conn:
            assert conn.execute(f'SELECT count(*) FROM "kwt_pending_{folder.name}"').fetchone()[0] == 0
        assert [h.memory_id for h in await store.search(cube, "orchid water", k=10)] == ["m3", "m2", "m1", "m0", "m4"]


async def test_a_type_first_written_straight_to_tantivy_is_found_after_a_search_found_none(
    tmp_path: Path, unique: str
) -> None:
    """Whether tantivy holds a type is counted once per searcher reload: a commit that brings the first
    documents of a type (a run written at once, never pending) makes the next search count again."""
    cube = f"c-{unique}"

    def run(memory_type: str, start: int) -> list[AnyOp]:
        return [UpsertMemory(memory=make_memory(cube, f"m{i}", memory="orchid care", key="", memory_type=memory_type))
                for i in range(start, start + 3)]  # fmt: skip

    async with TantivyKeywordIndex(f"tantivy:///{tmp_path / 'store.db'}", flush_docs=2) as store:
        await store.apply(run("LongTermMemory", 0), position(unique, 0))
        assert await store.search(cube, "orchid", k=10, memory_types=["SkillMemory"]) == []
        await store.apply(run("SkillMemory", 3), position(unique, 1))
        found = await store.search(cube, "orchid", k=10, memory_types=["SkillMemory"])
        assert sorted(h.memory_id for h in found) == ["m3", "m4", "m5"]


async def test_a_live_run_of_flush_docs_or_more_is_written_at_once(tmp_path: Path, unique: str) -> None:
    """Noting thousands of documents pending only to flush them in the same batch would cost SQLite rows for
    nothing: a cube's run of ``flush_docs`` or more is written directly, after what was pending."""
    cube = f"c-{unique}"
    async with TantivyKeywordIndex(f"tantivy:///{tmp_path / 'store.db'}", flush_docs=5) as store:
        for i in range(2):
            await store.apply([UpsertMemory(memory=make_memory(cube, f"m{i}", memory="orchid care", key=""))],
                              position(unique, i))
        assert not (tmp_path / "store.db.tantivy").exists()  # nothing written to tantivy yet
        await store.apply([UpsertMemory(memory=make_memory(cube, f"m{i}", memory="orchid soil", key=""))
                           for i in range(2, 8)], position(unique, 2))
        (folder,) = list((tmp_path / "store.db.tantivy").iterdir())
        assert _committed_docs(folder) == 8
        with store.db.read() as conn:
            assert conn.execute(f'SELECT count(*) FROM "kwt_pending_{folder.name}"').fetchone()[0] == 0
        assert len(await store.search(cube, "orchid", k=20)) == 8


async def test_searches_during_live_batches_see_one_moment(tmp_path: Path) -> None:
    """Found by a probe: the cube's statistics and its pending documents were read in two statements, so a
    batch committing between them gave scores of no committed state. Every committed state here has N equal
    documents scoring idf(N, N) each; searches run while batches of 1-7 add more."""
    async with TantivyKeywordIndex(f"tantivy:///{tmp_path / 'store.db'}", flush_docs=16) as store:
        stop, bad, searched = False, [], 0

        async def write() -> None:
            nonlocal stop
            n = 0
            for b in range(300):
                size = 1 + b % 7
                await store.apply([UpsertMemory(memory=make_memory("c", f"m{n + i:05d}", memory="tea", key=""))
                                   for i in range(size)], position("race", b))
                n += size
            stop = True

        async def read() -> None:
            nonlocal searched
            while not stop:
                hits = await store.search("c", "tea", k=100_000)
                searched += 1
                if hits and any(abs(h.score - idf(len(hits), len(hits))) > 1e-9 for h in hits):
                    bad.append((len(hits), hits[0].score))

        await asyncio.gather(write(), read(), read())
        assert searched > 50 and bad == []


async def test_searches_while_a_cube_is_dropped_and_made_again(tmp_path: Path) -> None:
    """Found by a probe: a search re-opened a cube's folder while its drop deleted it, leaving only tantivy's
    lock files, and every later batch of the cube failed ("meta.json" missing) until a restart."""
    async with TantivyKeywordIndex(f"tantivy:///{tmp_path / 'store.db'}") as store:
        stop, errors, mixed = False, [], 0

        async def write() -> None:
            nonlocal stop
            offset = 0
            for round_ in range(20):
                for b in range(8):
                    size = 150 if b == 5 else 1 + b % 4  # pending batches and one written at once
                    ops = [UpsertMemory(memory=make_memory("c", f"r{round_:02d}-{b}-{i}", memory="tea garden", key=""))
                           for i in range(size)]
                    await store.apply(ops, position("drop", offset))  # type: ignore[arg-type]
                    offset += 1
                await store.apply([DropCube(cube_id="c")], position("drop", offset))
                offset += 1
            stop = True

        async def read() -> None:
            nonlocal mixed
            while not stop:
                try:
                    hits = await store.search("c", "tea", k=1000)
                except Exception as exc:  # noqa: BLE001 - any error is what the test looks for
                    errors.append(exc)
                    continue
                mixed += len({h.memory_id.split("-")[0] for h in hits}) > 1

        await asyncio.gather(write(), read(), read())
        assert errors == [] and mixed == 0
        await store.apply([UpsertMemory(memory=make_memory("c", "last", memory="tea", key=""))], position("drop", 999))
        assert [h.memory_id for h in await store.search("c", "tea")] == ["last"]
