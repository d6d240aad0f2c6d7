"""The embedded runtime end to end: DLQ, redelivery, replay equality, graceful shutdown."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from memory_store.control import hash_api_key
from memos.application.errors import AddFailed
from memos.application.service import MemoryService
from memos.runtime import Runtime
from schemas.errors import PermissionDenied
from schemas.events import (
    ApiKeyIssued,
    ApiKeyRevoked,
    ConversationRecorded,
    CubeCreated,
    CubeForgotten,
    CubeShared,
    Event,
    TaskStatusChanged,
    TaskSubmitted,
    UserCreated,
)
from schemas.topics import CONVERSATIONS, DLQ, MEMORIES
from streams.log.base import OutgoingRecord
from streams.pipeline.stages import any_large_add
from streams.settings import AppSettings
from tests.contract.control_contract import snapshot

CONVERSATION = [
    {"role": "user", "content": "I adopted a border collie named Pixel last spring.", "chat_time": "2025-05-02"},
    {"role": "assistant", "content": "Pixel sounds energetic! Do you go hiking together?"},
    {"role": "user", "content": "Yes, we hike in the Sintra hills every Saturday. I prefer early mornings."},
]


def _settings(home: Path) -> AppSettings:
    return AppSettings(home=home)


async def _snapshot(rt: Runtime, cube: str) -> dict[str, Any]:
    memories = await rt.graph.list_memories(cube, include_retired=True)
    first = memories[0]
    vector_hits = await rt.vector.search(cube, list(first.embedding), k=20, include_retired=True)
    keyword_hits = await rt.keyword.search(cube, "Pixel hiking Sintra", k=20)
    return {
        "memories": [m.model_dump() for m in memories],
        "relations": [r.model_dump() for r in await rt.graph.relations(cube)],
        "vector": [(h.memory_id, round(h.score, 5)) for h in vector_hits],
        "keyword": [(h.memory_id, round(h.score, 5)) for h in keyword_hits],
    }


async def _add_some(service: MemoryService, cube: str) -> None:
    await service.add("ann", [cube], CONVERSATION, mode="fast")
    await service.add("ann", [cube], CONVERSATION, mode="fast")  # duplicates become revisions
    await service.add("ann", [cube], CONVERSATION, mode="fine")
    await service.add("ann", [cube], [{"role": "user", "content": "Pixel turned two today."}], mode="fine")


async def test_poison_record_is_dead_lettered_and_processing_continues(tmp_path: Path) -> None:
    async with Runtime(_settings(tmp_path)) as rt:
        service = MemoryService(rt)
        await rt.log.append_batch([OutgoingRecord(CONVERSATIONS, b"cube_p", b"not avro at all",
                                                  (("origin", b"test"),))])
        result = await service.add("ann", ["cube_p"], CONVERSATION, mode="fast")
        assert result[0]["status"] == "completed" and result[0]["memories"]
        dead = []
        for partition in range(await rt.log.partitions(DLQ)):
            dead += await rt.log.read(DLQ, partition, 0)
        # every group reading conversations saw it: the deriver and the refiner, each in two lanes (small, large)
        assert sorted(r.header("memos.group") for r in dead) == [b"deriver", b"deriver-large", b"refiner",
                                                                 b"refiner-large"]
        for record in dead:
            assert record.value == b"not avro at all" and record.key == b"cube_p"
            assert record.header("origin") == b"test"
            assert b"Avro" in (record.header("memos.error") or b"")
            assert (record.header("memos.origin") or b"").startswith(CONVERSATIONS.encode())


async def test_an_add_whose_derivation_fails_for_good_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A processor that raises on an add (as '3000 years ago' once did) dead-letters it. Its task was left
    "waiting" and a sync add answered success with no memories; now the task fails with the reason and the sync
    add raises AddFailed naming it, while other adds go on."""
    import processors.fast as fast

    plain = fast.window_times

    def broken(window: Any) -> Any:
        if any("POISON" in item.text for item in window.items):
            raise ValueError("a bug in a processor")
        return plain(window)

    monkeypatch.setattr(fast, "window_times", broken)
    async with Runtime(_settings(tmp_path)) as rt:
        service = MemoryService(rt)
        with pytest.raises(AddFailed, match="a bug in a processor") as failed:
            await service.add("ann", ["ann"], [{"role": "user", "content": "POISON in this message"}], mode="fast")
        [task_id] = failed.value.task_ids
        info = await rt.control.task(task_id)
        assert info is not None and info.status == "failed" and "a bug in a processor" in (info.error or "")
        dead = [r for p in range(await rt.log.partitions(DLQ)) for r in await rt.log.read(DLQ, p, 0)]
        assert [r.header("memos.group") for r in dead] == [b"deriver"]
        ok = await service.add("ann", ["ann"], [{"role": "user", "content": "A message that derives well."}],
                               mode="fast")
        assert ok[0]["status"] == "completed" and ok[0]["memories"]


