"""The KeywordIndex contract: every adapter's test class subclasses KeywordIndexContract.

A subclass provides the fixture ``keyword_index``: a started index, isolated per test.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from memory_store.base import Ask, KeywordIndex
from schemas.memory import MemoryRecord
from schemas.ops import DropCube, RetireMemory, ReviseMemory, UpsertMemory
from tests.contract.graph_contract import T0, make_memory, position

__all__ = ["HOSTILE_QUERIES", "KeywordIndexContract"]

HOSTILE_QUERIES = (
    "",
    "   ",
    '"',
    '""',
    '"unbalanced quote',
    "(",
    ")",
    "((green",
    "AND",
    "OR",
    "NOT",
    "NEAR",
    "NEAR(green tea, 2)",
    "green AND",
    "OR tea",
    "tea NOT",
    "*",
    "tea*",
    "^tea",
    ":",
    "body:tea",
    "cube:tea",
    "{body title}: tea",
    "-tea",
    "+tea",
    "🙂",
    "🍵🍵",
    "\x00",
    "'; DROP TABLE memories; --",
    'tea" OR "1"="1',
    "a" * 2000,
    "\\",
    "%_%",
)


class KeywordIndexContract:
    """Behaviour every KeywordIndex adapter must show. Needs fixtures ``keyword_index`` and ``unique``."""

    @pytest.fixture
    def cube(self, unique: str) -> str:
        return f"kcube-{unique}-a"

    @pytest.fixture
    def other_cube(self, unique: str) -> str:
        return f"kcube-{unique}-b"

    def _docs(self, cube: str, unique: str, texts: Sequence[str], **overrides: object) -> list[MemoryRecord]:
        return [
            make_memory(cube, f"d{i}-{unique}", memory=t, key="", minute=i, **overrides)
            for i, t in enumerate(texts)
        ]

    async def _load(
        self, index: KeywordIndex, unique: str, records: Sequence[MemoryRecord], offset: int = 0
    ) -> None:
        assert await index.apply([UpsertMemory(memory=r) for r in records], position(unique, offset))

    async def _ids(self, index: KeywordIndex, cube: str, query: str, **kwargs: object) -> list[str]:
        return [h.memory_id for h in await index.search(cube, query, **kwargs)]  # type: ignore[arg-type]

    async def test_bm25_ranks_the_matching_document_first(
        self, keyword_index: KeywordIndex, unique: str, cube: str
    ) -> None:
        fox, tea, both, other = self._docs(cube, unique, [
            "the quick brown fox jumps over the lazy dog",
            "green tea with honey in the morning",
            "Alice drinks green tea; green tea is her favourite green tea",
            "the weather in Paris is rainy today",
        ])  # fmt: skip
        await self._load(keyword_index, unique, [fox, tea, both, other])
        assert (await self._ids(keyword_index, cube, "fox"))[0] == fox.id
        hits = await keyword_index.search(cube, "green tea", k=10)
        assert [h.memory_id for h in hits][:2] == [both.id, tea.id]
        assert fox.id not in [h.memory_id for h in hits]
        assert hits[0].score > hits[1].score > 0
        assert all(h.cube_id == cube for h in hits)
        assert await self._ids(keyword_index, cube, "Paris weather", k=1) == [other.id]
        assert await self._ids(keyword_index, cube, "zebra") == []

    async def test_search_is_case_insensitive_and_limits_to_k(
        self, keyword_index: KeywordIndex, unique: str, cube: str
    ) -> None:
        docs = self._docs(cube, unique, [f"Kubernetes cluster number {i}" for i in range(6)])
        await self._load(keyword_index, unique, docs)
        assert len(await self._ids(keyword_index, cube, "KUBERNETES", k=4)) == 4
        assert sorted(await self._ids(keyword_index, cube, "kubernetes", k=10)) == sorted(d.id for d in docs)

    async def test_cjk_text_is_findable(self, keyword_index: KeywordIndex, unique: str, cube: str) -> None:
        coffee, weather, tokyo, english = self._docs(cube, unique, [
            "我喜欢在早上喝咖啡",
            "今天天气很好，我们去公园散步",
            "私は東京に住んでいます",
            "I like coffee in the morning",
        ])  # fmt: skip
        await self._load(keyword_index, unique, [coffee, weather, tokyo, english])
        assert (await self._ids(keyword_index, cube, "咖啡"))[0] == coffee.id
        assert (await self._ids(keyword_index, cube, "天气"))[0] == weather.id
        assert (await self._ids(keyword_index, cube, "公园散步"))[0] == weather.id
        assert (await self._ids(keyword_index, cube, "東京"))[0] == tokyo.id
        assert (await self._ids(keyword_index, cube, "coffee"))[0] == english.id

    @pytest.mark.parametrize("query", HOSTILE_QUERIES)
    async def test_hostile_queries_never_fail(
        self, keyword_index: KeywordIndex, unique: str, cube: str, query: str
    ) -> None:
        docs = self._docs(cube, unique, ["green tea with honey", "NEAR the river AND the OR gate"])
        await self._load(keyword_index, unique, docs)
        hits = await keyword_index.search(cube, query, k=5)
        assert isinstance(hits, list)
        assert all(h.memory_id in {d.id for d in docs} for h in hits)

    @pytest.mark.parametrize(
        "query", ['"tea"', "tea*", "(tea)", "tea:", "tea 🍵", "'tea'", "tea AND", "NOT tea"]
    )
    async def test_words_inside_hostile_queries_still_match(
        self, keyword_index: KeywordIndex, unique: str, cube: str, query: str
    ) -> None:
        tea, other = self._docs(cube, unique, ["green tea with honey", "black coffee"])
        await self._load(keyword_index, unique, [tea, other])
        assert (await self._ids(keyword_index, cube, query))[:1] == [tea.id]

    async def test_retired_memories_are_left_out_unless_asked(
        self, keyword_index: KeywordIndex, unique: str, cube: str
    ) -> None:
        old, new = self._docs(cube, unique, ["Bob lives in Berlin", "Bob moved to Berlin Mitte"])
        await self._load(keyword_index, unique, [old, new])
        retire = RetireMemory(memory_id=old.id, cube_id=cube, reason="superseded", updated_at=T0)
        assert await keyword_index.apply([retire], position(unique, 1))
        assert await self._ids(keyword_index, cube, "Berlin") == [new.id]
        assert sorted(await self._ids(keyword_index, cube, "Berlin", include_retired=True)) == sorted(
            [old.id, new.id]
        )

    async def test_a_retirement_before_its_memory_is_not_lost(
        self, keyword_index: KeywordIndex, unique: str, cube: str
    ) -> None:
        early, new = self._docs(cube, unique, ["Dana flies to Lisbon", "Dana flies to Lisbon on Monday"])
        retire = RetireMemory(memory_id=early.id, cube_id=cube, reason="refined", updated_at=T0)
        assert await keyword_index.apply([retire], position(unique, 0))
        assert await self._ids(keyword_index, cube, "Lisbon", include_retired=True) == []
        await self._load(keyword_index, unique, [new, early], offset=1)
        assert await self._ids(keyword_index, cube, "Lisbon") == [new.id]
        assert sorted(await self._ids(keyword_index, cube, "Lisbon", include_retired=True)) == sorted(
            [early.id, new.id]
        )
        await self._load(keyword_index, unique, [early], offset=2)
        assert await self._ids(keyword_index, cube, "Lisbon") == [new.id]

    async def test_memory_type_filter(self, keyword_index: KeywordIndex, unique: str, cube: str) -> None:
        pref = make_memory(cube, f"p-{unique}", memory="prefers jasmine tea", memory_type="PreferenceMemory")
        fact = make_memory(cube, f"f-{unique}", memory="bought jasmine tea", memory_type="LongTermMemory")
        await self._load(keyword_index, unique, [pref, fact])
        assert await self._ids(keyword_index, cube, "jasmine", memory_types=["PreferenceMemory"]) == [pref.id]
        assert await self._ids(keyword_index, cube, "jasmine", memory_types=["SkillMemory"]) == []

    async def test_search_each_answers_every_ask_as_search_would(
        self, keyword_index: KeywordIndex, unique: str, cube: str, other_cube: str
    ) -> None:
        types = ["PreferenceMemory", "LongTermMemory", "ToolTrajectoryMemory"]
        texts = [f"green tea {'and tea ' * (i % 4)}note {i}" for i in range(12)]
        docs = [make_memory(cube, f"e{i}-{unique}", memory=t, key="", minute=i, memory_type=types[i % 3])
                for i, t in enumerate(texts)]  # fmt: skip
        await self._load(keyword_index, unique, docs)
        retire = RetireMemory(memory_id=docs[1].id, cube_id=cube, reason="superseded", updated_at=T0)
        assert await keyword_index.apply([retire], position(unique, 1))
        asks = [
            Ask(2, ["LongTermMemory"]),
            Ask(10, ["PreferenceMemory", "ToolTrajectoryMemory"]),
            Ask(5, ["SkillMemory"]),  # a type the cube has none of
            Ask(0, None),
            Ask(3, None),
            Ask(2, []),
        ]
        for retired in (False, True):
            each = await keyword_index.search_each(cube, "tea", asks, include_retired=retired)
            one = [
                await keyword_index.search(cube, "tea", k=a.k, memory_types=a.memory_types, include_retired=retired)
                for a in asks
            ]
            assert [[h.memory_id for h in hits] for hits in each] == [[h.memory_id for h in hits] for hits in one]
            assert [len(hits) for hits in each] == [2, 8, 0, 0, 3, 0]
            # BM25 does not depend on the type filter: each ask is the filtered head of the whole ranking
            whole = [h.memory_id for h in await keyword_index.search(cube, "tea", k=50, include_retired=retired)]
            assert len(whole) == (12 if retired else 11)
            of = {d.id: d.memory_type for d in docs}
            for ask, hits in zip(asks, each, strict=True):
                allowed = [i for i in whole if ask.memory_types is None or of[i] in ask.memory_types]
                assert [h.memory_id for h in hits] == allowed[: ask.k]
        assert await keyword_index.search_each(other_cube, "tea", asks) == [[] for _ in asks]
        assert await keyword_index.search_each(cube, "   ", asks) == [[] for _ in asks]

    async def test_revised_text_replaces_the_old_words(
        self, keyword_index: KeywordIndex, unique: str, cube: str
    ) -> None:
        (doc,) = self._docs(cube, unique, ["meeting on Monday with Carol"])
        await self._load(keyword_index, unique, [doc])
        revise = ReviseMemory(memory_id=doc.id, cube_id=cube, memory="meeting moved to Thursday with Carol",
                              revision=1, updated_at=T0)  # fmt: skip
        assert await keyword_index.apply([revise], position(unique, 1))
        assert await self._ids(keyword_index, cube, "Monday") == []
        assert await self._ids(keyword_index, cube, "Thursday") == [doc.id]
        assert await keyword_index.apply([revise], position(unique, 2))
        assert await self._ids(keyword_index, cube, "Carol") == [doc.id]

    async def test_upserting_again_is_idempotent(
        self, keyword_index: KeywordIndex, unique: str, cube: str
    ) -> None:
        docs = self._docs(cube, unique, ["solar panels on the roof", "roof repair estimate"])
        await self._load(keyword_index, unique, docs)
        before = await keyword_index.search(cube, "roof", k=10)
        await self._load(keyword_index, unique, docs, offset=1)
        after = await keyword_index.search(cube, "roof", k=10)
        assert [h.memory_id for h in after] == [h.memory_id for h in before]
        assert [h.score for h in after] == pytest.approx([h.score for h in before])

    async def test_same_position_twice_is_skipped_and_replay_keeps_the_checkpoint(
        self, keyword_index: KeywordIndex, unique: str, cube: str
    ) -> None:
        first, second, third = self._docs(cube, unique, ["alpha station", "alpha centauri", "alpha beta"])
        assert await keyword_index.apply([UpsertMemory(memory=first)], position(unique, 5))
        assert not await keyword_index.apply([UpsertMemory(memory=second)], position(unique, 5))
        assert not await keyword_index.apply([UpsertMemory(memory=second)], position(unique, 4))
        assert await self._ids(keyword_index, cube, "alpha") == [first.id]
        assert await keyword_index.apply([UpsertMemory(memory=third)], position(unique, 1), replay=True)
        assert sorted(await self._ids(keyword_index, cube, "alpha")) == sorted([first.id, third.id])
        assert await keyword_index.checkpoint(position(unique, 0).topic, 0) == 5

    async def test_drop_cube_removes_only_that_cube(
        self, keyword_index: KeywordIndex, unique: str, cube: str, other_cube: str
    ) -> None:
        mine = self._docs(cube, unique, ["orchid care notes", "orchid watering schedule"])
        theirs = [r.model_copy(update={"id": f"o-{r.id}", "cube_id": other_cube}) for r in mine]
        await self._load(keyword_index, unique, [*mine, *theirs])
        assert await keyword_index.apply([DropCube(cube_id=cube)], position(unique, 1))
        assert await self._ids(keyword_index, cube, "orchid") == []
        assert sorted(await self._ids(keyword_index, other_cube, "orchid")) == sorted(r.id for r in theirs)
        await self._load(keyword_index, unique, mine[:1], offset=2)
        assert await self._ids(keyword_index, cube, "orchid") == [mine[0].id]

    async def test_cubes_are_isolated(
        self, keyword_index: KeywordIndex, unique: str, cube: str, other_cube: str
    ) -> None:
        mine = self._docs(cube, unique, ["violin lesson on Friday"])
        theirs = [make_memory(other_cube, f"o-{unique}", memory="violin concert tickets")]
        await self._load(keyword_index, unique, [*mine, *theirs])
        assert await self._ids(keyword_index, cube, "violin") == [mine[0].id]
        assert await self._ids(keyword_index, other_cube, "violin") == [theirs[0].id]
        assert await self._ids(keyword_index, f"{cube}-missing", "violin") == []
