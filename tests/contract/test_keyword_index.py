"""KeywordIndex contract on the embedded (FTS5) adapter, plus its query sanitiser and tokenisation."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memory_store.embedded import EmbeddedKeywordIndex
from memory_store.embedded.keyword import fts_query, fts_text
from memory_store.registry import keyword_index_from_url
from schemas.ops import DropCube, UpsertMemory
from tests.contract.graph_contract import make_memory, position
from tests.contract.keyword_contract import KeywordIndexContract


@pytest.fixture
async def keyword_index(tmp_path: Path) -> AsyncIterator[EmbeddedKeywordIndex]:
    store = keyword_index_from_url(f"sqlite:///{tmp_path / 'store.db'}")
    assert isinstance(store, EmbeddedKeywordIndex)
    async with store:
        yield store


class TestEmbeddedKeywordIndex(KeywordIndexContract):
    """The contract on SQLite FTS5."""


def test_fts_query_quotes_tokens_and_uses_cjk_bigrams() -> None:
    assert fts_query('green "tea" AND (honey)*') == '"green" OR "tea" OR "and" OR "honey"'
    assert fts_query("喝咖啡 iPhone手机") == '"喝咖" OR "咖啡" OR "iphone" OR "手机"'
    assert fts_query("🙂 :: ** ()") == ""
    assert fts_query("tea tea TEA") == '"tea"'
    assert fts_text("我喜欢coffee") == "我喜 喜欢 coffee"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_text_becomes_a_valid_fts5_expression(text: str) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(body, tokenize = 'porter unicode61 remove_diacritics 2')")
    conn.execute("INSERT INTO t (body) VALUES (?)", (fts_text("green tea 咖啡 " + text.replace("\x00", "")),))
    expression = fts_query(text)
    if expression:
        rows = conn.execute("SELECT rowid FROM t WHERE t MATCH ?", (expression,)).fetchall()
        assert len(rows) <= 1


async def test_english_words_match_their_stems(keyword_index: EmbeddedKeywordIndex, unique: str) -> None:
    cube = f"c-{unique}"
    doc = make_memory(cube, f"m-{unique}", memory="Alice likes running marathons", key="")
    await keyword_index.apply([UpsertMemory(memory=doc)], position(unique, 0))
    for query in ("like", "run", "marathon", "Running"):
        assert [h.memory_id for h in await keyword_index.search(cube, query)] == [doc.id]


async def test_title_is_searchable_too(keyword_index: EmbeddedKeywordIndex, unique: str) -> None:
    cube = f"c-{unique}"
    doc = make_memory(cube, f"m-{unique}", memory="some text", key="Quarterly budget")
    await keyword_index.apply([UpsertMemory(memory=doc)], position(unique, 0))
    assert [h.memory_id for h in await keyword_index.search(cube, "budget")] == [doc.id]


async def test_a_cube_id_never_matches_as_a_word(keyword_index: EmbeddedKeywordIndex, unique: str) -> None:
    cube = f"c-{unique}"
    doc = make_memory(cube, f"m-{unique}", memory="plain words only", key="")
    await keyword_index.apply([UpsertMemory(memory=doc)], position(unique, 0))
    assert await keyword_index.search(cube, cube) == []
    assert await keyword_index.search(cube, "cube") == []


async def test_drop_cube_of_ten_thousand_documents(keyword_index: EmbeddedKeywordIndex, unique: str) -> None:
    cube = f"c-{unique}"
    batch = [
        ([UpsertMemory(memory=make_memory(cube, f"m{i}-{unique}", memory=f"note {i} about item{i % 97}"))],
         position(unique, i))
        for i in range(10_000)
    ]  # fmt: skip
    await keyword_index.apply_many(batch)
    assert len(await keyword_index.search(cube, "note", k=20)) == 20
    await keyword_index.apply([DropCube(cube_id=cube)], position(unique, 10_000))
    assert await keyword_index.search(cube, "note") == []


async def test_a_cubes_ranking_does_not_depend_on_other_cubes(
    keyword_index: EmbeddedKeywordIndex, unique: str
) -> None:
    """BM25 statistics are per cube: 10k memories added to cube B, then B dropped, leave A's results as they were."""
    mine, theirs = f"a-{unique}", f"b-{unique}"
    texts = ["green tea with honey", "Alice drinks green tea every morning", "black coffee, no sugar",
             "tea ceremony in Kyoto", "the green door of the tea house"]  # fmt: skip
    await keyword_index.apply_many(
        [([UpsertMemory(memory=make_memory(mine, f"a{i}-{unique}", memory=t, key="", minute=i))], position(unique, i))
         for i, t in enumerate(texts)]
    )  # fmt: skip
    queries = ("green tea", "tea", "coffee honey", "Kyoto door")
    before = [await keyword_index.search(mine, q, k=10) for q in queries]
    assert all(before)
    flood = [
        ([UpsertMemory(memory=make_memory(theirs, f"b{i}-{unique}", memory=f"tea {i} and more tea, green {i % 7}"))],
         position(unique, 100 + i))
        for i in range(10_000)
    ]  # fmt: skip
    await keyword_index.apply_many(flood)
    assert len(await keyword_index.search(theirs, "green tea", k=50)) == 50
    assert [await keyword_index.search(mine, q, k=10) for q in queries] == before
    await keyword_index.apply([DropCube(cube_id=theirs)], position(unique, 20_000))
    assert [await keyword_index.search(mine, q, k=10) for q in queries] == before


async def test_dropping_a_cube_drops_its_own_tables_only(
    keyword_index: EmbeddedKeywordIndex, unique: str, tmp_path: Path
) -> None:
    mine, theirs = f"a-{unique}", f"b-{unique}"
    await keyword_index.apply(
        [UpsertMemory(memory=make_memory(c, f"{c}-m", memory="shared words")) for c in (mine, theirs)],
        position(unique, 0),
    )
    conn = sqlite3.connect(tmp_path / "store.db")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'kw_docs_%'")}
    assert len(tables) == 2
    await keyword_index.apply([DropCube(cube_id=theirs)], position(unique, 1))
    left = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'kw_docs_%'")}
    assert len(left) == 1 and left < tables
    assert [h.memory_id for h in await keyword_index.search(mine, "shared")] == [f"{mine}-m"]
