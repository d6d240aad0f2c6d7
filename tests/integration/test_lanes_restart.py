"""Order per cube across derivation lanes survives a restart: a small add still waits for its cube's large add."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from memos.runtime import Runtime
from schemas.envelope import Envelope
from schemas.events import ConversationRecorded, MemoryAdded
from schemas.topics import CONVERSATIONS
from streams.log.base import TopicPartition
from streams.pipeline.runner import event_record
from streams.pipeline.stages import DerivationStage, LargeAddsBehind
from streams.settings import AppSettings

LARGE_CHARS = 300
BIG = [{"role": "user", "content": f"Long note {i}: we hiked the Sintra hills and mapped every trail."} for i in range(8)]
SMALL = [{"role": "user", "content": "Pixel turned two today."}]


def _add(cube: str, messages: list[dict[str, str]]) -> ConversationRecorded:
    return ConversationRecorded(event_id=uuid.uuid4(), occurred_at=datetime.now(UTC), key=cube, user_id="ann",
                                cube_id=cube, messages=messages, task_id=f"t-{uuid.uuid4()}")


class _Waits:
    """The stage's ``wait_for``: records what it was asked to wait for (the lane itself is not running here)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[TopicPartition, int]]] = []

    async def __call__(self, lane: str, targets: Mapping[TopicPartition, int]) -> None:
        self.calls.append((lane, dict(targets)))


async def test_a_restarted_small_lane_waits_for_the_large_add_it_skipped_before(tmp_path: Path) -> None:
    settings = AppSettings(home=tmp_path, derivation={"large_add_chars": LARGE_CHARS})
    async with Runtime(settings, run_stages=False) as rt:
        big, other_cube_big, small = _add("cube_a", BIG), _add("cube_b", BIG), _add("cube_a", SMALL)
        positions = await rt.log.append_batch([event_record(e) for e in (big, other_cube_big, small)])
        tp = (CONVERSATIONS, positions[0].partition)
        assert positions[2].partition == tp[1]  # one cube, one partition: the order in question

        def restarted(waits: _Waits) -> DerivationStage:
            """A small lane in a new process: it skipped the large adds before, and remembers nothing."""
            return DerivationStage(rt.deriver, lane="small", large_chars=LARGE_CHARS, wait_for=waits,
                                   pending_large=LargeAddsBehind(rt.log, rt.group, LARGE_CHARS))

        waits = _Waits()
        out = await restarted(waits).handle([Envelope(positions[2], small)])
        assert waits.calls == [("deriver-large", {tp: positions[0].offset + 1})]  # cube_a's large add, from the log
        assert [e.memory for e in out if isinstance(e, MemoryAdded)]  # then derived

        consumer = rt.log.consumer([CONVERSATIONS], group_id=rt.group("deriver-large"))
        async with consumer:
            assert await consumer.poll(max_records=1)  # joins the group: its partitions are assigned
            await consumer.commit({tp: positions[0].offset + 1})  # the large lane has passed cube_a's large add
        waits = _Waits()
        await restarted(waits).handle([Envelope(positions[2], small)])
        assert waits.calls == []

