"""Ranking maths for search: keyword-query cleanup, weighted reciprocal-rank fusion, calibration, MMR."""

from __future__ import annotations

import logging
import re
import threading
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from schemas.text import has_cjk, tokens

__all__ = [
    "STOPWORDS",
    "TermPattern",
    "calibrate",
    "cosine",
    "cosine_to",
    "keyword_query",
    "mmr_select",
    "normalised",
    "query_terms",
    "reciprocal_rank_fusion",
    "similarity_matrix",
    "term_coverage",
    "term_patterns",
]

logger = logging.getLogger(__name__)

STOPWORDS: frozenset[str] = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most
    my myself no nor not now of off on once only or other our ours ourselves out over own same she should
    so some such than that the their theirs them themselves then there these they this those through to
    too under until up very was we were what when where which while who whom whose why will with would
    you your yours yourself yourselves s t d ll m re ve
    please tell kind sort thing things something anything ever also yet still many much
    """.split()
)
"""Function words and question words dropped from keyword queries (never from the dense query)."""

_TOKEN = re.compile(r"\w+", re.UNICODE)
_CJK_STOP: frozenset[str] = frozenset(
    "我们 你们 他们 她们 什么 怎么 哪些 哪个 哪里 为什 么时 时候 一个 一下 之前 可以 请问 请推 的是 是什 了吗".split()
)
"""CJK bigrams of question and function words dropped from keyword queries."""


def query_terms(text: str, *, stopwords: frozenset[str] = STOPWORDS) -> list[str]:
    """Content terms of a query, lower-cased, in first-seen order, without stopwords or duplicates.

    Words as ``schemas.text.tokens`` cuts them: possessives and contractions split on the apostrophe
    ("Caroline's" -> "caroline"), CJK runs become character bigrams (a lone CJK character is kept only
    when nothing else is left). When every term is a stopword the terms are kept, so a query such as
    "who am I" still searches for something.
    """
    words = tokens(text)
    content = [
        t
        for t in words
        if t.isdigit()
        or (has_cjk(t) and len(t) > 1 and t not in _CJK_STOP)
        or (not has_cjk(t) and t not in stopwords and len(t) > 1)
    ]
    chosen = content or words
    return list(dict.fromkeys(chosen))


def keyword_query(text: str, *, strip_stopwords: bool = True) -> str:
    """The text handed to the keyword index: content terms joined by spaces (no operators)."""
    if not strip_stopwords:
        return " ".join(dict.fromkeys(tokens(text)))
    return " ".join(query_terms(text))


@dataclass(frozen=True, slots=True)
class TermPattern:
    """One query term as :func:`term_coverage` matches it: a whole word, or a word prefix."""

    text: str
    prefix: bool


def term_patterns(terms: Sequence[str]) -> list[TermPattern]:
    """One pattern per term for :func:`term_coverage`: the whole word, or for a term of 4+ characters
    any word starting with all but its last character ("hotels" finds "hotel", "travel" "travelling")."""
    patterns = []
    for term in terms:
        term = term.lower()
        prefix = len(term) >= 4 and not has_cjk(term)
        patterns.append(TermPattern(term[:-1], True) if prefix else TermPattern(term, False))
    return patterns


@lru_cache(maxsize=32_768)
def _words(text: str) -> tuple[frozenset[str], tuple[str, ...]]:
    """The distinct lower-cased words of ``text`` (CJK as bigrams): as a set, and sorted (prefix lookups)."""
    words = frozenset(tokens(text))
    return words, tuple(sorted(words))


def _has_prefix(ordered: tuple[str, ...], stem: str) -> bool:
    at = bisect_left(ordered, stem)
    return at < len(ordered) and ordered[at].startswith(stem)


def term_coverage(patterns: Sequence[TermPattern], text: str) -> float:
    """Fraction of the query terms (as :func:`term_patterns`) found in ``text`` (words tokenised once)."""
    if not patterns:
        return 0.0
    words, ordered = _words(text)
    found = sum(1 for p in patterns if (_has_prefix(ordered, p.text) if p.prefix else p.text in words))
    return found / len(patterns)


def reciprocal_rank_fusion(
    rankings: Mapping[str, Sequence[str]], *, weights: Mapping[str, float], k: float
) -> dict[str, float]:
    """Weighted RRF: score(d) = sum over retrievers r of weights[r] / (k + rank_r(d)), ranks from 1.

    A retriever without a weight counts with weight 1.0. An id listed twice by one retriever keeps its
    best rank. Larger ``k`` flattens the curve (Cormack et al. 2009 use 60).
    """
    fused: dict[str, float] = {}
    for name, ids in rankings.items():
        weight = weights.get(name, 1.0)
        if weight == 0.0:
            continue
        seen: set[str] = set()
        for rank, memory_id in enumerate(ids, start=1):
            if memory_id in seen:
                continue
            seen.add(memory_id)
            fused[memory_id] = fused.get(memory_id, 0.0) + weight / (k + rank)
    return fused


def normalised(vector: Sequence[float]) -> NDArray[np.float64] | None:
    """``vector`` scaled to unit length, or None when it is empty or zero."""
    if len(vector) == 0:
        return None
    arr = np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(arr))
    return None if norm == 0.0 else arr / norm


def cosine(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Cosine similarity of two vectors; None when either is empty or zero, or the sizes differ."""
    na, nb = normalised(a), normalised(b)
    if na is None or nb is None or na.shape != nb.shape:
        return None
    return float(na @ nb)


