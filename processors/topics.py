"""Topic labels (pure): memories labelled at ingest against life-topic prototypes; a topic ranking at search.

A question often names a category ("What activities has Melanie done with her family?", "What books has
Tim read?") that the memories holding the answer never say ("the kids loved making something with clay").
At ingest every text memory gets the one topic of :data:`TOPICS` whose prototype description its
embedding is closest to (zero-shot, with the memory's own vector: one matrix product per add, the 28
prototypes embedded once per embedder), stored as metadata ``topic_label`` and ``topic_score``
(preferences keep ``topic`` for their own subject). At search, the topics whose label words the question
uses (light stemming on both sides) give a ranking of the candidates labelled with one of them, most
typical first, fused with a small weight (``weight_topic``).

The taxonomy is generic (everyday conversation topics), written without looking at any evaluation question.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from processors.fusion import query_terms
from schemas.memory import MemoryRecord

__all__ = ["TOPICS", "label_topics", "query_topics", "stem", "topic_ranking", "topic_words"]

TOPICS: dict[str, str] = {
    "hobbies activities": "hobbies and leisure activities, things people do for fun in their free time",
    "family kids": "family life with children, kids, parents, husband, wife, siblings and relatives",
    "pets animals": "pets and animals: a dog, a cat, taking care of a pet",
    "books reading": "books and reading: a novel, an author, a favourite book",
    "music": "music: playing an instrument, songs, a concert, a band, singing",
    "art painting": "art and crafts: painting, drawing, sculpture, making things by hand",
    "sports exercise": "sports and exercise: running, the gym, playing a game, a team, fitness",
    "outdoors nature": "the outdoors and nature: hiking, camping, the beach, mountains, a park",
    "travel trips": "travel and trips: a vacation, visiting another city or country, a road trip",
    "career work": "career and work: a job, a company, a boss, colleagues, business",
    "education school": "education: school, college, classes, studying, a degree",
    "health": "health: an illness, a doctor, hospital, injury, therapy, mental health",
    "food cooking": "food and cooking: a recipe, a meal, baking, a restaurant",
    "friends community": "friends and community: a group, neighbours, social life, meeting people",
    "volunteering charity": "volunteering and charity: helping others, donations, a cause, activism",
    "events celebrations": "events and celebrations: a party, a festival, a wedding, a birthday, a parade",
    "feelings emotions": "feelings and emotions: happiness, sadness, stress, being proud or grateful",
    "beliefs identity": "beliefs, values and identity: religion, faith, who someone is, acceptance",
    "relationships dating": "romantic relationships: dating, a partner, marriage, a breakup",
    "home house": "home and housing: a house, an apartment, moving, decorating, the garden",
    "shopping money": "shopping and money: buying things, purchases, savings, costs",
    "games technology": "games and technology: video games, computers, phones, apps",
    "movies shows": "movies and TV: films, shows, series, watching something",
    "goals plans": "goals and plans: dreams, ambitions, plans for the future",
    "relaxation selfcare": "relaxation and self-care: unwinding, de-stressing, meditation, rest",
    "cars vehicles": "cars and vehicles: driving, a car, a bike, a motorcycle",
    "writing": "writing: a blog, a journal, poems, stories, a book someone writes",
    "photography": "photography: taking photos, pictures, a camera",
}
"""Topic label (its words are what a question must use) -> the prototype text that is embedded."""


def stem(word: str) -> str:
    """A light English stem: plural, then -ing / -ed, cut ("hobbies" -> "hobby", "painted" -> "paint")."""
    w = word.lower()
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        w = w[:-1]
    for suffix in ("ing", "ed"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            return w[: -len(suffix)]
    return w


def topic_words(label: str) -> frozenset[str]:
    """Stems of a topic label's words."""
    return frozenset(stem(w) for w in label.split())


_WORDS = {label: topic_words(label) for label in TOPICS}


def label_topics(
    vectors: npt.ArrayLike, prototypes: npt.ArrayLike, labels: Sequence[str] = tuple(TOPICS)
) -> list[tuple[str, float]]:
    """Per memory vector, its closest topic and how far above the average prototype it lies.

    ``prototypes`` are the embedded :data:`TOPICS` texts, one row per label (same order). Scores are
    taken against prototypes centred on their mean, so the component every prototype shares (e5 puts
    every cosine near 0.8) cancels and the score says how typical of its topic a memory is.
    """
    protos = np.asarray(prototypes, dtype=np.float32)
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.size == 0:
        return []
    if protos.shape[0] != len(labels):
        raise ValueError(f"{protos.shape[0]} prototypes for {len(labels)} labels")
    scores = matrix.reshape(len(matrix), -1) @ (protos - protos.mean(axis=0)).T
    best = scores.argmax(axis=1)
    return [(labels[int(j)], round(float(scores[n, j]), 6)) for n, j in enumerate(best)]


def query_topics(query: str) -> set[str]:
    """Topic labels whose words the query uses ("What books has Tim read?" -> {"books reading"})."""
    terms = {stem(t) for t in query_terms(query)}
    return {label for label, words in _WORDS.items() if words & terms}


def topic_ranking(topics: set[str], ids: Sequence[str], records: Mapping[str, MemoryRecord]) -> list[str]:
    """Those of ``ids`` labelled with one of ``topics``, highest ``topic_score`` first (ties by id)."""
    if not topics:
        return []
    found = []
    for memory_id in ids:
        meta = records[memory_id].metadata
        if meta.get("topic_label") in topics:
            found.append((-float(meta.get("topic_score") or 0.0), memory_id))
    return [memory_id for _, memory_id in sorted(found)]
