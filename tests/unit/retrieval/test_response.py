"""MemOS response shaping: buckets per cube, memory items, embeddings stripped, pref_string."""

from __future__ import annotations

from processors.retrieval import Hit, SearchQuery
from processors.search_response import PREF_NOTE, build_response, memory_item, preference_strings
from tests.unit.retrieval.records import record

UUID = "2f40be8f-736c-4a5f-aada-9489037769e0"


def test_memory_item_has_memos_fields_and_no_embedding() -> None:
    rec = record(
        UUID,
        "User likes strawberries",
        key="Strawberry",
        tags=("food",),
        memory_type="UserMemory",
        embedding=(0.1, 0.2),
        metadata={"info": {"agent_id": "a1"}, "preference_type": "explicit_preference", "embedding": [9.0]},
        sources=[{"type": "chat", "role": "user", "content": "I like strawberries"}],
    )
    item = memory_item(Hit(rec, score=0.1, relativity=0.63))
    assert item["id"] == UUID and item["memory"] == "User likes strawberries"
    assert item["ref_id"] == "[2f40be8f]"
    meta = item["metadata"]
    assert meta["embedding"] == []
    assert meta["relativity"] == 0.63
    assert meta["memory_type"] == "UserMemory" and meta["key"] == "Strawberry" and meta["tags"] == ["food"]
    assert meta["id"] == UUID and meta["ref_id"] == "[2f40be8f]" and meta["memory"] == rec.memory
    assert meta["status"] == "activated" and meta["session_id"] == "default_session"
    assert meta["info"] == {"agent_id": "a1"} and meta["preference_type"] == "explicit_preference"
    assert meta["sources"][0]["content"] == "I like strawberries"
    assert meta["created_at"].startswith("2025-03-01T12:00:00")
    for key in ("user_id", "type", "confidence", "source", "visibility", "updated_at", "usage", "background"):
        assert key in meta
    kept = memory_item(Hit(rec, score=0.1, relativity=0.5), include_embedding=True)
    assert kept["metadata"]["embedding"] == [0.1, 0.2]


def test_retired_item_carries_its_history() -> None:
    rec = record("m-old", status="retired", successor_ids=("m-new",), retire_reason="superseded")
    meta = memory_item(Hit(rec, score=0.1, relativity=0.5))["metadata"]
    assert meta["status"] == "retired" and meta["covered_history"] == ["m-new"]
    assert meta["successor_ids"] == ["m-new"] and meta["retire_reason"] == "superseded"


def test_preference_strings() -> None:
    assert preference_strings([]) == ("", "")
    items = [
        {"memory": "likes tea", "metadata": {"preference_type": "explicit_preference"}},
        {"memory": "x", "metadata": {"preference_type": "implicit_preference", "preference": "quiet places"}},
        {"memory": "prefers trains", "metadata": {}},
        {"memory": "", "metadata": {}},
    ]
    text, note = preference_strings(items)
    assert note == PREF_NOTE
    assert text.startswith(
        "Explicit Preference:\n1. likes tea\n2. prefers trains\nImplicit Preference:\n1. quiet places\n"
    )
    assert text.endswith(PREF_NOTE)


def test_another_users_preferences_are_listed_apart_under_their_writer() -> None:
    """In a shared cube "The user prefers quiet rooms" is its writer's: the asker's pref_string must not tell a
    model to respect it as the asker's own."""
    items = [
        {"memory": "The user prefers quiet rooms.", "metadata": {"user_id": "ann", "preference": "prefers quiet rooms"}},
        {"memory": "The user prefers hotels with a gym.", "metadata": {"user_id": "bob"}},
    ]
    text, _ = preference_strings(items, "bob")
    assert text.startswith("Explicit Preference:\n1. The user prefers hotels with a gym.\n"
                           "Preferences of other users (shared cubes; not this user's):\n1. ann: prefers quiet rooms\n")
    assert preference_strings(items)[0].startswith("Explicit Preference:\n1. prefers quiet rooms\n2. The user")
    assert "other users" in preference_strings(items[:1], "bob")[0]  # only others' preferences: still listed apart


def test_build_response_has_one_bucket_per_cube_even_when_empty() -> None:
    q = SearchQuery(query="x", readable_cube_ids=("c1", "c2"))
    text_hit = Hit(record("t1", cube_id="c1"), 0.1, 0.5)
    pref_hit = Hit(record("p1", "likes tea", cube_id="c2", memory_type="PreferenceMemory"), 0.1, 0.5)
    data = build_response(q, {"text": {"c1": [text_hit]}, "pref": {"c2": [pref_hit]}})
    assert set(data) == {
        "text_mem",
        "act_mem",
        "para_mem",
        "pref_mem",
        "pref_note",
        "pref_string",
        "tool_mem",
        "skill_mem",
    }
    assert data["act_mem"] == [] and data["para_mem"] == []
    for key in ("text_mem", "pref_mem", "tool_mem", "skill_mem"):
        assert [b["cube_id"] for b in data[key]] == ["c1", "c2"]
        assert all(b["total_nodes"] == len(b["memories"]) for b in data[key])
    assert [m["id"] for m in data["text_mem"][0]["memories"]] == ["t1"]
    assert data["text_mem"][1]["memories"] == []
    assert [m["id"] for m in data["pref_mem"][1]["memories"]] == ["p1"]
    assert "1. likes tea" in data["pref_string"] and data["pref_note"] == PREF_NOTE


def test_build_response_without_preferences() -> None:
    q = SearchQuery(query="x", readable_cube_ids=("c1",), include_preference=False)
    data = build_response(q, {})
    assert data["pref_mem"] == [] and data["pref_string"] == "" and data["pref_note"] == ""
    assert data["text_mem"] == [{"cube_id": "c1", "memories": [], "total_nodes": 0}]
