"""Ranking maths: keyword queries, weighted RRF, cosine helpers, calibration and MMR."""

from __future__ import annotations

import pytest

from processors.fusion import (
    calibrate,
    cosine,
    cosine_to,
    keyword_query,
    mmr_select,
    normalised,
    query_terms,
    reciprocal_rank_fusion,
    similarity_matrix,
    term_coverage,
    term_patterns,
)


def test_query_terms_strip_question_and_function_words() -> None:
    assert query_terms("When did Caroline go to the LGBTQ support group?") == [
        "caroline",
        "go",
        "lgbtq",
        "support",
        "group",
    ]
    assert query_terms("What is Melanie's favourite book in 2022?") == [
        "melanie",
        "favourite",
        "book",
        "2022",
    ]
    # nothing but stopwords: keep them rather than search for nothing
    assert query_terms("who am I") == ["who", "am", "i"]
    assert keyword_query("Please recommend a hotel, Love u u") == "recommend hotel love"
    assert keyword_query("Who are you?", strip_stopwords=False) == "who are you"


def test_term_coverage() -> None:
    both = term_patterns(["hotels", "love"])
    assert term_coverage(both, "I love this hotel") == 1.0  # "hotels" finds "hotel": prefix of 4+ letters
    assert term_coverage(both, "Hotelier Lovelace") == 1.0
    assert term_coverage(term_patterns(["inn", "go"]), "Innsbruck, going") == 0.0  # short terms: whole words
    assert term_coverage(term_patterns(["inn", "go"]), "the inn, let's go") == 1.0
    assert term_coverage([], "anything") == 0.0


def test_rrf_weights_and_ranks() -> None:
    fused = reciprocal_rank_fusion(
        {"dense": ["a", "b", "c"], "keyword": ["c", "a"]}, weights={"dense": 1.0, "keyword": 0.5}, k=10
    )
    assert fused["a"] == pytest.approx(1 / 11 + 0.5 / 12)
    assert fused["b"] == pytest.approx(1 / 12)
    assert fused["c"] == pytest.approx(1 / 13 + 0.5 / 11)
    assert sorted(fused, key=lambda i: -fused[i]) == ["a", "c", "b"]


def test_rrf_zero_weight_and_duplicates() -> None:
    fused = reciprocal_rank_fusion({"dense": ["a", "a", "b"], "graph": ["z"]}, weights={"graph": 0.0}, k=60)
    assert set(fused) == {"a", "b"}
    assert fused["a"] == pytest.approx(1 / 61)
    assert fused["b"] == pytest.approx(1 / 63)  # the duplicate still takes a rank position


def test_cosine_helpers() -> None:
    assert cosine([1.0, 0.0], [0.0, 2.0]) == pytest.approx(0.0)
    assert cosine([1.0, 1.0], [2.0, 2.0]) == pytest.approx(1.0)
    assert cosine([], [1.0]) is None
    assert cosine([1.0, 0.0], [1.0, 0.0, 0.0]) is None
    assert normalised([0.0, 0.0]) is None
    query = normalised([1.0, 0.0])
    assert cosine_to(query, [[1.0, 0.0], [], [0.0, 3.0], [1.0, 2.0, 3.0]]) == [
        pytest.approx(1.0),
        None,
        pytest.approx(0.0),
        None,
    ]
    sims = similarity_matrix([[1.0, 0.0], [1.0, 1.0], []])
    assert sims[0][1] == pytest.approx(2**-0.5)
    assert sims[2].tolist() == [0.0, 0.0, 1.0]


def test_calibrate() -> None:
    assert calibrate(0.75, 0.7, 0.9) == pytest.approx(0.25)
    assert calibrate(0.5, 0.7, 0.9) == 0.0
    assert calibrate(0.95, 0.7, 0.9) == 1.0
    assert calibrate(0.9, 0.9, 0.9) == 1.0


def test_mmr_prefers_diverse_items() -> None:
    relevance = [1.0, 0.95, 0.6]
    sims = [[1.0, 0.99, 0.0], [0.99, 1.0, 0.0], [0.0, 0.0, 1.0]]
    assert mmr_select(relevance, sims, lambda_=1.0, limit=2) == [0, 1]
    assert mmr_select(relevance, sims, lambda_=0.5, limit=2) == [0, 2]
    # prefill picks by relevance alone
    assert mmr_select(relevance, sims, lambda_=0.5, limit=2, prefill=2) == [0, 1]


def test_mmr_group_caps_and_duplicates() -> None:
    relevance = [0.9, 0.8, 0.7, 0.6]
    sims = [[1.0 if i == j else 0.0 for j in range(4)] for i in range(4)]
    sims[0][3] = sims[3][0] = 0.99
    picked = mmr_select(relevance, sims, lambda_=0.8, limit=4, groups=["x", "x", "y", "y"], per_group=1)
    assert picked == [0, 2]
    picked = mmr_select(relevance, sims, lambda_=0.8, limit=4, duplicate_threshold=0.98)
    assert picked == [0, 1, 2]  # 3 is a near duplicate of 0
    assert mmr_select([], [], lambda_=0.5, limit=3) == []


def test_cosines_follow_the_vectors_they_are_given_not_a_memo() -> None:
    query = normalised([1.0, 0.0])
    vector = [1.0, 0.0]
    frozen = (0.0, 1.0)
    assert cosine_to(query, [vector, frozen]) == [1.0, 0.0]
    vector[0], vector[1] = 0.0, 1.0  # a list changed in place is read afresh
    assert cosine_to(query, [vector, frozen]) == [0.0, 0.0]
    assert cosine_to(query, [(1.0, 0.0), frozen]) == [1.0, 0.0]  # equal tuples, other objects
