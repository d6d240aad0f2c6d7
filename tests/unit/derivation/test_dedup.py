"""Write-time dedup and conflicts: duplicates become revisions, conflicts supersede, history stays."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from processors.dedup import DedupSettings, conflict_key, cosine, resolve_candidates, token_overlap
from schemas.events import MemoryAdded, MemoryRetired, MemoryRevised, RelationAdded, SourceRef
from schemas.memory import MemoryRecord
from tests.support.examples import conversation

EVENT = conversation([{"role": "user", "content": "x"}])
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def candidate(
    memory_id: str,
    text: str,
    *,
    title: str = "",
    mtype: str = "UserMemory",
    extractor: str = "rules",
    vector: list[float] | None = None,
) -> MemoryAdded:
    return MemoryAdded(
        event_id=uuid.uuid4(),
        occurred_at=EVENT.occurred_at,
        key="cube_test",
        memory_id=memory_id,
        cube_id="cube_test",
        user_id="u",
        memory=text,
        memory_type=mtype,
        title=title,  # type: ignore[arg-type]
        extractor=extractor,
        embedding=vector or [1.0, 0.0],
        sources=[SourceRef(content=text)],
        tags=["new"],
    )


def record(
    memory_id: str,
    text: str,
    *,
    key: str = "",
    mtype: str = "UserMemory",
    extractor: str = "rules",
    revision: int = 0,
    status: str = "activated",
    origin: str | None = None,
    user: str = "u",
) -> MemoryRecord:
    return MemoryRecord(
        id=memory_id,
        cube_id="cube_test",
        user_id=user,
        memory=text,
        memory_type=mtype,
        key=key,  # type: ignore[arg-type]
        extractor=extractor,
        revision=revision,
        status=status,
        origin_event_id=origin,  # type: ignore[arg-type]
        created_at=T0,
        updated_at=T0,
        tags=("old",),
    )


def test_helpers() -> None:
    assert (
        cosine([1.0, 0.0], [1.0, 0.0]) == 1.0
        and cosine([1.0, 0.0], [0.0, 1.0]) == 0.0
        and cosine([], [1.0]) == 0.0
    )
    assert token_overlap("The user likes tea.", "the user likes tea") == 1.0
    assert token_overlap("a b", "c d") == 0.0
    assert conflict_key("PreferenceMemory", "preference: Tea", "rules") == "preference|preference: tea"
    assert conflict_key("UserMemory", "lives in", "fast") is None
    assert conflict_key("UserMemory", "question: what", "rules") is None
    assert conflict_key("UserMemory", "answer: do you have any food allergies", "rules") is None  # answers add up
    assert conflict_key("ToolSchemaMemory", "search", "rules") is None


def test_new_memory_without_neighbours_is_added() -> None:
    new = candidate("n1", "The user lives in Berlin.", title="lives in")
    result = resolve_candidates(EVENT, [new], {})
    assert result.events == [new] and result.resolved == {"n1": "n1"}


def test_duplicate_becomes_revision_with_sources_appended() -> None:
    new = candidate("n1", "The user lives in Berlin now.", title="lives in")
    old = record("o1", "The user lives in Berlin now!", key="lives in", revision=2)
    result = resolve_candidates(EVENT, [new], {"n1": [(old, 0.97)]})
    [revised] = result.events
    assert isinstance(revised, MemoryRevised)
    assert revised.memory_id == "o1" and revised.reason == "duplicate" and revised.revision == 3
    assert revised.memory == old.memory and revised.sources == new.sources
    assert revised.tags == ["old", "new"] and revised.metadata["duplicate_count"] == 1
    assert result.resolved == {"n1": "o1"}


def test_similar_but_different_text_is_not_a_duplicate() -> None:
    new = candidate("n1", "The user bought a red bicycle for commuting.", title="bought a red")
    old = record("o1", "The user repaired an old car last winter.", key="repaired an old")
    result = resolve_candidates(EVENT, [new], {"n1": [(old, 0.95)]})
    assert result.events == [new]
    loose = DedupSettings(duplicate_cosine=0.9, duplicate_overlap=0.1)
    assert resolve_candidates(EVENT, [new], {"n1": [(old, 0.95)]}, loose).events == [new]  # new words: kept
    part = candidate("n2", "A red bicycle.")
    whole = record("o2", "The user bought a red bicycle for commuting.")
    assert resolve_candidates(EVENT, [part], {"n2": [(whole, 0.95)]}).events == [part]  # overlap 3/8 < 0.6
    assert isinstance(resolve_candidates(EVENT, [part], {"n2": [(whole, 0.95)]}, loose).events[0], MemoryRevised)


def test_a_duplicate_says_nothing_the_stored_memory_does_not() -> None:
    """Close embeddings and a high overlap are not enough: e5 gives 0.946 to hiking / swimming and 0.939 to
    these two siblings, so dedup by cosine and Jaccard dropped the second of each from search."""
    pairs = [
        ("user: I went hiking with my kids last weekend.", "user: I went swimming with my kids last weekend."),
        ("user: My sister lives in Boston and works as a nurse.", "user: My brother lives in Denver and works as a nurse."),
        ("user: Alice paid Bob back.", "user: Bob paid Alice back."),
        ("user: I like spicy food.", "user: I don't like spicy food."),
        ("user: I don't like spicy food.", "user: I like spicy food."),  # its words are there, not in one run
        ("user: 我喜欢猫。", "user: 我喜欢狗。"),
    ]
    for stored, new_text in pairs:
        new = candidate("n1", new_text, vector=[1.0, 0.0])
        old = record("o1", stored)
        assert resolve_candidates(EVENT, [new], {"n1": [(old, 0.99)]}).events == [new], new_text
        twin = candidate("n0", stored, vector=[1.0, 0.0])
        within = resolve_candidates(EVENT, [twin, new], {})
        assert [e.memory_id for e in within.events] == ["n0", "n1"], new_text  # type: ignore[attr-defined]
    # the same words again, at another chat time, in other case and punctuation, or fewer of them: a duplicate
    stored = "[2023-05-08 13:56] user: I went hiking with my kids last weekend, in the Alps!"
    for again in ("[2023-06-01 09:00] user: I went hiking with my kids last weekend, in the Alps!",
                  "user: i went hiking with my kids last weekend in the alps",
                  "user: I went hiking with my kids last weekend."):
        new = candidate("n1", again, vector=[1.0, 0.0])
        [revised] = resolve_candidates(EVENT, [new], {"n1": [(record("o1", stored), 0.99)]}).events
        assert isinstance(revised, MemoryRevised) and revised.memory == stored, again


def test_a_memory_that_contains_a_stored_one_takes_its_place() -> None:
    """A conversation sent again with a new message: its window holds the stored window's words in one run and
    more; it is added with the stored one's sources and the stored one is retired as refined by it."""
    stored = record("o1", "[2024-01-01 10:00] user: I plan a trip to Guangzhou.\nassistant: Great, it is hot in summer.")
    stored = stored.model_copy(update={"sources": (SourceRef(content="I plan a trip to Guangzhou."),)})
    text = "[2024-01-02 09:00] user: I plan a trip to Guangzhou.\nassistant: Great, it is hot in summer.\nuser: Also"
    new = candidate("n1", text + " my wife is allergic to shellfish.")
    added, retired = resolve_candidates(EVENT, [new], {"n1": [(stored, 0.97)]}).events
    assert isinstance(added, MemoryAdded) and added.memory == new.memory
    assert [s.content for s in added.sources] == [new.memory, "I plan a trip to Guangzhou."]
    assert isinstance(retired, MemoryRetired) and retired.memory_id == "o1" and retired.reason == "refined"
    assert retired.successor_ids == ["n1"]
    negated = candidate("n2", "user: I don't like spicy food.")  # the stored words, but not in one run
    assert resolve_candidates(EVENT, [negated], {"n2": [(record("o2", "user: I like spicy food."), 0.97)]}).events == [
        negated
    ]