_ROWS: OrderedDict[int, tuple[Sequence[float], NDArray[np.float64]]] = OrderedDict()
_ROWS_SIZE = 8192
_ROWS_LOCK = threading.Lock()


def _stack(vectors: Sequence[Sequence[float]]) -> NDArray[np.float64]:
    """``vectors`` as a float64 matrix; rows of vectors seen before come from a conversion memo.

    The memo is keyed by object identity and holds the vector itself, so an id cannot be reused while
    its entry lives; only tuples (immutable) are memoised. Stores that hand out the same record objects
    again (a decode cache) make repeated searches skip the float-by-float conversion.
    """
    out = np.empty((len(vectors), len(vectors[0]) if vectors else 0), dtype=np.float64)
    with _ROWS_LOCK:
        for n, vector in enumerate(vectors):
            if not isinstance(vector, tuple):
                out[n] = np.asarray(vector, dtype=np.float64)
                continue
            entry = _ROWS.get(id(vector))
            if entry is not None and entry[0] is vector:
                out[n] = entry[1]
                continue
            row = np.asarray(vector, dtype=np.float64)
            out[n] = row
            _ROWS[id(vector)] = (vector, row)
            if len(_ROWS) > _ROWS_SIZE:
                _ROWS.popitem(last=False)
    return out


def cosine_to(query: NDArray[np.float64] | None, vectors: Sequence[Sequence[float]]) -> list[float | None]:
    """Cosine of a unit ``query`` with each vector; None where a vector is missing, zero or of another size."""
    out: list[float | None] = [None] * len(vectors)
    if query is None:
        return out
    rows = [i for i, v in enumerate(vectors) if len(v) == query.shape[0]]
    if not rows:
        return out
    mat = _stack([vectors[i] for i in rows])
    norms = np.linalg.norm(mat, axis=1)
    dots = mat @ query
    for i, dot, norm in zip(rows, dots.tolist(), norms.tolist(), strict=True):
        if norm > 0.0:
            out[i] = dot / norm
    return out


def similarity_matrix(vectors: Sequence[Sequence[float]]) -> NDArray[np.float64]:
    """Pairwise cosine similarities; rows of missing, zero or odd-sized vectors are 0 (1 on the diagonal)."""
    n = len(vectors)
    sizes = [len(v) for v in vectors if len(v)]
    dim = max(set(sizes), key=sizes.count) if sizes else 0
    sims: NDArray[np.float64] = np.zeros((n, n))
    rows = [i for i, v in enumerate(vectors) if dim and len(v) == dim]
    if rows:
        mat = _stack([vectors[i] for i in rows])
        norms = np.linalg.norm(mat, axis=1, keepdims=True)
        mat = np.divide(mat, norms, out=np.zeros_like(mat), where=norms > 0)
        sims[np.ix_(rows, rows)] = mat @ mat.T
    np.fill_diagonal(sims, 1.0)
    return sims


def calibrate(value: float, floor: float, ceiling: float) -> float:
    """Map ``value`` linearly from [floor, ceiling] onto [0, 1], clamped."""
    if ceiling <= floor:
        return 1.0 if value >= ceiling else 0.0
    return min(1.0, max(0.0, (value - floor) / (ceiling - floor)))


def mmr_select(
    relevance: Sequence[float] | NDArray[np.float64],
    similarity: Sequence[Sequence[float]] | NDArray[np.float64],
    *,
    lambda_: float,
    limit: int,
    groups: Sequence[str] | None = None,
    per_group: int | None = None,
    prefill: int = 0,
    duplicate_threshold: float | None = None,
) -> list[int]:
    """Maximal marginal relevance: indices picked greedily by lambda*rel - (1-lambda)*max sim to picked.

    ``relevance`` should be in [0, 1] like ``similarity`` (a square matrix). The first ``prefill`` picks
    go by relevance alone (as MemOS does for its top 5). With ``groups`` and ``per_group``, at most
    ``per_group`` items are picked per group (one group per cube). A candidate whose similarity to an
    already picked item is at or above ``duplicate_threshold`` is dropped as a near duplicate.
    Ties break on the lower index, so equal input gives equal output.
    """
    rel = np.asarray(relevance, dtype=np.float64)
    n = rel.shape[0]
    if n == 0 or limit <= 0:
        return []
    sims = np.asarray(similarity, dtype=np.float64).reshape(n, n)
    open_ = np.ones(n, dtype=bool)
    max_sim = np.zeros(n, dtype=np.float64)
    group_ids = np.zeros(n, dtype=np.int64)
    if groups is not None:
        names = {name: i for i, name in enumerate(dict.fromkeys(groups))}
        group_ids = np.asarray([names[g] for g in groups], dtype=np.int64)
    counts = np.zeros(int(group_ids.max()) + 1, dtype=np.int64)
    cap = per_group if groups is not None and per_group is not None else None
    picked: list[int] = []
    while len(picked) < limit:
        allowed = open_ if cap is None else open_ & (counts[group_ids] < cap)
        if not allowed.any():
            break
        score = rel if len(picked) < prefill else lambda_ * rel - (1.0 - lambda_) * max_sim
        best = int(np.argmax(np.where(allowed, score, -np.inf)))
        picked.append(best)
        open_[best] = False
        counts[group_ids[best]] += 1
        row = sims[best]
        if duplicate_threshold is not None:
            open_ &= row < duplicate_threshold
        np.maximum(max_sim, row, out=max_sim)
    return picked
