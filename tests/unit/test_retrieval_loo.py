"""Leave-one-conversation-out scoring of bench.retrieval: fold choices and the bootstrap interval."""

from __future__ import annotations

import numpy as np
import pytest

from bench.retrieval_loo import Candidates, interval, leave_one_out, mean, ranked
from processors.retrieval import SearchSettings
from tests.unit.retrieval.records import record


def test_each_fold_chooses_on_the_other_conversations_only() -> None:
    base = SearchSettings()
    other = base.model_copy(update={"mmr_lambda": 0.5})
    # setting 1 wins on conversation a, setting 0 on b and c. Holding out a, b and c choose setting 0; holding
    # out b (or c), a's margin tips a and the other to setting 1
    scores = np.array([[0.0, 0.0, 1.0, 1.0, 0.8, 0.8], [1.0, 1.0, 0.5, 0.5, 0.4, 0.4]])
    result = leave_one_out(scores, ["a", "a", "b", "b", "c", "c"], [1, 1, 1, 2, 2, 2], [base, other])
    assert result.chosen["a"] == {}  # a held out: b and c choose the base, which scores 0 on a
    assert result.chosen["b"] == {"mmr_lambda": 0.5} and result.chosen["c"] == {"mmr_lambda": 0.5}
    assert result.held_out == {"a": 0.0, "b": 0.5, "c": 0.4}
    assert result.best == {"mmr_lambda": 0.5}
    assert mean(result.loo) == pytest.approx(0.3)  # far below the in-sample best, which saw every question
    assert mean(result.in_sample) == pytest.approx(3.8 / 6) and mean(result.base) == pytest.approx(0.6)
    assert mean(result.loo, 2) == pytest.approx((0.5 + 0.4 + 0.4) / 3)


def test_interval_brackets_the_mean_narrows_with_more_questions_and_repeats() -> None:
    rng = np.random.default_rng(7)
    few = {1: list(rng.uniform(size=40))}
    many = {1: list(rng.uniform(size=4000))}
    lo, hi = interval(few)
    assert lo < mean(few) < hi
    assert interval(few) == (lo, hi)  # a fixed seed: the same figures on every run
    lo_many, hi_many = interval(many)
    assert hi_many - lo_many < (hi - lo) / 5
    assert interval({1: [0.5] * 30}) == (0.5, 0.5)
    assert interval({1: [1.0, 0.0]}, category=2) == (0.0, 0.0)  # no questions in the category
    wide = interval(few, level=0.99)
    assert wide[0] <= lo and wide[1] >= hi


def test_ranked_blends_the_collected_reranker_scores_as_search_does() -> None:
    texts = {"a": "alpha words here", "b": "beta words here", "c": "gamma words here"}
    vectors = {"a": (1.0, 0.0), "b": (0.9, 0.436), "c": (0.8, 0.6)}
    records = {i: record(i, t, embedding=vectors[i], embedding_model="m") for i, t in texts.items()}
    cand = Candidates("which words?", 1, ("x",), "cube-a", [1.0, 0.0], {"dense": ["a", "b", "c"]}, records, [])
    order = [m["memory"] for m in ranked(cand, SearchSettings(), top_k=3, query_model="m")]
    assert order[0] == texts["a"]  # the retrievers' order without a reranker
    cand.rerank = {"a": 0.0, "b": 0.1, "c": 1.0}
    heavy = SearchSettings(rerank_weight=1.0)
    assert ranked(cand, heavy, top_k=3, query_model="m")[0]["memory"] == texts["c"]
    off = SearchSettings(rerank_weight=0.0)  # weight 0: the reranker's scores change nothing
    assert [m["memory"] for m in ranked(cand, off, top_k=3, query_model="m")] == order
