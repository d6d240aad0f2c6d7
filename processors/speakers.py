"""Speaker names in queries (pure): names that label most candidate lines leave the dense query.

In a transcript every memory carries its speakers' labels ("Caroline: ...", "assistant: Melanie: ..."),
so a question naming a speaker ("What is Caroline's identity?") says nothing by that name about which
memory answers it, yet the name dominates the query's embedding and pulls short exchanges of greetings
("Melanie: Bye Caroline!") to the top. Search reads the speaker labels of a cube's BM25 hits (which
do not need the query's vector); when the query names one that labels at least ``speaker_share`` of
them, that cube's vector searches embed the query without those names (keyword search keeps the whole
query). The query is still embedded once per text.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache

__all__ = [
    "line_speakers",
    "named_speakers",
    "query_without_speakers",
    "speaker_free_query",
    "speaker_names",
    "without_names",
]

logger = logging.getLogger(__name__)

_LABEL = re.compile(r"(?<![\w'’])([A-Z][\w'’-]{1,30}(?: [A-Z][\w'’-]{1,30})?):\s")
_QUERY_NAME = re.compile(r"(?<![\w'’])([A-Z][\w'’-]{1,30}?)(?:'s|’s)?(?![\w'’-])")


@lru_cache(maxsize=16_384)
def line_speakers(text: str) -> frozenset[str]:
    """Lower-cased names that label lines of ``text`` ("assistant: Melanie: hi" -> melanie, assistant).

    Cached: every search reads the labels of its cube's keyword hits, mostly the same memories again.
    """
    return frozenset(m.group(1).lower() for m in _LABEL.finditer(text))


def speaker_names(texts: Iterable[str], *, share: float) -> set[str]:
    """Names that label lines in at least ``share`` of ``texts`` (none when ``texts`` is empty)."""
    counts: Counter[str] = Counter()
    total = 0
    for text in texts:
        total += 1
        counts.update(line_speakers(text))
    if total == 0:
        return set()
    return {name for name, n in counts.items() if n >= share * total}


def named_speakers(query: str, speakers: Iterable[str]) -> list[str]:
    """The ``speakers`` (lower-cased) that ``query`` names, in query order ("Caroline's" names caroline)."""
    wanted = set(speakers)
    names = (m.group(1).lower() for m in _QUERY_NAME.finditer(query))
    return list(dict.fromkeys(n for n in names if n in wanted))


def without_names(query: str, names: Sequence[str]) -> str:
    """``query`` with each of ``names`` (and its possessive) removed, spaces collapsed."""
    out = query
    for name in names:
        out = re.sub(rf"(?<![\w'’]){re.escape(name)}(?:'s|’s)?(?![\w'’-])", " ", out, flags=re.I)
    return " ".join(out.split())


def speaker_free_query(query: str, texts: Iterable[str], *, share: float) -> str | None:
    """``query`` without the speakers it names that label at least ``share`` of ``texts``; None when it
    names none (or ``share`` is 0, or nothing but names would be left)."""
    if share <= 0.0:
        return None
    return query_without_speakers(query, speaker_names(texts, share=share))


def query_without_speakers(query: str, speakers: Iterable[str]) -> str | None:
    """``query`` without the ``speakers`` (lower-cased) it names; None when it names none (or nothing but
    names would be left)."""
    names = named_speakers(query, speakers)
    if not names:
        return None
    stripped = without_names(query, names)
    return stripped if re.search(r"\w", stripped) else None