async def test_redelivery_of_every_memory_event_leaves_projections_unchanged(tmp_path: Path) -> None:
    async with Runtime(_settings(tmp_path)) as rt:
        await _add_some(MemoryService(rt), "cube_r")
        before = await _snapshot(rt, "cube_r")
        ends = await rt.log.end_offsets(MEMORIES)
    async with Runtime(_settings(tmp_path), run_stages=False) as rt:
        consumer = rt.log.consumer([MEMORIES], group_id="projector")
        await consumer.poll(timeout_s=0.5)
        await consumer.commit({(MEMORIES, p): 0 for p in ends})
        await consumer.aclose()
        assert all(v == 0 for v in (await rt.log.committed("projector", MEMORIES)).values())
    async with Runtime(_settings(tmp_path)) as rt:
        await rt.wait_for("projector", {(MEMORIES, p): end for p, end in ends.items() if end}, timeout_s=120)
        projector = next(r for r in rt._runners if r.stage.name == "projector")
        assert projector.processed >= sum(ends.values())
        assert await _snapshot(rt, "cube_r") == before


async def test_replay_gives_exactly_the_incrementally_built_state(tmp_path: Path) -> None:
    async with Runtime(_settings(tmp_path)) as rt:
        await _add_some(MemoryService(rt), "cube_x")
        await MemoryService(rt).add("bob", ["cube_y"], [{"role": "user", "content": "Bob likes chess."}])
        before = await _snapshot(rt, "cube_x")
        other = await rt.graph.list_memories("cube_y", include_retired=True)
        assert any(m.revision > 0 for m in await rt.graph.list_memories("cube_x", include_retired=True))
        applied = await rt.replay_cube("cube_x")
        assert applied > 0
        assert await _snapshot(rt, "cube_x") == before
        assert await rt.graph.list_memories("cube_y", include_retired=True) == other


async def test_shutdown_commits_what_was_processed(tmp_path: Path) -> None:
    async with Runtime(_settings(tmp_path)) as rt:
        await MemoryService(rt).add("ann", ["cube_s"], CONVERSATION, mode="fast")
    async with Runtime(_settings(tmp_path), run_stages=False) as rt:
        ends = await rt.log.end_offsets(CONVERSATIONS)
        committed = await rt.log.committed("deriver", CONVERSATIONS)
        assert {p: o for p, o in ends.items() if o} == {p: committed.get(p) for p, o in ends.items() if o}


def _ev(cls: type[Event], key: str, **fields: Any) -> Event:
    return cls(event_id=uuid.uuid4(), occurred_at=datetime.now(UTC), key=key, producer="test", **fields)


