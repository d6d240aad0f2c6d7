"""Hostile filters: ``like`` matches without backtracking (equal to the regex it replaced), and filters are bounded."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.filters import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    MAX_LIST,
    MAX_PATTERN,
    LikePattern,
    compile_filter,
    matches,
)
from schemas.errors import ValidationFailed
from tests.unit.retrieval.records import record


def _reference(pattern: str) -> re.Pattern[str]:
    """What ``like`` meant before: the pattern as a backtracking regex (a substring without ``%``), anchored at
    the very end (``\\Z``: the old ``$`` also matched before a final newline, which no LIKE does)."""
    if "%" not in pattern:
        pattern = f"%{pattern}%"
    body = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern)
    return re.compile(f"^{body}\\Z", re.IGNORECASE | re.DOTALL)


@settings(max_examples=400, deadline=None)
@given(pattern=st.text(alphabet="ab%_B.", max_size=8), text=st.text(alphabet="abAB.\n", max_size=12))
def test_like_matches_what_the_regex_matched(pattern: str, text: str) -> None:
    assert LikePattern(pattern).match(text) == (_reference(pattern).match(text) is not None)


def test_a_pattern_that_made_the_regex_backtrack_is_matched_at_once() -> None:
    text = "a" * 20_000  # the regex took minutes on 1,000 characters of this with four '%'
    pattern = LikePattern("%a%a%a%a%b%")
    started = time.process_time()
    assert not pattern.match(text)
    assert LikePattern("%a%a%a%a%").match(text)
    assert not LikePattern("%" + "a_" * 60 + "b%").match(text)
    assert time.process_time() - started < 5.0  # generous: the backtracking regex would not finish


def test_a_pattern_ends_at_the_end_of_the_text() -> None:
    assert not LikePattern("%b").match("ab\n") and LikePattern("%b_").match("ab\n")


def test_like_through_a_filter_on_a_record() -> None:
    rec = record("m1", "a" * 5_000 + "b", key="Hotel choice")
    assert matches(compile_filter({"memory": {"like": "%a%a%a%b"}}), rec)
    assert not matches(compile_filter({"memory": {"like": "%a%a%a%c%"}}), rec)
    assert matches(compile_filter({"key": {"like": "HOTEL%"}}), rec)


def _nested(depth: int) -> dict[str, Any]:
    flt: dict[str, Any] = {"user_id": "u1"}
    for _ in range(depth):
        flt = {"and": [flt]}
    return flt


@pytest.mark.parametrize(
    ("flt", "field", "words"),
    [
        (_nested(MAX_DEPTH + 1), "filter" + ".and[0]" * MAX_DEPTH + ".and", "levels deep"),
        (_nested(330), "filter" + ".and[0]" * MAX_DEPTH + ".and", "levels deep"),
        ({"or": [{"score": i} for i in range(MAX_CONDITIONS + 1)]}, f"filter.or[{MAX_CONDITIONS}].score",
         "conditions"),
        ({"file_ids": {"in": list(range(MAX_LIST + 1))}}, "filter.file_ids", "at most"),
        ({"memory": {"like": "%" * (MAX_PATTERN + 1)}}, "filter.memory", "characters"),
    ],
)
def test_filters_past_their_bounds_are_refused_naming_the_part(flt: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        compile_filter(flt)
    assert info.value.field == field
    assert words in str(info.value)


def test_filters_at_their_bounds_compile_and_match() -> None:
    rec = record("m1", "text", metadata={"score": MAX_CONDITIONS - 1})
    assert matches(compile_filter(_nested(MAX_DEPTH)), rec)
    assert not matches(compile_filter(_nested(MAX_DEPTH)), record("m2", "x", user_id="u2"))
    assert matches(compile_filter({"or": [{"score": i} for i in range(MAX_CONDITIONS)]}), rec)
    assert matches(compile_filter({"score": {"in": list(range(MAX_LIST))}}), rec)
    assert matches(compile_filter({"memory": {"like": "%" * MAX_PATTERN}}), rec)
