"""The small lane's split of a batch: each user with HEAVY_BYTES of adds in it apart, the others together first."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from schemas.envelope import Position, Record
from schemas.events import ConversationRecorded
from streams.pipeline.runner import event_record
from streams.pipeline.stages import HEAVY_BYTES, DerivationStage


def _add(user: str, cube: str, chars: int, offset: int) -> Record:
    event = ConversationRecorded(event_id=uuid.uuid4(), occurred_at=datetime.now(UTC), key=cube, user_id=user,
                                 cube_id=cube, messages=[{"role": "user", "content": "x" * chars}], task_id=f"t{offset}")
    out = event_record(event)
    return Record(Position(out.topic, 0, offset), out.key, out.value, out.headers)


def _stage(lane: str = "small") -> DerivationStage:
    deriver: Any = None  # split reads records only
    return DerivationStage(deriver, lane=lane, large_chars=64_000, overlap=4)


def _owners(parts: list[tuple[str, list[Record]]]) -> list[tuple[str, list[int]]]:
    return [(owner, [r.position.offset for r in records]) for owner, records in parts]


def test_a_heavy_user_gets_a_part_of_their_own_after_the_light_ones() -> None:
    big = HEAVY_BYTES // 2 + 100  # two of these make a user heavy
    records = [_add("mallory", "m1", big, 0), _add("alice", "a", 20, 1), _add("mallory", "m2", big, 2),
               _add("bob", "b", 20, 3), _add("trudy", "t", 2 * big, 4)]
    parts = _stage().split(records)
    assert _owners(parts) in ([("", [1, 3]), ("mallory", [0, 2]), ("trudy", [4])],
                              [("", [1, 3]), ("trudy", [4]), ("mallory", [0, 2])])
    assert parts[0][0] == ""  # the light ones first


def test_one_part_when_no_one_is_heavy_when_parts_would_share_a_cube_and_in_the_large_lane() -> None:
    light = [_add("alice", "a", 20, 0), _add("bob", "b", 20, 1)]
    assert _owners(_stage().split(light)) == [("", [0, 1])]
    shared = [_add("mallory", "shared", HEAVY_BYTES, 0), _add("alice", "shared", 20, 1)]
    assert _owners(_stage().split(shared)) == [("", [0, 1])]  # the cube's adds stay in log order
    alone = [_add("mallory", "m1", HEAVY_BYTES, 0), _add("mallory", "m2", 20, 1)]
    assert _owners(_stage().split(alone)) == [("mallory", [0, 1])]
    assert _owners(_stage("large").split(shared)) == [("", [0, 1])]


def test_an_undecodable_record_goes_with_the_light_ones() -> None:
    poison = Record(Position("memos.conversations.v1", 0, 1), b"p", b"\x00not avro", ())
    records = [_add("mallory", "m1", HEAVY_BYTES, 0), poison]
    assert _owners(_stage().split(records)) == [("", [1]), ("mallory", [0])]