async def test_the_control_projection_rebuilds_from_the_log_alone(tmp_path: Path) -> None:
    """Delete the control projection, replay the registry and tasks topics: the same users, key hashes,
    cubes, shares and task states (the control stage is its only writer)."""
    secret_hash = hash_api_key("s3cret", salt=b"0123456789abcdef")
    async with Runtime(_settings(tmp_path)) as rt:
        positions = await rt.publish([
            _ev(UserCreated, "ann", user_id="ann", user_name="Ann"),
            _ev(UserCreated, "bob", user_id="bob"),
            _ev(ApiKeyIssued, "ann", key_id="k1", user_id="ann", key_hash=secret_hash, name="laptop"),
            _ev(ApiKeyIssued, "bob", key_id="k2", user_id="bob", key_hash=secret_hash),
            _ev(ApiKeyRevoked, "bob", key_id="k2", user_id="bob"),
            _ev(CubeCreated, "ann_cube", cube_id="ann_cube", owner_id="ann"),
            _ev(CubeCreated, "bob", cube_id="bob", owner_id="ann"),  # a cube named like a user
            _ev(CubeShared, "ann_cube", cube_id="ann_cube", user_id="bob", access="write"),
            _ev(TaskSubmitted, "ann_cube", task_id="t-q", user_id="ann", cube_id="ann_cube",
                label="unhandled", content="where?"),  # no handler for this label: the task fails
            _ev(ConversationRecorded, "ann_cube", user_id="ann", cube_id="ann_cube", messages=CONVERSATION,
                mode="fast", task_id="t-add"),
            _ev(TaskStatusChanged, "ann_cube", task_id="t-add", cube_id="ann_cube", status="waiting",
                label="add"),
        ])
        await rt.settle(positions)
        # forgetting the cube "bob" leaves user bob's registry records on the log
        await rt.publish([_ev(CubeForgotten, "bob", cube_id="bob")])
        await rt.forget_records("bob")
        await rt.settle([])
        before = await snapshot(rt.control)
        assert [u.user_id for u in before["users"]] == ["ann", "bob"]
        assert [c.cube_id for c in before["cubes"]] == ["ann_cube"]
        assert {t.task_id: t.status for t in before["tasks"]} == {"t-q": "failed", "t-add": "completed"}
        assert await rt.rebuild_control() > 0
        assert await snapshot(rt.control) == before
    (tmp_path / "control.db").unlink()
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"control.db{suffix}").unlink(missing_ok=True)
    async with Runtime(_settings(tmp_path)) as rt:  # a deleted projection is rebuilt from the log on start
        assert await snapshot(rt.control) == before
        assert await rt.control.key_user("k1", "s3cret") == "ann"
        assert await rt.control.key_user("k2", "s3cret") is None


async def test_forgetting_a_user_removes_its_writes_in_shared_cubes_and_nothing_else(tmp_path: Path) -> None:
    """forget --user removes what the user wrote into a cube shared with it (log and projections), keeps
    the owner's memories, and never touches the registry records of a cube named like the user."""
    async with Runtime(_settings(tmp_path)) as rt:
        service = MemoryService(rt)
        await service.create_user("ann")
        await service.create_user("bob")
        await service.create_cube("team", owner_id="ann")
        await service.create_cube("bobs_notes", owner_id="ann")
        await service.share_cube("team", owner_id="ann", user_id="bob", access="write")
        await service.add("ann", ["team"], [{"role": "user", "content": "Ann plans the Lisbon offsite in May."}],
                          mode="fast")
        await service.add("bob", ["team"], [{"role": "user", "content": "Bob keeps bees on his roof in Porto."}],
                          mode="fast")
        texts = [m["memory"] for m in await service.get_all("ann", "team")]
        assert any("Porto" in t for t in texts) and any("Lisbon" in t for t in texts)

        await service.forget_user("bob")

        remaining = await service.get_all("ann", "team", include_retired=True)
        assert remaining and all("Porto" not in m["memory"] for m in remaining)
        assert any("Lisbon" in m["memory"] for m in remaining)
        assert all(m["metadata"]["user_id"] != "bob" for m in remaining)
        for topic in (CONVERSATIONS, MEMORIES):
            for partition in range(await rt.log.partitions(topic)):
                for record in await rt.log.read(topic, partition, 0, limit=100_000):
                    assert b"Porto" not in record.value, f"bob's words are still on {topic}"
        assert not await rt.control.user_exists("bob")
        assert (await rt.control.cube("bobs_notes")).owner_id == "ann"
        assert await rt.rebuild_control() > 0  # and the log alone says the same
        assert not await rt.control.user_exists("bob")
        assert await rt.control.cube_exists("team") and await rt.control.cube_exists("bobs_notes")


