"""Topic labels (processors.topics): zero-shot labels at ingest, the topic ranking at search."""

from __future__ import annotations

import numpy as np
import pytest

from processors.retrieval import SearchQuery, SearchSettings, score_hits
from processors.topics import TOPICS, label_topics, query_topics, stem, topic_ranking, topic_words
from tests.unit.retrieval.records import record


def test_stem_folds_plurals_and_verb_endings() -> None:
    assert [stem(w) for w in ("hobbies", "hobby", "activities", "books", "painted", "painting")] == [
        "hobby",
        "hobby",
        "activity",
        "book",
        "paint",
        "paint",
    ]
    assert [stem(w) for w in ("class", "need", "red", "is")] == ["class", "need", "red", "is"]
    assert topic_words("art painting") == {"art", "paint"}


def test_query_topics_are_those_whose_words_the_question_uses() -> None:
    assert query_topics("What activities has Melanie done with her family?") == {
        "hobbies activities",
        "family kids",
    }
    assert query_topics("What books has Tim read?") == {"books reading"}
    assert query_topics("What has Melanie painted?") == {"art painting"}
    assert query_topics("When did Caroline go to the park?") == set()


def test_label_topics_picks_the_closest_prototype_after_centring() -> None:
    labels = ("a", "b", "c")
    # every prototype shares a large common part; only the centred residue tells them apart
    common = np.array([0.0, 0.0, 0.0, 5.0])
    protos = np.stack([common + [1, 0, 0, 0], common + [0, 1, 0, 0], common + [0, 0, 1, 0]])
    memories = np.array([[0.9, 0.1, 0.0, 1.0], [0.0, 0.2, 0.8, 1.0], [0.1, 0.6, 0.3, 1.0]])
    found = label_topics(memories, protos, labels)
    assert [label for label, _ in found] == ["a", "c", "b"]
    assert found[0][1] == pytest.approx(0.9 - 1 / 3, abs=1e-5)  # 0.9 x (1 - 1/3) - 0.1 / 3
    assert label_topics(np.zeros((0, 4)), protos, labels) == []
    with pytest.raises(ValueError):
        label_topics(memories, protos[:2], labels)


def test_the_bundled_taxonomy_has_distinct_labels_and_prototypes() -> None:
    assert len(TOPICS) == len(set(TOPICS.values())) >= 20
    words = [topic_words(label) for label in TOPICS]
    assert all(words) and len({frozenset(w) for w in words}) == len(words)


def test_topic_ranking_orders_labelled_candidates_by_score() -> None:
    records = {
        "a": record("a", metadata={"topic_label": "books reading", "topic_score": 0.01}),
        "b": record("b", metadata={"topic_label": "books reading", "topic_score": 0.03}),
        "c": record("c", metadata={"topic_label": "music", "topic_score": 0.05}),
        "d": record("d"),
    }
    assert topic_ranking({"books reading"}, ["a", "b", "c", "d"], records) == ["b", "a"]
    assert topic_ranking({"books reading", "music"}, ["a", "c"], records) == ["c", "a"]
    assert topic_ranking(set(), ["a", "b"], records) == []


def test_score_hits_fuses_the_topic_ranking_with_its_weight() -> None:
    records = {
        "x": record("x", "Tim: we watched the game last night"),
        "y": record(
            "y",
            "Tim: finished Dune, what a story",
            metadata={"topic_label": "books reading", "topic_score": 0.02},
        ),
    }
    rankings = {"dense": ["x", "y"]}
    args = {"query_vector": [], "terms": [], "flt": None}
    query = SearchQuery(query="What books has Tim read?")
    off = SearchSettings(weight_topic=0.0, length_prior=0.0)
    on = SearchSettings(weight_topic=1.0, length_prior=0.0)
    assert [
        h.record.id for h in score_hits("text", rankings, records, query=query, settings=off, **args)
    ] == [
        "x",
        "y",
    ]
    hits = score_hits("text", rankings, records, query=query, settings=on, **args)
    assert [h.record.id for h in hits] == ["y", "x"]
    assert hits[0].parts["topic"] == pytest.approx(1.0 / (on.rrf_k + 1), abs=1e-6)
    other = SearchQuery(query="What did Tim watch?")  # no topic word: nothing changes
    assert [h.record.id for h in score_hits("text", rankings, records, query=other, settings=on, **args)] == [
        "x",
        "y",
    ]
