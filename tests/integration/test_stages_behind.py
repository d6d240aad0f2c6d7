"""A stage behind wherever it runs is seen: lag in seconds (the oldest uncommitted record's wait) in status and
/metrics, and /healthz names it (200: the server is fine) once that wait passes ``server.behind_after_s``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from starlette.requests import Request

from memos.application.behind import BehindWatch
from memos.application.operations import Lag
from memos.application.service import MemoryService
from memos.application.shared import shared
from memos.runtime import Runtime
from memos.server.metrics import Metrics
from memos.server.routes_v1 import healthz
from schemas.topics import CONVERSATIONS, MEMORIES, REGISTRY, TASKS
from streams.log.base import OutgoingRecord
from streams.settings import AppSettings, LogSettings
from tests.engines import engine_url
from tests.support.log_reading import commit_as


async def _waiting(rt: Runtime, group: str, *, records: int, committed: int) -> tuple[int, int]:
    """``records`` appended under one key; ``group`` committed up to ``committed``: (partition, the first
    waiting record's append time in ms)."""
    positions = await rt.log.append_batch(
        [OutgoingRecord(CONVERSATIONS, b"cube_w", f"record {n}".encode(), ()) for n in range(records)])
    partition = positions[0].partition
    consumer = rt.log.consumer([CONVERSATIONS], group_id=group)
    await consumer.poll(timeout_s=0.5)
    await consumer.commit({(CONVERSATIONS, partition): positions[committed].offset})
    await consumer.aclose()
    first = await rt.log.read(CONVERSATIONS, partition, positions[committed].offset, limit=1)
    return partition, first[0].timestamp_ms


async def _caught_up(rt: Runtime, groups: list[str]) -> None:
    """Each of ``groups`` commits the end of the conversations topic."""
    for group in groups:
        await commit_as(rt, group, CONVERSATIONS, await rt.log.end_offsets(CONVERSATIONS))


async def test_lag_tells_how_long_the_oldest_uncommitted_record_has_waited(tmp_path: Path) -> None:
    async with Runtime(AppSettings(home=tmp_path), run_stages=False) as rt:
        service = MemoryService(rt)
        _, appended_ms = await _waiting(rt, "deriver", records=3, committed=1)
        lag = await service.lag_of(["deriver", "projector"], ages=True, now_ms=appended_ms + 5_000)
        # the projector never committed, and nothing is on the topics it reads; conversations are not its topic
        assert lag == {("deriver", CONVERSATIONS): Lag(records=2, waited_s=5.0),
                       ("projector", MEMORIES): Lag(records=0), ("projector", REGISTRY): Lag(records=0)}
        assert await service.lag_of(["deriver"]) == {("deriver", CONVERSATIONS): Lag(records=2)}
        assert await service.processor_lag(["deriver"]) == {("deriver", CONVERSATIONS): 2}
        consumer = rt.log.consumer([CONVERSATIONS], group_id="deriver")
        await consumer.poll(timeout_s=0.5)
        await consumer.commit({(CONVERSATIONS, p): e for p, e in (await rt.log.end_offsets(CONVERSATIONS)).items()})
        await consumer.aclose()
        caught_up = await service.lag_of(["deriver"], ages=True, now_ms=appended_ms + 5_000)
        assert caught_up == {("deriver", CONVERSATIONS): Lag(records=0)}


@pytest.mark.engine("kafka")
async def test_on_kafka_the_wait_is_read_off_the_broker(tmp_path: Path, unique: str) -> None:
    prefix = f"behind-{unique}-"  # the broker is shared: groups of this test's own
    settings = AppSettings(home=tmp_path, log=LogSettings(url=engine_url("kafka"), group_prefix=prefix))
    async with Runtime(settings, run_stages=False) as rt:
        service = MemoryService(rt)
        positions = await rt.log.append_batch(
            [OutgoingRecord(CONVERSATIONS, f"cube-{unique}".encode(), f"record {n}".encode(), ()) for n in range(2)])
        mine = positions[0]
        offsets = {**await rt.log.end_offsets(CONVERSATIONS), mine.partition: mine.offset}  # only mine wait
        await commit_as(rt, f"{prefix}deriver", CONVERSATIONS, offsets)
        [first] = await rt.log.read(CONVERSATIONS, mine.partition, mine.offset, limit=1)
        on_memories = sum((await rt.log.end_offsets(MEMORIES)).values())
        lag = await service.lag_of(["deriver", "projector"], ages=True, now_ms=first.timestamp_ms + 7_000)
        assert lag[("deriver", CONVERSATIONS)].waited_s == 7.0
        assert lag[("deriver", CONVERSATIONS)].records >= 2  # a transaction's marker takes an offset too
        assert ("projector", CONVERSATIONS) not in lag  # not a topic it reads
        assert lag[("projector", MEMORIES)].records >= on_memories  # it never committed: everything there waits


async def test_healthz_status_and_metrics_name_a_stage_that_is_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = FastAPI()
    async with Runtime(AppSettings(home=tmp_path), run_stages=False) as rt:  # every stage runs "elsewhere"
        service = MemoryService(rt)
        app.state.runtime, app.state.service = rt, service
        watch = shared(rt, BehindWatch, lambda: BehindWatch(read_every_s=0))
        await _waiting(rt, "deriver", records=2, committed=0)
        await _waiting(rt, "kv-warmer", records=1, committed=0)  # KV caches are off: an old group, not a stage
        await _caught_up(rt, ["deriver-large", "refiner", "refiner-large"])  # the other readers of conversations

        async def health() -> tuple[int, dict[str, object]]:
            service.stages_behind()  # a read starts; the answer is the last read's
            assert watch._reading is not None
            await watch._reading
            response = await healthz(Request({"type": "http", "app": app}))
            return response.status_code, json.loads(bytes(response.body))

        code, body = await health()
        assert code == 200 and body["data"]["status"] == "ok" and body["data"]["behind"] == []
        later = datetime.now(UTC) + timedelta(hours=1)  # past server.behind_after_s (1,800 s)
        monkeypatch.setattr(rt, "now", lambda: later)
        code, body = await health()
        assert code == 200 and body["data"]["status"] == "behind", body
        behind = body["data"]["behind"]
        assert len(behind) == 1 and behind[0].startswith(f"deriver on {CONVERSATIONS}: 3 records waiting"), behind
        assert body["message"] == f"behind: {behind[0]}"

        status = await service.system_status()
        assert status.behind == behind
        assert status.lag["deriver"][CONVERSATIONS] == 3 and status.lag["kv-warmer"][CONVERSATIONS] == 1
        assert 3_590 < status.waited["deriver"][CONVERSATIONS] < 3_610
        assert status.as_dict()["waited_s"]["kv-warmer"][CONVERSATIONS] == status.waited["kv-warmer"][CONVERSATIONS]

        text = (await Metrics().render(service)).decode()
        line = next(s for s in text.splitlines()
                    if s.startswith(f'memos_processor_lag_seconds{{group="deriver",topic="{CONVERSATIONS}"}}'))
        assert 3_590 < float(line.split()[-1]) < 3_610

        off = rt.settings.model_copy(update={"server": rt.settings.server.model_copy(update={"behind_after_s": 0})})
        monkeypatch.setattr(rt, "settings", off)
        assert service.stages_behind() == [] and (await service.system_status()).behind == []


async def test_a_stage_that_never_committed_waits_on_everything_it_reads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with Runtime(AppSettings(home=tmp_path), run_stages=False) as rt:  # deployed, but dead from its start
        service = MemoryService(rt)
        _, appended_ms = await _waiting(rt, "deriver", records=2, committed=1)  # the second appended at appended_ms
        await _caught_up(rt, ["deriver", "deriver-large", "refiner-large"])  # the refiner never committed
        lag = await service.lag_of(["refiner", "scheduler", "kv-warmer"], ages=True, now_ms=appended_ms + 9_000)
        refiner = lag[("refiner", CONVERSATIONS)]
        assert refiner.records == 2 and refiner.waited_s is not None and refiner.waited_s >= 9.0  # from the first
        assert lag[("scheduler", TASKS)] == Lag(records=0)  # it reads the tasks topic: none there yet
        assert not [key for key in lag if key[0] == "kv-warmer"]  # KV caches are off: not a stage of this one
        later = datetime.now(UTC) + timedelta(hours=1)
        monkeypatch.setattr(rt, "now", lambda: later)
        status = await service.system_status()
        assert [line.split(":")[0] for line in status.behind] == [f"refiner on {CONVERSATIONS}"], status.behind