async def test_in_a_shared_cube_one_users_facts_never_revise_or_supersede_anothers(tmp_path: Path) -> None:
    """Dedup and conflicts compare a new memory with its own user's only: "the user" of each is another person.
    Before, bob's "I live in Paris" retired ann's "I live in Berlin", and bob's words became a revision of ann's
    memory (so forgetting ann would have taken them)."""
    async with Runtime(_settings(tmp_path)) as rt:
        service = MemoryService(rt)
        await service.create_user("ann")
        await service.create_user("bob")
        await service.create_cube("team", owner_id="ann")
        await service.share_cube("team", owner_id="ann", user_id="bob", access="write")
        for user, text in [("ann", "I live in Berlin."), ("bob", "I live in Paris."),
                           ("ann", "I went hiking with my kids last weekend."),
                           ("bob", "I went hiking with my kids last weekend.")]:
            await service.add(user, ["team"], [{"role": "user", "content": text}], mode="fine")
        memories = await service.get_all("ann", "team", include_retired=True)
        lives = {(m["metadata"]["user_id"], m["metadata"]["status"]) for m in memories if "lives in" in m["memory"]}
        assert lives == {("ann", "activated"), ("bob", "activated")}
        hiking = [m for m in memories if "hiking" in m["memory"] and m["metadata"]["extractor"] == "rules"]
        assert sorted(m["metadata"]["user_id"] for m in hiking) == ["ann", "bob"]  # (their windows are kept too)
        assert all(m["metadata"].get("duplicate_count") is None for m in hiking)
        await service.add("bob", ["team"], [{"role": "user", "content": "I live in Lisbon now."}], mode="fine")
        after = await service.get_all("ann", "team", include_retired=True)
        status = {(m["metadata"]["user_id"], m["memory"]): m["metadata"]["status"] for m in after}
        assert status[("bob", "The user lives in Paris.")] == "retired"  # bob's own fact: superseded
        assert status[("ann", "The user lives in Berlin.")] == "activated"
        # and bob's chat prompt says whose each memory is: "The user" of ann's memories is not bob
        context = await service.chat_context("bob", ["team"], "Where do I live?", relativity=0.0)
        assert "[memory of user ann, not of this user] The user lives in Berlin." in context
        assert "The user lives in Lisbon now." in context
        # write access deletes the writer's own memories only; the owner's delete_all takes every one
        berlin = next(m["id"] for m in after if m["memory"] == "The user lives in Berlin.")
        with pytest.raises(PermissionDenied, match="written by others"):
            await service.delete("bob", "team", [berlin])
        retired = await service.delete_all("bob", "team")
        left = {m["id"]: m["metadata"]["user_id"] for m in await service.get_all("ann", "team")}
        assert retired and set(left.values()) == {"ann"} and berlin in left
        assert set(await service.delete_all("ann", "team")) == set(left)


async def test_relative_times_in_a_query_resolve_against_the_day_it_is_asked(tmp_path: Path) -> None:
    """"What did I do yesterday?" means the day before the search: the memory of that day comes first."""
    async with Runtime(_settings(tmp_path)) as rt:
        service = MemoryService(rt)
        for day, text in (("2023-05-08T18:00", "I went hiking with my kids."),
                          ("2023-05-01T18:00", "I went swimming with my kids.")):
            await service.add("ann", ["ann"], [{"role": "user", "content": text, "chat_time": day}], mode="fast")
        query = "What did I do with my kids yesterday?"
        for today, first in ((datetime(2023, 5, 9, 12, tzinfo=UTC), "hiking"),
                             (datetime(2023, 5, 2, 12, tzinfo=UTC), "swimming")):
            rt.now = lambda today=today: today  # type: ignore[method-assign]  # the day the search is asked
            data = await service.search("ann", ["ann"], query, relativity=0.0)
            found = [m["memory"] for m in data["text_mem"][0]["memories"]]
            assert first in found[0], (today, found)
            assert data["text_mem"][0]["memories"][0]["metadata"]["score_parts"]["time"] > 0


