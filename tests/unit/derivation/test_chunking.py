"""Tokenizer, chunking with overlap, and conversation windows."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.chunking import chunk_text, count_tokens, plan_windows, render_line, truncate_tokens
from processors.reader import read_messages
from tests.support.examples import EXAMPLE_1


def test_tokens_are_words_punctuation_and_cjk_characters() -> None:
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("我想去广州") == 5
    assert count_tokens("I'll pay 2.5 €") == 8
    assert truncate_tokens("one two three four", 2) == "one two"
    assert truncate_tokens("short", 5) == "short"


def test_chunks_respect_size_and_overlap() -> None:
    text = " ".join(f"w{i}" for i in range(100))
    chunks = chunk_text(text, size=30, overlap=5)
    assert all(c.end_token - c.start_token <= 30 for c in chunks)
    assert chunks[0].text.startswith("w0 ") and chunks[-1].text.endswith("w99")
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.start_token == a.end_token - 5
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_chunks_prefer_paragraph_breaks() -> None:
    text = "# Heading\n\n" + " ".join(["alpha"] * 20) + "\n\n" + " ".join(["beta"] * 20)
    chunks = chunk_text(text, size=26, overlap=0)
    assert chunks[0].text.endswith("alpha") and chunks[1].text.startswith("beta")


def test_chunks_of_running_text_open_and_close_on_sentences() -> None:
    """A long message without line breaks is cut at sentence ends, and each chunk opens on a sentence."""
    text = " ".join(f"Sentence {i} has tyre pressure {i}.5 bar and some more words here." for i in range(60))
    chunks = chunk_text(text, size=100, overlap=20)
    assert len(chunks) > 5
    for chunk in chunks:
        assert chunk.text.startswith("Sentence "), chunk.text[:40]
        assert chunk.text.endswith("here."), chunk.text[-40:]
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.start_token < b.start_token < a.end_token  # they still overlap
    zh = "".join(f"第{i}句话说广州的天气很热。" for i in range(40))
    for chunk in chunk_text(zh, size=50, overlap=10):
        assert chunk.text.startswith("第") and chunk.text.endswith("。"), chunk.text


def test_bad_chunk_arguments() -> None:
    with pytest.raises(ValueError, match="overlap"):
        chunk_text("a b c", size=3, overlap=3)
    with pytest.raises(ValueError, match="size"):
        chunk_text("a b c", size=0, overlap=0)
    assert chunk_text("   ", size=3, overlap=1) == []


@given(st.text(min_size=0, max_size=300), st.integers(1, 40), st.integers(0, 39))
def test_chunks_cover_every_token(text: str, size: int, overlap: int) -> None:
    if overlap >= size:
        overlap = size - 1
    chunks = chunk_text(text, size=size, overlap=overlap)
    covered = set()
    for chunk in chunks:
        covered.update(range(chunk.start_token, chunk.end_token))
        assert chunk.text == text[chunk.start_char : chunk.end_char]
    assert covered == set(range(count_tokens(text)))


def test_windows_share_the_configured_number_of_messages() -> None:
    items = read_messages(EXAMPLE_1).items
    whole = plan_windows(items, window_tokens=500, overlap=1)
    assert len(whole) == 1 and len(whole[0].lines) == 4
    small = plan_windows(items, window_tokens=30, overlap=1)
    spans = [[i.message_index for i in w.items] for w in small]
    assert spans == [[0], [1, 2], [2, 3]]
    assert render_line(items[0]).startswith("user: I’ve planned")
