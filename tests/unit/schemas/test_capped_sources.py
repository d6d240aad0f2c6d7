"""A memory keeps its first source and the latest ones, at most MAX_SOURCES."""

from __future__ import annotations

from schemas.memory import MAX_SOURCES, capped_sources


def test_short_lists_are_kept_whole_and_long_ones_keep_the_first_and_the_latest() -> None:
    short = list(range(MAX_SOURCES))
    assert capped_sources(short) == short
    long = list(range(MAX_SOURCES + 9))
    assert capped_sources(long) == [0, *range(10, MAX_SOURCES + 9)]
    assert len(capped_sources(long)) == MAX_SOURCES
