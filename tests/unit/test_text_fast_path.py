"""Tokenisation's fast path (text without CJK) and the keyword document's term count equal their references."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from memory_store.embedded.keyword_tantivy_parts import Doc, analyze, doc_length
from schemas.text import CJK_RANGES, index_text, tokens

_WORD = re.compile(r"[^\W_]+")
_CJK_RUN = re.compile(f"[{CJK_RANGES}]+")


def _reference(text: str) -> list[str]:
    """Word by word, CJK runs as bigrams: the tokeniser's general path."""
    out: list[str] = []
    for word in _WORD.findall(text.lower()):
        at = 0
        for run in _CJK_RUN.finditer(word):
            if run.start() > at:
                out.append(word[at : run.start()])
            chars = run.group()
            out.extend([chars] if len(chars) == 1 else [chars[i : i + 2] for i in range(len(chars) - 1)])
            at = run.end()
        if at < len(word):
            out.append(word[at:])
    return out


TEXT = st.text(
    alphabet=st.sampled_from(list("abcXYZ019 _-.,'\t\nßİÉé") + ["咖", "啡", "天", "ア", "한", "ﾐ", "٣"]),
    max_size=40,
)


@settings(max_examples=300)
@given(text=TEXT)
def test_tokens_equal_the_word_by_word_reference(text: str) -> None:
    assert tokens(text) == _reference(text)


@settings(max_examples=200)
@given(memory=TEXT | st.text(max_size=30), key=TEXT)
def test_document_length_counts_the_terms_of_body_and_title(memory: str, key: str) -> None:
    doc = Doc.of("LongTermMemory", "activated", memory, key)
    assert doc.body == " ".join(analyze(index_text(memory)))
    assert doc.title == " ".join(analyze(index_text(key)))
    assert doc.length == doc_length(doc.body, doc.title)


def test_plain_and_cjk_text() -> None:
    assert tokens("The User's 2 CATS_and dogs") == ["the", "user", "s", "2", "cats", "and", "dogs"]
    assert tokens("7天酒店 Ji全季Hotel") == ["7", "天酒", "酒店", "ji", "全季", "hotel"]
