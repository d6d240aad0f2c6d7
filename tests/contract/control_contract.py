"""The ControlStore contract: every adapter's test class subclasses ControlStoreContract.

A subclass provides the fixture ``control_store``: a started, empty store isolated per test (its own
file or namespace). Everything is read back through port methods only, so the suite runs unchanged on
every engine.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from memory_store.control import ControlStore, hash_api_key
from schemas.envelope import Position
from schemas.errors import NotFound
from schemas.events import (
    ApiKeyIssued,
    ApiKeyRevoked,
    CubeCreated,
    CubeForgotten,
    CubeShared,
    Event,
    TaskStatusChanged,
    TaskSubmitted,
    UserCreated,
    UserForgotten,
)
from schemas.topics import REGISTRY, TASKS

__all__ = ["ControlStoreContract", "Feed", "snapshot"]

T0 = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)


class Feed:
    """Builds registry and task events with increasing offsets per (topic, partition 0)."""

    def __init__(self) -> None:
        self.offsets = {REGISTRY: -1, TASKS: -1}
        self.minute = 0

    def at(self, event_type: type[Event], key: str, **fields: Any) -> tuple[Event, Position]:
        self.minute += 1
        event = event_type(event_id=uuid.uuid4(), occurred_at=T0 + timedelta(minutes=self.minute), key=key,
                           producer="test", **fields)
        self.offsets[event.topic] += 1
        return event, Position(event.topic, 0, self.offsets[event.topic])


async def snapshot(store: ControlStore) -> dict[str, Any]:
    """Everything the control store holds, through the port, for equality checks."""
    users = await store.users()
    return {
        "users": users,
        "keys": {u.user_id: await store.keys_of(u.user_id) for u in users},
        "cubes": [await store.cube(c) for c in await store.all_cubes()],
        "shares": await store.shares(),
        "cubes_of": {u.user_id: await store.cubes_of(u.user_id) for u in users},
        "tasks": await store.tasks(),
        "counts": await store.task_counts(),
    }


def _key(feed: Feed, user_id: str, key_id: str, secret: str) -> tuple[Event, Position]:
    return feed.at(ApiKeyIssued, f"user:{user_id}", key_id=key_id, user_id=user_id,
                   key_hash=hash_api_key(secret, salt=secrets.token_bytes(16)), name="laptop")


def _registry(feed: Feed) -> list[tuple[Event, Position]]:
    return [
        feed.at(UserCreated, "user:ann", user_id="ann", user_name="Ann"),
        feed.at(UserCreated, "user:bob", user_id="bob", role="admin"),
        feed.at(CubeCreated, "cube:ann_cube", cube_id="ann_cube", owner_id="ann", cube_name="Ann's",
                config={"k": 1}),
        feed.at(CubeCreated, "cube:bob_cube", cube_id="bob_cube", owner_id="bob"),
        feed.at(CubeShared, "cube:ann_cube", cube_id="ann_cube", user_id="bob", access="write", granted_by="ann"),
    ]


class ControlStoreContract:
    """Behaviour every ControlStore adapter must show."""

    async def _apply(self, store: ControlStore, batch: Sequence[tuple[Event, Position]]) -> int:
        return await store.apply(list(batch))

    async def test_registry_reads_back(self, control_store: ControlStore) -> None:
        feed = Feed()
        assert await self._apply(control_store, _registry(feed)) == 5
        assert [u.user_id for u in await control_store.users()] == ["ann", "bob"]
        ann = await control_store.user("ann")
        assert ann is not None and ann.user_name == "Ann" and ann.role == "user"
        assert (await control_store.user("bob")).role == "admin"  # type: ignore[union-attr]
        assert await control_store.user("nobody") is None
        cube = await control_store.cube("ann_cube")
        assert (cube.owner_id, cube.cube_name, cube.config) == ("ann", "Ann's", {"k": 1})
        assert await control_store.all_cubes() == ["ann_cube", "bob_cube"]
        assert await control_store.access("ann", "ann_cube") == "owner"
        assert await control_store.access("bob", "ann_cube") == "write"
        assert await control_store.access("ann", "bob_cube") == "none"
        with pytest.raises(NotFound):
            await control_store.access("ann", "no_such_cube")
        assert not await control_store.cube_exists("no_such_cube")
        assert [(c.cube_id, c.access) for c in await control_store.cubes_of("bob")] == [
            ("ann_cube", "write"), ("bob_cube", "owner")]
        assert await control_store.checkpoint(REGISTRY, 0) == 4
        assert await control_store.checkpoint(TASKS, 0) is None

    async def test_positions_at_or_below_the_checkpoint_are_skipped(self, control_store: ControlStore) -> None:
        feed = Feed()
        batch = _registry(feed)
        await self._apply(control_store, batch)
        before = await snapshot(control_store)
        assert await self._apply(control_store, batch) == 0
        # an older record re-delivered with a changed payload is still skipped: the position decides
        stale = Feed()
        stale.offsets[REGISTRY] = 1
        assert await self._apply(control_store, [stale.at(UserForgotten, "user:ann", user_id="ann")]) == 0
        assert await snapshot(control_store) == before

    async def test_share_levels_and_withdrawal(self, control_store: ControlStore) -> None:
        feed = Feed()
        await self._apply(control_store, _registry(feed))
        await self._apply(control_store, [
            feed.at(CubeShared, "cube:ann_cube", cube_id="ann_cube", user_id="bob", access="read"),
        ])
        assert await control_store.access("bob", "ann_cube") == "read"
        await self._apply(control_store, [
            feed.at(CubeShared, "cube:ann_cube", cube_id="ann_cube", user_id="bob", access="none"),
        ])
        assert await control_store.access("bob", "ann_cube") == "none"
        assert await control_store.shares("ann_cube") == []
        assert [c.cube_id for c in await control_store.cubes_of("bob")] == ["bob_cube"]

    async def test_keys_are_hashes_checked_in_constant_time_and_revocable(self, control_store: ControlStore) -> None:
        feed = Feed()
        await self._apply(control_store, _registry(feed) + [_key(feed, "ann", "k1", "s3cret")])
        assert await control_store.key_user("k1", "s3cret") == "ann"
        assert await control_store.key_user("k1", "wrong") is None
        assert await control_store.key_user("nope", "s3cret") is None
        [info] = await control_store.keys_of("ann")
        assert info.key_id == "k1" and not info.revoked and "s3cret" not in info.key_hash
        await self._apply(control_store, [feed.at(ApiKeyRevoked, "user:ann", key_id="k1", user_id="ann")])
        assert await control_store.key_user("k1", "s3cret") is None
        assert (await control_store.keys_of("ann"))[0].revoked

    async def test_forgetting_a_cube_keeps_the_user_of_the_same_id(self, control_store: ControlStore) -> None:
        feed = Feed()
        await self._apply(control_store, [
            feed.at(UserCreated, "user:bob", user_id="bob"),
            _key(feed, "bob", "kb", "pw"),
            feed.at(UserCreated, "user:eve", user_id="eve"),
            feed.at(CubeCreated, "cube:bob", cube_id="bob", owner_id="eve"),
            feed.at(CubeCreated, "cube:bob_home", cube_id="bob_home", owner_id="bob"),
            feed.at(CubeShared, "cube:bob_home", cube_id="bob_home", user_id="eve", access="read"),
            feed.at(TaskSubmitted, "bob", task_id="t-eve", user_id="eve", cube_id="bob", label="query"),
            feed.at(TaskSubmitted, "bob_home", task_id="t-bob", user_id="bob", cube_id="bob_home",
                    label="query"),
        ])
        await self._apply(control_store, [feed.at(CubeForgotten, "cube:bob", cube_id="bob")])
        assert not await control_store.cube_exists("bob")
        assert await control_store.task("t-eve") is None
        assert await control_store.user_exists("bob")
        assert await control_store.key_user("kb", "pw") == "bob"
        assert await control_store.access("bob", "bob_home") == "owner"
        assert await control_store.task("t-bob") is not None
        await self._apply(control_store, [feed.at(UserForgotten, "user:eve", user_id="eve")])
        assert await control_store.shares("bob_home") == []
        assert await control_store.user_exists("bob")

    async def test_forgetting_a_user_drops_owned_cubes_shares_keys_and_tasks(
            self, control_store: ControlStore) -> None:
        feed = Feed()
        await self._apply(control_store, _registry(feed) + [
            _key(feed, "bob", "kb", "pw"),
            feed.at(TaskSubmitted, "bob_cube", task_id="t1", user_id="bob", cube_id="bob_cube", label="query"),
            feed.at(TaskSubmitted, "ann_cube", task_id="t2", user_id="bob", cube_id="ann_cube", label="query"),
            feed.at(TaskSubmitted, "ann_cube", task_id="t3", user_id="ann", cube_id="ann_cube", label="query"),
        ])
        await self._apply(control_store, [feed.at(UserForgotten, "user:bob", user_id="bob")])
        assert not await control_store.user_exists("bob")
        assert await control_store.all_cubes() == ["ann_cube"]
        assert await control_store.shares() == []
        assert await control_store.keys_of("bob") == []
        assert await control_store.key_user("kb", "pw") is None
        assert [t.task_id for t in await control_store.tasks()] == ["t3"]

    async def test_task_status_never_leaves_a_finished_state(self, control_store: ControlStore) -> None:
        feed = Feed()
        await self._apply(control_store, [
            feed.at(TaskSubmitted, "c1", task_id="t1", user_id="ann", cube_id="c1", label="mem_update",
                    content="warm it", business_task_id="b1"),
        ])
        task = await control_store.task("t1")
        assert task is not None and (task.status, task.user_id, task.content) == ("waiting", "ann", "warm it")
        await self._apply(control_store, [
            feed.at(TaskStatusChanged, "c1", task_id="t1", cube_id="c1", status="completed", label="mem_update",
                    business_task_id="b1", result={"n": 2}),
            feed.at(TaskStatusChanged, "c1", task_id="t1", cube_id="c1", status="in_progress",
                    label="mem_update", business_task_id="b1"),
        ])
        task = await control_store.task("t1")
        assert task is not None and task.status == "completed" and task.result == {"n": 2}
        assert task.user_id == "ann" and task.content == "warm it"
        assert await control_store.task_counts() == {"completed": 1}

    async def test_status_before_submission_keeps_both(self, control_store: ControlStore) -> None:
        feed = Feed()
        await self._apply(control_store, [
            feed.at(TaskStatusChanged, "c1", task_id="t9", cube_id="c1", status="waiting", label="add",
                    business_task_id="b9"),
            feed.at(TaskSubmitted, "c1", task_id="t9", user_id="ann", cube_id="c1", label="add", content="hi"),
        ])
        task = await control_store.task("t9")
        assert task is not None and (task.user_id, task.status, task.business_task_id) == ("ann", "waiting", "b9")

    async def test_task_filters_and_order(self, control_store: ControlStore) -> None:
        feed = Feed()
        batch = [feed.at(TaskSubmitted, cube, task_id=tid, user_id=user, cube_id=cube, label="query",
                         business_task_id=biz)
                 for tid, user, cube, biz in (("a", "ann", "c1", "b1"), ("b", "bob", "c1", "b1"),
                                              ("c", "ann", "c2", None), ("d", "ann", "c1", "b2"))]
        await self._apply(control_store, batch)
        assert [t.task_id for t in await control_store.tasks()] == ["d", "c", "b", "a"]
        assert [t.task_id for t in await control_store.tasks(cube_id="c1")] == ["d", "b", "a"]
        assert [t.task_id for t in await control_store.tasks(user_id="ann", cube_id="c1")] == ["d", "a"]
        assert [t.task_id for t in await control_store.tasks(business_task_id="b1")] == ["b", "a"]
        assert [t.task_id for t in await control_store.tasks(cube_ids=["c2", "c1", "c9"])] == ["d", "c", "b", "a"]
        assert [t.task_id for t in await control_store.tasks(cube_ids=["c2"], user_id="ann")] == ["c"]
        assert [t.task_id for t in await control_store.tasks(cube_ids=["c1"], business_task_id="b1")] == ["b", "a"]
        assert await control_store.tasks(cube_ids=[]) == []
        assert [t.task_id for t in await control_store.tasks(cube_ids=["c1", "c2"], per_cube=1)] == ["d", "c"]
        assert [t.task_id for t in await control_store.tasks(cube_ids=["c1", "c2"], per_cube=2, limit=2)] == ["d", "c"]
        assert [t.task_id for t in await control_store.tasks(limit=2)] == ["d", "c"]
        assert await control_store.task_counts() == {"waiting": 4}

    async def test_reset_empties_the_store(self, control_store: ControlStore) -> None:
        feed = Feed()
        await self._apply(control_store, _registry(feed) + [
            feed.at(TaskSubmitted, "c1", task_id="t1", user_id="ann", cube_id="c1", label="query")])
        await control_store.reset()
        assert await control_store.users() == [] and await control_store.all_cubes() == []
        assert await control_store.tasks() == [] and await control_store.shares() == []
        assert await control_store.checkpoint(REGISTRY, 0) is None
        assert await control_store.checkpoint(TASKS, 0) is None
        assert await self._apply(control_store, _registry(Feed())) == 5
