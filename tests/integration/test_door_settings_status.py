"""The ``door`` settings change what the application layer accepts (YAML and MEMOS_DOOR__*), and the
status use case (``memos status``) reports end offsets, lag per stage, backlog, tasks and cubes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from memos.application.errors import BacklogFull
from memos.application.limits import DoorLimits
from memos.application.service import MemoryService
from memos.application.status import SystemStatus
from memos.runtime import Runtime
from schemas.errors import ConfigError, PayloadTooLarge
from schemas.topics import ALL_TOPICS, CONVERSATIONS, MEMORIES, TASKS
from streams.settings import AppSettings, load_settings
from tests.integration.test_http_api import client_for, live_server, make_user

ROOT = Path(__file__).resolve().parents[2]
TEA = [{"role": "user", "content": "I drink green tea every afternoon."}]


def test_door_settings_default_to_the_built_in_limits(tmp_path: Path) -> None:
    rt = Runtime(AppSettings(home=tmp_path))
    assert rt.door_limits == DoorLimits()
    assert MemoryService(rt).limits == DoorLimits()


def test_door_settings_from_yaml_and_env_reach_the_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "door.yaml"
    config.write_text("door:\n  max_backlog: 7\n  sync_timeout_s: 12.5\n  max_add_record_bytes: 4096\n")
    monkeypatch.setenv("MEMOS_DOOR__BACKLOG_RETRY_AFTER_S", "9")
    monkeypatch.setenv("MEMOS_DOOR__MAX_BACKLOG", "3")  # env wins over the file
    settings = load_settings(config, home=tmp_path)
    limits = MemoryService(Runtime(settings)).limits
    assert limits == DoorLimits(max_add_record_bytes=4096, max_backlog=3, backlog_retry_after_s=9.0,
                                sync_timeout_s=12.5)


@pytest.mark.parametrize("line, field", [("max_backlog: -1", "max_backlog"),
                                         ("sync_timeout_s: 0", "sync_timeout_s"),
                                         ("max_add_record_bytes: 10", "max_add_record_bytes"),
                                         ("max_backlg: 5", "max_backlg")])
def test_bad_door_settings_are_a_config_error_naming_the_field(tmp_path: Path, line: str, field: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(f"door:\n  {line}\n")
    with pytest.raises(ConfigError, match=field):
        load_settings(config)


async def test_configured_record_limit_refuses_a_larger_add(tmp_path: Path) -> None:
    settings = AppSettings(home=tmp_path, door={"max_add_record_bytes": 2048})
    async with Runtime(settings) as rt:
        service = MemoryService(rt)
        with pytest.raises(PayloadTooLarge, match="limit is 2048 bytes"):
            await service.add("ann", ["cube_big"], [{"role": "user", "content": "x" * 3000}], mode="fast")
        assert (await service.system_status()).topics[CONVERSATIONS] == dict.fromkeys(range(4), 0)
        small = await service.add("ann", ["cube_big"], TEA, mode="fast")
        assert small[0]["status"] == "completed"


async def test_configured_backlog_refuses_a_sync_add_once_reached(tmp_path: Path) -> None:
    """No stages here: async adds stay on the log, so the backlog grows until a sync add is refused."""
    settings = AppSettings(home=tmp_path, door={"max_backlog": 2, "backlog_retry_after_s": 4})
    async with Runtime(settings, run_stages=False) as rt:
        service = MemoryService(rt)
        for n in range(2):
            await service.add("ann", [f"cube_{n}"], TEA, mode="fast", async_mode="async")
        status = await service.system_status()
        assert status.backlog == 2 and sum(status.topics[CONVERSATIONS].values()) == 2
        assert status.lag["deriver"][CONVERSATIONS] == 2  # never committed (no stage ran): both records wait
        assert set(status.tasks) == {"waiting"} and status.cubes == 2
        with pytest.raises(BacklogFull, match=r"2 conversation records .* \(limit 2\)") as refused:
            await service.add("ann", ["cube_0"], TEA, mode="fast")
        assert refused.value.retry_after == 4


async def test_concurrent_backlog_checks_share_one_reading_and_a_later_one_reads_again(tmp_path: Path) -> None:
    async with Runtime(AppSettings(home=tmp_path), run_stages=False) as rt:
        service = MemoryService(rt)
        await service.add("ann", ["cube_0"], TEA, mode="fast", async_mode="async")
        reads = 0
        end_offsets = rt.log.end_offsets

        async def counted(topic: str) -> dict[int, int]:
            nonlocal reads
            reads += topic == CONVERSATIONS
            return await end_offsets(topic)

        rt.log.end_offsets = counted  # type: ignore[method-assign]
        assert await asyncio.gather(*(rt.derivation_backlog() for _ in range(50))) == [1] * 50
        assert reads == 1  # one reading for the burst, not one per caller
        await service.add("ann", ["cube_1"], TEA, mode="fast", async_mode="async")
        assert await rt.derivation_backlog() == 2  # the reading is not kept: the next caller sees the new add
        assert reads == 2


async def test_concurrent_settles_share_one_reading_of_the_ends_and_a_later_one_reads_again(tmp_path: Path) -> None:
    """A derivation batch completing many sync adds reads the derived topics' ends once; a settle arriving after
    a reading began reads them again (what it waits for may be past that reading)."""
    async with Runtime(AppSettings(home=tmp_path)) as rt:
        await MemoryService(rt).add("ann", ["cube_0"], TEA, mode="fast")
        reads: Counter[str] = Counter()
        end_offsets = rt.log.end_offsets
        second_round, third_round, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def counted(topic: str) -> dict[int, int]:
            reads[topic] += 1
            if topic == MEMORIES and reads[topic] == 2:  # the first settle's reading, held open
                second_round.set()
                await release.wait()
            if topic == MEMORIES and reads[topic] == 3:
                third_round.set()
            return await end_offsets(topic)

        rt.log.end_offsets = counted  # type: ignore[method-assign]
        await asyncio.gather(*(rt.settle([]) for _ in range(50)))
        assert reads[MEMORIES] == reads[TASKS] == 1  # one reading for the burst, not one per caller
        first = asyncio.create_task(rt.settle([]))
        await second_round.wait()
        later = asyncio.create_task(rt.settle([]))  # arrives while the first reading is under way
        await third_round.wait()  # so it starts its own
        release.set()
        await asyncio.gather(first, later)
        assert reads[MEMORIES] == 3


def test_backlog_setting_from_env_is_429_over_http(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMOS_DOOR__MAX_BACKLOG", "0")
    monkeypatch.setenv("MEMOS_DOOR__BACKLOG_RETRY_AFTER_S", "11")
    with live_server(tmp_path) as server:
        ann = make_user(server, "ann")
        with client_for(server, ann) as c:
            body = {"messages": "I like green tea.", "writable_cube_ids": ["ann_cube"], "mode": "fast"}
            refused = c.post("/product/add", json={**body, "async_mode": "sync"})
            accepted = c.post("/product/add", json={**body, "async_mode": "async"})
    assert refused.status_code == 429 and refused.headers["retry-after"] == "11", refused.text
    assert "limit 0" in refused.json()["message"]
    assert accepted.status_code == 200, accepted.text


async def test_status_reports_offsets_lag_per_stage_backlog_tasks_and_cubes(tmp_path: Path) -> None:
    """Consumer groups carry ``log.group_prefix``; status names stages without it."""
    settings = AppSettings(home=tmp_path, log={"group_prefix": "dep1-"})
    async with Runtime(settings) as rt:
        service = MemoryService(rt)
        await service.add("ann", ["cube_a"], TEA, mode="fast")
        await service.add("bob", ["cube_b"], [{"role": "user", "content": "I run on Sundays."}], mode="fast")
        status = await service.system_status()
    assert isinstance(status, SystemStatus)
    assert status.log == settings.log_url()
    assert list(status.topics) == list(ALL_TOPICS)
    assert sum(status.topics[CONVERSATIONS].values()) == 2
    assert sum(status.topics[MEMORIES].values()) >= 2
    assert status.lag["deriver"][CONVERSATIONS] == 0 and status.lag["projector"][MEMORIES] == 0
    assert not any(group.startswith("dep1-") for group in status.lag)
    assert status.backlog == 0
    assert status.tasks == {"completed": 2} and status.cubes == 2
    as_json = status.as_dict()
    assert json.loads(json.dumps(as_json)) == as_json
    assert as_json["topics"][CONVERSATIONS] == {str(p): o for p, o in status.topics[CONVERSATIONS].items()}


def test_memos_status_prints_the_use_case_result(tmp_path: Path) -> None:
    env = {**os.environ, "MEMOS_HOME": str(tmp_path), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    publish = tmp_path / "in.jsonl"
    publish.write_text(json.dumps({"user_id": "ann", "cube_id": "cube_a", "mode": "fast",
                                   "messages": "I drink green tea every afternoon."}) + "\n")

    def memos(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "memos", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    memos("publish", str(publish))  # not --wait: nothing derives it yet
    report = json.loads(memos("status", "--json"))
    assert report["backlog"] == 1 and report["cubes"] == 1 and report["tasks"] == {"waiting": 1}
    assert sum(report["topics"][CONVERSATIONS].values()) == 1
    table = memos("status")
    assert "consumer lag per processor" in table and CONVERSATIONS in table
    assert "cubes: 1" in table and "derivation backlog: 1" in table
