"""CJK-aware word tokenisation shared by search (processors) and the keyword stores (memory_store).

Latin-script text splits into lower-cased words of letters and digits. Chinese, Japanese and Korean
write without spaces between words, so a CJK run becomes its overlapping character bigrams ("连锁酒店"
-> "连锁", "锁酒", "酒店"; a lone character stays a unigram), the scheme of Lucene's CJKAnalyzer. Bigrams
rather than single characters: a query's "酒店" (hotel) then matches "酒店" only, not every text that
holds 酒 or 店, and function characters (的, 了, 我) stop dominating the match (measured on the seed's
Chinese examples in ``tests/unit/retrieval/test_text.py``). Bigrams rather than a dictionary segmenter
(jieba): no dependency or dictionary to load, deterministic across versions, and a query matches a
memory whenever they share any two adjacent characters, whatever the segmenter would have cut.

The functions are pure and cheap; :func:`index_text` is what a full-text engine (SQLite FTS5 with the
``unicode61`` tokenizer, which keeps a run of CJK characters as one token) indexes and queries with.

A conversation window shows its chat time in ISO form ("[2023-05-08 13:56] user: ..."), short for a
reader's budget, but is embedded and indexed with that time in words ("[1:56 pm on 8 May, 2023] user:
..."), the form questions name times in ("in May 2023"): :func:`times_in_words` is that text.
"""

from __future__ import annotations

import logging
import re
from datetime import date

__all__ = [
    "CJK_RANGES",
    "has_cjk",
    "index_text",
    "is_cjk",
    "query_tokens",
    "times_in_words",
    "tokens",
]

logger = logging.getLogger(__name__)

CJK_RANGES = (
    "\u1100-\u11ff\u2e80-\u2fdf\u3040-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f"
)
"""Character ranges written without spaces between words: Hangul, CJK radicals and ideographs, kana."""

_CJK_RUN = re.compile(f"[{CJK_RANGES}]+")
_CJK_ANY = re.compile(f"[{CJK_RANGES}]")
_WORD = re.compile(r"[^\W_]+")


def is_cjk(char: str) -> bool:
    """Whether one character is a CJK character (ideograph, kana or Hangul)."""
    return bool(_CJK_ANY.fullmatch(char))


def has_cjk(text: str) -> bool:
    """Whether ``text`` holds any CJK character."""
    return _CJK_ANY.search(text) is not None


def _cjk_grams(run: str) -> list[str]:
    if len(run) == 1:
        return [run]
    return [run[i : i + 2] for i in range(len(run) - 1)]


def tokens(text: str) -> list[str]:
    """Every token of ``text`` in order (repeats kept, for term frequencies), lower-cased.

    A word is a run of letters and digits (underscore splits). Inside a word, CJK runs become character
    bigrams and the other parts stay whole: "7天酒店" -> "7", "天酒", "酒店"; "Ji全季Hotel" -> "ji", "全季",
    "hotel".
    """
    lowered = text.lower()
    if _CJK_ANY.search(lowered) is None:  # no CJK anywhere: every word stays whole
        return _WORD.findall(lowered)
    out: list[str] = []
    for match in _WORD.finditer(lowered):
        word = match.group()
        if not _CJK_ANY.search(word):
            out.append(word)
            continue
        at = 0
        for run in _CJK_RUN.finditer(word):
            if run.start() > at:
                out.append(word[at : run.start()])
            out.extend(_cjk_grams(run.group()))
            at = run.end()
        if at < len(word):
            out.append(word[at:])
    return out


def query_tokens(text: str, *, limit: int = 64) -> list[str]:
    """The distinct tokens of ``text`` in first-seen order, at most ``limit`` (for an OR query)."""
    return list(dict.fromkeys(tokens(text)))[:limit]


def index_text(text: str) -> str:
    """``text`` as a full-text engine should index it: its tokens, times in words (:func:`times_in_words`),
    joined by single spaces."""
    return " ".join(tokens(times_in_words(text)))


_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
_TIME_HEADER = re.compile(
    r"^\[(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?\] ",
    re.MULTILINE,
)


def _in_words(match: re.Match[str]) -> str:
    try:
        day = date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:
        return match.group(0)
    when = f"{day.day} {_MONTHS[day.month - 1]}, {day.year}"
    if match.group(4) is not None:
        hour, minute = int(match.group(4)), int(match.group(5))
        if hour > 23 or minute > 59:
            return match.group(0)
        when = f"{(hour - 1) % 12 + 1}:{minute:02d} {'am' if hour < 12 else 'pm'} on {when}"
    return f"[{when}] "


def times_in_words(text: str) -> str:
    """``text`` with every line's leading ISO time header written in words, as it is embedded and indexed.

    "[2023-05-08 13:56] user: hi" -> "[1:56 pm on 8 May, 2023] user: hi"; "[2024-07-20T10:00:00Z] ..." ->
    "[10:00 am on 20 July, 2024] ..."; a date alone -> "[8 May, 2023] ". Other text, and headers that are
    not a valid date and time, stay as they are.
    """
    if "[" not in text:
        return text
    return _TIME_HEADER.sub(_in_words, text)
