"""CJK-aware tokenisation (schemas.text): bigrams for CJK runs, whole words elsewhere."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from processors.timeparse import chat_time_label
from schemas.text import has_cjk, index_text, is_cjk, query_tokens, times_in_words, tokens


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


DOCS = [
    "用户暑假要去广州旅游，询问有哪些连锁酒店。",
    "助手推荐了七天、全季、希尔顿等酒店。",
    "用户选择了七天酒店。",
    "我的猫咪叫小白，它每天早上都要吃鱼。",
    "公司的打印机双面打印时总是卡纸。",
    "我们周末去公园散步，天气很好。",
    "他喜欢在酒吧里喝啤酒。",
    "店里的面包很好吃。",
]
QUERIES = {
    "请推荐一家我之前没住过的酒店": {0, 1, 2},
    "我选了哪家酒店？": {2},
    "小白吃什么": {3},
    "打印机卡纸怎么办": {4},
    "七天": {1, 2},
}


def _bm25_recall_at_3(index: Callable[[str], str], query: Callable[[str], list[str]]) -> float:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE f USING fts5(body, tokenize='porter unicode61')")
    for n, doc in enumerate(DOCS):
        conn.execute("INSERT INTO f (rowid, body) VALUES (?, ?)", (n, index(doc)))
    total = 0.0
    for text, relevant in QUERIES.items():
        expr = " OR ".join(f'"{t}"' for t in query(text))
        rows = [r[0] for r in conn.execute("SELECT rowid FROM f WHERE f MATCH ? ORDER BY bm25(f)", (expr,))]
        total += sum(1 for r in rows[:3] if r in relevant) / min(3, len(relevant))
    return total / len(QUERIES)


def test_bigrams_find_chinese_memories_better_than_single_characters() -> None:
    """The measured choice: on the seed's Chinese sentences, bigrams put every relevant memory in the top 3;
    single characters let 酒 (in 酒吧, 啤酒) and 店 (in 店里) crowd them out."""
    unigram = _bm25_recall_at_3(
        lambda t: " ".join(c for c in t if is_cjk(c)), lambda q: list(dict.fromkeys(c for c in q if is_cjk(c)))
    )
    bigram = _bm25_recall_at_3(index_text, query_tokens)
    assert bigram == 1.0 and unigram < bigram


def test_time_headers_are_written_in_words_for_embedding_and_indexing() -> None:
    window = "[2023-05-08 13:56] user: Hi!\nassistant: Hello.\n[2023-05-09 00:05] user: Bye."
    assert times_in_words(window) == (
        "[1:56 pm on 8 May, 2023] user: Hi!\nassistant: Hello.\n[12:05 am on 9 May, 2023] user: Bye."
    )
    assert times_in_words("[2024-07-20T10:00:00+08:00] user: x") == "[10:00 am on 20 July, 2024] user: x"
    assert times_in_words("[2023-05-08] user: x") == "[8 May, 2023] user: x"
    assert times_in_words("[2023-05-08 12:00] u: x") == "[12:00 pm on 8 May, 2023] u: x"
    for kept in ("[2023-02-30] user: x", "[2023-05-08 24:10] u: x", "see [2023-05-08] u: x", "no time"):
        assert times_in_words(kept) == kept  # not a valid date, or not a line's header
    assert tokens(index_text("[2023-05-08 13:56] user: Hi")) == ["1", "56", "pm", "on", "8", "may", "2023", "user", "hi"]


def test_chat_times_are_shown_in_iso_and_read_back_as_written() -> None:
    for written in ("1:56 pm on 8 May, 2023", "10:37 am on 27 June, 2023", "12:30 am on 1 January, 2024"):
        label = chat_time_label(written)
        assert times_in_words(f"[{label}] x") == f"[{written}] x"  # embedded and indexed as LoCoMo writes it
    assert chat_time_label("1:56 pm on 8 May, 2023") == "2023-05-08 13:56"
    assert chat_time_label("13:45 on 8 May, 2023") == "2023-05-08 13:45"
    assert chat_time_label("8 May 2023") == "2023-05-08"
    assert chat_time_label("2024-07-20T10:00:00Z") == "2024-07-20T10:00:00Z"  # ISO stays as given
    assert chat_time_label("last spring") == "last spring"  # unreadable: as given
    assert chat_time_label("25:99 on 8 May, 2023") == "2023-05-08"  # a clock that is no time: the date