def test_conflicting_fact_supersedes_the_old_one() -> None:
    new = candidate("n1", "The user lives in Paris.", title="lives in")
    old = record("o1", "The user lives in Berlin.", key="lives in")
    result = resolve_candidates(EVENT, [new], {"n1": [(old, 0.8)]})
    added, retired, relation = result.events
    assert isinstance(added, MemoryAdded) and added.valid_from == EVENT.occurred_at
    assert added.metadata["supersedes"] == "o1"
    assert isinstance(retired, MemoryRetired)
    assert (retired.memory_id, retired.reason, retired.successor_ids, retired.valid_to) == (
        "o1",
        "superseded",
        ["n1"],
        EVENT.occurred_at,
    )
    assert isinstance(relation, RelationAdded)
    assert (relation.source_id, relation.target_id, relation.relation) == ("n1", "o1", "SUPERSEDES")
    again = resolve_candidates(EVENT, [new], {"n1": [(old, 0.8)]})
    assert [e.event_id for e in again.events] == [e.event_id for e in result.events]


def test_conflicting_preference_supersedes_but_fast_memories_never_conflict() -> None:
    new = candidate("n1", "The user dislikes coffee.", title="preference: coffee", mtype="PreferenceMemory")
    old = record("o1", "The user likes coffee.", key="preference: coffee", mtype="PreferenceMemory")
    assert isinstance(resolve_candidates(EVENT, [new], {"n1": [(old, 0.9)]}).events[1], MemoryRetired)
    fast = candidate("n2", "user: I moved to Paris", title="I moved to Paris", extractor="fast")
    fast_old = record("o2", "user: I moved to Berlin", key="I moved to Paris", extractor="fast")
    assert resolve_candidates(EVENT, [fast], {"n2": [(fast_old, 0.9)]}).events == [fast]