async def test_a_message_without_chat_time_is_dated_by_its_add(tmp_path: Path) -> None:
    """Most clients send no ``chat_time``: "yesterday" then means the day before the add was recorded, in
    the fine memory's text and in both modes' times, so a later search for that day finds it."""
    async with Runtime(_settings(tmp_path)) as rt:
        service = MemoryService(rt)
        rt.now = lambda: datetime(2023, 5, 9, 12, tzinfo=UTC)  # type: ignore[method-assign]  # the add's day
        said = [{"role": "user", "content": "I went hiking with my kids yesterday."}]
        fine_adds = (await service.add("ann", ["ann"], said, mode="fine"))[0]["memories"]
        [fine] = [m for m in fine_adds if m["memory"].startswith("The user")]  # beside it, its window
        [fast] = (await service.add("ann", ["ann_fast"], said, mode="fast"))[0]["memories"]
        assert fine["memory"] == "The user went hiking with the user's kids yesterday (8 May 2023)."
        rt.now = lambda: datetime(2023, 5, 20, 12, tzinfo=UTC)  # type: ignore[method-assign]
        data = await service.search("ann", ["ann", "ann_fast"], "What did I do on 8 May 2023?", relativity=0.0)
        found = {m["id"]: m["metadata"] for bucket in data["text_mem"] for m in bucket["memories"]}
        for added in (fine, fast):
            assert found[added["memory_id"]]["times"] == ["2023-05-08"], (added, found)
            assert found[added["memory_id"]]["score_parts"]["time"] > 0


async def test_forgetting_a_cube_named_like_a_typed_key_never_touches_that_tenants_records(tmp_path: Path) -> None:
    """A cube id may read "user:bob" or "cube:bobs" (the grammar allows ':'): forgetting such a cube deletes
    its own records only, never bob's user, key or cube ownership; the log alone still says so."""
    async with Runtime(_settings(tmp_path)) as rt:
        service = MemoryService(rt)
        await service.create_user("ann")
        await service.create_user("bob")
        key = await service.issue_key("bob")
        await service.create_cube("bobs", owner_id="bob")
        for name in ("user:bob", "cube:bobs"):
            await service.create_cube(name, owner_id="ann")
            await service.forget_cube(name, requested_by="ann")
        assert await rt.rebuild_control() > 0
        assert await rt.control.user_exists("bob")
        assert (await rt.control.cube("bobs")).owner_id == "bob"
        key_id, secret = key.removeprefix("mk_").split("_", 1)
        assert await rt.control.key_user(key_id, secret) == "bob"
        assert not await rt.control.cube_exists("user:bob") and not await rt.control.cube_exists("cube:bobs")


async def test_a_sync_add_tells_settle_its_lane_and_the_log_agrees(tmp_path: Path) -> None:
    settings = AppSettings(home=tmp_path, derivation={"large_add_chars": 300})
    async with Runtime(settings) as rt:
        seen: list[tuple[list[Any], bool | None]] = []
        settle = rt.settle

        async def recording(positions: Any, **kwargs: Any) -> None:
            seen.append((list(positions), kwargs.get("large")))
            await settle(positions, **kwargs)

        rt.settle = recording  # type: ignore[method-assign]
        service = MemoryService(rt)
        small = await service.add("ann", ["cube_l"], [{"role": "user", "content": "Pixel turned two today."}])
        large = await service.add("ann", ["cube_l"], CONVERSATION * 3)  # over 300 characters of messages
        note = base64.b64encode(b"Pixel sleeps under the stairs.").decode()
        filed = await service.add("ann", ["cube_l"], [{"role": "user", "content": [  # short, but it carries a file
            {"type": "text", "text": "My notes:"}, {"type": "file", "file": {"filename": "n.txt", "file_data": note}}]}])
        assert [flag for _, flag in seen] == [False, True, True]
        assert [await any_large_add(rt.log, positions, 300) for positions, _ in seen] == [False, True, True]  # log
        for result in (small, large, filed):  # settled in its lane: derived and searchable when the add returns
            assert result[0]["status"] == "completed" and result[0]["memories"]
