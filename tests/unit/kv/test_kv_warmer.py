"""Warm-cache selection: the documented score, the token budget, prefix order and hash, rebuild decisions."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from processors.kv_warmer import (
    MEMORY_HEADER,
    MemoryCandidate,
    QuerySignal,
    WarmComposition,
    WarmPolicy,
    compose_memory_text,
    estimate_tokens,
    plan_warm_cache,
    prefix_hash,
    score_memories,
    select_within_budget,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def mem(
    memory_id: str, age: timedelta = DAY, text: str | None = None, tokens: int | None = 10
) -> MemoryCandidate:
    return MemoryCandidate(memory_id, text or f"memory {memory_id}", NOW - age, tokens)


def test_score_is_the_documented_weighted_sum() -> None:
    policy = WarmPolicy(query_half_life_s=3600, recency_half_life_s=7 * 86400)
    memories = [mem("a", age=7 * DAY), mem("b", age=timedelta(0))]
    queries = [QuerySignal("q", NOW - timedelta(hours=1), {"a": 0.8, "b": -0.3})]
    counts = {"a": 3, "b": 0}
    scored = {s.memory_id: s for s in score_memories(memories, queries, counts, NOW, policy)}
    a, b = scored["a"], scored["b"]
    assert a.relevance == pytest.approx(0.8 * 0.5)  # one half-life old query
    assert a.frequency == pytest.approx(1.0)
    assert a.recency == pytest.approx(0.5)
    assert a.score == pytest.approx(0.5 * 0.4 + 0.3 * 1.0 + 0.2 * 0.5)
    assert b.relevance == 0.0  # negative similarity clamps to 0
    assert b.frequency == 0.0
    assert b.recency == pytest.approx(1.0)
    assert b.score == pytest.approx(0.2)


def test_frequency_is_log_normalised_and_relevance_takes_the_best_query() -> None:
    memories = [mem("a"), mem("b")]
    queries = [
        QuerySignal("old", NOW - timedelta(hours=2), {"a": 1.0}),
        QuerySignal("new", NOW, {"a": 0.3, "b": 0.6}),
    ]
    scored = {s.memory_id: s for s in score_memories(memories, queries, {"a": 1, "b": 7}, NOW)}
    assert scored["a"].frequency == pytest.approx(math.log1p(1) / math.log1p(7))
    assert scored["a"].relevance == pytest.approx(0.3)  # 1.0 * 0.25 (two half-lives) < 0.3
    assert scored["b"].relevance == pytest.approx(0.6)


def test_selection_respects_the_budget_skips_what_does_not_fit_and_orders_chronologically() -> None:
    header = estimate_tokens(MEMORY_HEADER)
    memories = [
        mem("old", age=3 * DAY, tokens=30),
        mem("big", age=2 * DAY, tokens=500),
        mem("new", age=DAY, tokens=30),
    ]
    queries = [QuerySignal("q", NOW, {"big": 1.0, "new": 0.9, "old": 0.8})]
    policy = WarmPolicy(token_budget=header + 70)
    chosen = select_within_budget(score_memories(memories, queries, {}, NOW, policy), policy)
    assert [s.memory_id for s in chosen] == ["old", "new"]  # big is skipped, smaller ones still fit
    assert sum(s.tokens for s in chosen) <= policy.token_budget - header


def test_max_memories_and_min_score_limit_the_selection() -> None:
    memories = [mem(str(i), tokens=1) for i in range(10)]
    queries = [QuerySignal("q", NOW, {str(i): i / 10 for i in range(10)})]
    chosen = select_within_budget(score_memories(memories, queries, {}, NOW), WarmPolicy(max_memories=3))
    assert {s.memory_id for s in chosen} == {"9", "8", "7"}
    policy = WarmPolicy(min_score=0.5 * 0.75 + 0.2 * 0.9)
    chosen = select_within_budget(score_memories(memories, queries, {}, NOW, policy), policy)
    assert {s.memory_id for s in chosen} == {"9", "8"}


def test_prefix_hash_depends_on_model_order_and_exact_texts() -> None:
    base = prefix_hash("m", ["a", "b"])
    assert base == prefix_hash("m", ["a", "b"])
    assert len(base) == 64
    assert base != prefix_hash("m", ["b", "a"])
    assert base != prefix_hash("other", ["a", "b"])
    assert prefix_hash("m", ["ab"]) != prefix_hash("m", ["a", "b"])  # length-prefixed parts


def test_compose_memory_text_lists_memories_in_order_on_single_lines() -> None:
    text = compose_memory_text(["first  fact", "second\nfact"])
    assert text == f"{MEMORY_HEADER}\n- first fact\n- second fact"


def test_plan_cold_then_unchanged_then_changed() -> None:
    memories = [mem("a"), mem("b", age=2 * DAY)]
    cold = plan_warm_cache("model", memories, [], {}, NOW)
    assert cold.rebuild and cold.reason == "cold"
    assert cold.memory_ids == ("b", "a")  # chronological
    assert cold.prefix_hash == prefix_hash("model", cold.texts)
    current = WarmComposition(cold.memory_ids, cold.texts, cold.prefix_hash)
    same = plan_warm_cache("model", memories, [], {}, NOW, current)
    assert not same.rebuild and same.reason == "unchanged"
    grown = plan_warm_cache("model", [*memories, mem("c", age=timedelta(hours=1))], [], {}, NOW, current)
    assert grown.rebuild and grown.reason == "composition_changed"
    assert grown.memory_ids == ("b", "a", "c")


def test_plan_rebuilds_when_a_cached_memory_was_deleted_or_revised() -> None:
    memories = [mem("a"), mem("b")]
    first = plan_warm_cache("model", memories, [], {}, NOW)
    current = WarmComposition(first.memory_ids, first.texts, first.prefix_hash)
    gone = plan_warm_cache("model", [mem("a")], [], {}, NOW, current, WarmPolicy(hysteresis=10.0))
    assert gone.rebuild and gone.reason == "stale"
    revised = plan_warm_cache("model", [mem("a"), mem("b", text="new text")], [], {}, NOW, current)
    assert revised.rebuild and revised.reason == "stale"


def test_hysteresis_keeps_a_valid_composition_unless_the_new_one_is_clearly_better() -> None:
    memories = [mem("a", tokens=10), mem("b", tokens=10)]
    policy = WarmPolicy(token_budget=estimate_tokens(MEMORY_HEADER) + 10, hysteresis=0.5)
    weak = [QuerySignal("q", NOW, {"a": 0.50, "b": 0.55})]
    first = plan_warm_cache("model", memories, [QuerySignal("q", NOW, {"a": 0.9})], {}, NOW, None, policy)
    assert first.memory_ids == ("a",)
    current = WarmComposition(first.memory_ids, first.texts, first.prefix_hash)
    kept = plan_warm_cache("model", memories, weak, {}, NOW, current, policy)
    assert not kept.rebuild and kept.reason == "within_hysteresis"
    assert kept.memory_ids == ("a",) and kept.prefix_hash == first.prefix_hash
    strong = [QuerySignal("q", NOW, {"a": 0.0, "b": 1.0})]
    moved = plan_warm_cache("model", memories, strong, {}, NOW, current, policy)
    assert moved.rebuild and moved.memory_ids == ("b",)


def test_plan_with_no_memories_is_empty_and_needs_no_build() -> None:
    plan = plan_warm_cache("model", [], [], {}, NOW)
    assert not plan.rebuild and plan.reason == "empty" and plan.memory_ids == ()


def test_estimate_tokens_grows_with_text() -> None:
    assert estimate_tokens("") >= 1
    assert estimate_tokens("x" * 400) > estimate_tokens("x" * 40)


def test_a_zero_half_life_keeps_only_what_is_brand_new_and_no_queries_means_no_relevance() -> None:
    policy = WarmPolicy(recency_half_life_s=0)
    memories = [mem("now", age=timedelta(0)), mem("old", age=timedelta(seconds=1))]
    scored = {s.memory_id: s for s in score_memories(memories, [], {}, NOW, policy)}
    assert scored["now"].recency == 1.0 and scored["old"].recency == 0.0
    assert scored["now"].relevance == 0.0 and scored["now"].frequency == 0.0