def test_own_retired_and_foreign_records_are_ignored() -> None:
    new = candidate("n1", "The user lives in Paris.", title="lives in")
    own = record("o1", "The user lives in Paris.", key="lives in", origin=str(EVENT.event_id))
    gone = record("o2", "The user lives in Paris.", key="lives in", status="retired")
    result = resolve_candidates(EVENT, [new], {"n1": [(own, 1.0), (gone, 1.0)]})
    assert result.events == [new]
    # another user's memories in a shared cube: "the user" there is someone else
    theirs = record("o3", "The user lives in Paris.", key="lives in", user="v")
    elsewhere = record("o4", "The user lives in Berlin.", key="lives in", user="v")
    assert resolve_candidates(EVENT, [new], {"n1": [(theirs, 1.0), (elsewhere, 0.95)]}).events == [new]


def test_duplicates_within_one_add_are_merged() -> None:
    a = candidate("n1", "The user likes tea.", vector=[1.0, 0.0])
    b = candidate("n2", "The user likes tea.", vector=[1.0, 0.0])
    c = candidate("n3", "The user owns a boat.", vector=[0.0, 1.0])
    result = resolve_candidates(EVENT, [a, b, c], {})
    assert [e.memory_id for e in result.events] == ["n1", "n3"]  # type: ignore[attr-defined]
    assert len(result.events[0].sources) == 1  # type: ignore[attr-defined]  (same source, not doubled)
    assert result.resolved == {"n1": "n1", "n2": "n1", "n3": "n3"}


def test_two_duplicates_of_one_memory_get_consecutive_revisions() -> None:
    old = record("o1", "The user likes tea.", revision=4)
    a = candidate("n1", "The user likes tea.", vector=[1.0, 0.0], mtype="PreferenceMemory")
    b = candidate("n2", "The user likes tea.", vector=[1.0, 0.0])
    result = resolve_candidates(EVENT, [a, b], {"n1": [(old, 0.99)], "n2": [(old, 0.99)]})
    assert [e.revision for e in result.events] == [5, 6]  # type: ignore[attr-defined]


def test_a_large_add_never_builds_an_all_pairs_matrix() -> None:
    """6,000 candidates: exact twins far apart merge, near twins inside the window merge, memory stays O(n).

    An all-pairs float32 matrix for 6,000 candidates is 144 MB (a 30,000-memory add crashed OpenBLAS);
    the traced peak must stay far below it.
    """
    import tracemalloc

    import numpy as np

    rng = np.random.default_rng(7)
    n = 6000
    vectors = rng.normal(size=(n, 32)).astype(np.float32)
    texts = [f"memory number {i} about topic {i * 7919 % 10007}" for i in range(n)]
    texts[5999] = texts[3]  # an exact twin 5,996 candidates later: found through the text index
    vectors[10] = vectors[9] * 1.001  # a near twin right after its original: found in the window
    texts[10] = texts[9] + " "
    candidates = [candidate(f"m{i}", texts[i], vector=vectors[i].tolist()) for i in range(n)]
    tracemalloc.start()
    result = resolve_candidates(EVENT, candidates, {}, DedupSettings(batch_window=256))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result.resolved["m5999"] == "m3" and result.resolved["m10"] == "m9"
    kept = [e for e in result.events if isinstance(e, MemoryAdded)]
    assert len(kept) == n - 2
    assert peak < 40 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB: something built an n x n matrix"


def test_token_sets_and_names_are_cached_only_for_texts_of_a_memorys_usual_size() -> None:
    from processors import dedup, entities

    short = "Caroline: I went to the LGBTQ support group in Boston yesterday. " * 3
    long = "Melanie: we painted the lake at sunrise with the kids in Ontario. " * 60  # a file chunk's size
    assert len(short) <= dedup.CACHED_CHARS < len(long)
    def sizes() -> tuple[int, int, int]:
        return (dedup._cached_tokens.cache_info().currsize, dedup._cached_words.cache_info().currsize,
                entities._cached_names.cache_info().currsize)

    before = sizes()
    for _ in range(2):
        assert dedup.token_overlap(short, long) == dedup.token_overlap(long, short)
        assert dedup.says_nothing_new(short, long) is False and dedup.says_nothing_new(short, short)
        assert entities.entity_names(short) == {"lgbtq", "boston"} and "ontario" in entities.entity_names(long)
    after = sizes()
    assert all(a - b <= 1 for a, b in zip(after, before, strict=True))  # the short text at most, never the long one
    assert dedup._tokens(long) == frozenset(dedup._words(long)) and isinstance(dedup._tokens(short), frozenset)
