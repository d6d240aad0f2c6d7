"""CJK-aware tokenisation (schemas.text): bigrams for CJK runs, whole words elsewhere."""

from __future__ import annotations

from schemas.text import has_cjk, index_text, is_cjk, query_tokens, tokens


def test_latin_words_lower_cased_and_split_on_punctuation() -> None:
    assert tokens("I'll choose 7 Days-Inn, snake_case") == [
        "i",
        "ll",
        "choose",
        "7",
        "days",
        "inn",
        "snake",
        "case",
    ]


def test_cjk_runs_become_overlapping_bigrams() -> None:
    assert tokens("连锁酒店") == ["连锁", "锁酒", "酒店"]
    assert tokens("酒") == ["酒"]
    assert tokens("我选七天。好的") == ["我选", "选七", "七天", "好的"]


def test_mixed_words_split_at_script_boundaries() -> None:
    assert tokens("7天酒店 Ji全季Hotel") == ["7", "天酒", "酒店", "ji", "全季", "hotel"]


def test_kana_and_hangul_are_cjk() -> None:
    assert is_cjk("ひ") and is_cjk("한") and is_cjk("酒") and not is_cjk("a")
    assert has_cjk("hello 世界") and not has_cjk("hello world")
    assert tokens("ホテル") == ["ホテ", "テル"]


def test_query_tokens_distinct_in_order_and_capped() -> None:
    assert query_tokens("酒店 酒店 hotel Hotel") == ["酒店", "hotel"]
    assert len(query_tokens(" ".join(f"w{i}" for i in range(100)), limit=10)) == 10


def test_index_text_joins_tokens() -> None:
    assert index_text("广州的连锁酒店") == "广州 州的 的连 连锁 锁酒 酒店"
    assert index_text("") == ""
