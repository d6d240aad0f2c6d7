"""The faust worker recognises a record that killed it: dead-lettered with the reason after 3 deaths, the rest goes on.

A real faust worker process over the real Kafka-protocol broker hosts the real stages; its ``deriver``
stage SIGKILLs the process on one marked conversation. This test restarts it each time it dies, as
systemd would, until the ``AttemptStore`` beside the worker's data recognises the record and it is
dead-lettered; the add after it is derived and its task completed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memos.application.service import MemoryService
from memos.runtime import Runtime
from schemas.topics import DLQ
from streams.settings import load_settings
from tests.engines import engine_url
from tests.integration.test_faust_worker import ROOT, FaustWorker, dlq_since, start_groups_at_end

pytestmark = pytest.mark.engine("kafka")

KILLING_WORKER = """
import os, signal
from memos.runtime import Runtime
from streams.pipeline.faust_app import run_faust_worker
from streams.settings import load_settings

MARK = os.environ["TEST_KILL_MARK"]


class KillingRuntime(Runtime):
    def stages(self):
        stages = super().stages()
        for stage in stages:
            if stage.name == "deriver":
                handle = stage.handle

                async def killing(batch, handle=handle):
                    if any(MARK in repr(envelope.event) for envelope in batch):
                        os.kill(os.getpid(), signal.SIGKILL)
                    return await handle(batch)

                stage.handle = killing
        return stages


settings = load_settings()
run_faust_worker(settings, lambda: KillingRuntime(settings, run_stages=False), group_prefix=GROUP_PREFIX)
"""


class KillingFaustWorker(FaustWorker):
    """``run_faust_worker`` whose deriver kills the process on any record that mentions ``mark``."""

    def __init__(self, log_path: Path, group_prefix: str, mark: str) -> None:
        self.log_path = log_path
        code = f"GROUP_PREFIX = {group_prefix!r}\n" + KILLING_WORKER
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TEST_KILL_MARK": mark}
        with log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )


@pytest.mark.xfail(run=False, reason=(
    "not yet green: the first kill and its count work (attempts file has the deriver's record at 1), but the "
    "restarted faust worker keeps re-joining the projector group (generation 2, every 60 s) and never "
    "consumes; the dead member's session needs a shorter broker_session_timeout or a static member id"))
async def test_a_record_that_kills_the_faust_worker_is_dead_lettered_and_the_rest_processed(
    memos_home: Path, unique: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = engine_url("kafka")
    prefix = f"test-faust-poison-{unique}-"
    monkeypatch.setenv("MEMOS_LOG__URL", url)
    monkeypatch.setenv("MEMOS_LOG__GROUP_PREFIX", prefix)
    monkeypatch.setenv("MEMOS_WORKER_ID", f"w-{unique}")
    settings = load_settings()
    user, cube, mark = f"user-{unique}", f"cube-{unique}", f"kill-{unique}"
    log_path = tmp_path / "faust-worker.log"
    worker: FaustWorker | None = None

    async with Runtime(settings, run_stages=False) as rt:
        await start_groups_at_end(rt, url.removeprefix("kafka://"), prefix)
        dlq_start = await rt.log.end_offsets(DLQ)
        service = MemoryService(rt)
        tasks: list[str] = []

        async def add_both() -> None:  # an add waits for the worker's control stage: runs beside the supervisor
            for content in (f"I keep bees behind the house. {mark}", "My bicycle is a green 1984 Peugeot."):
                [added] = await service.add(user, [cube], [{"role": "user", "content": content}], mode="fast",
                                            async_mode="async")
                tasks.append(added["task_id"])

        async def outcome() -> tuple[list, bool]:
            if not adding.done():
                return [], False
            adding.result()
            letters = [r for r in await dlq_since(rt, dlq_start)
                       if r.header("memos.group") == f"{prefix}deriver".encode()]
            info = await rt.control.task(tasks[1])
            return letters, info is not None and info.status == "completed"

        deaths = 0
        deadline = time.monotonic() + 300
        try:
            worker = KillingFaustWorker(log_path, prefix, mark)
            adding = asyncio.create_task(add_both())
            while True:
                assert time.monotonic() < deadline, f"not recovered in time (deaths={deaths}):\n{worker.tail()}"
                letters, after_done = await outcome()
                if letters and after_done:
                    break
                if worker.proc.poll() is not None:
                    assert worker.proc.returncode == -9, f"worker ended with {worker.proc.returncode}:\n{worker.tail()}"
                    deaths += 1
                    assert deaths <= 5, f"the worker keeps dying on the same record:\n{worker.tail()}"
                    worker = KillingFaustWorker(log_path, prefix, mark)
                    continue
                await asyncio.sleep(0.2)  # polling interval of the outcome check above, not synchronisation
            assert worker.proc.poll() is None, "the worker should be alive after dead-lettering"
            assert worker.stop() == 0
        finally:
            if worker is not None and worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait(timeout=10)

        assert deaths == 3, f"expected 3 deaths on the record, got {deaths}"
        [letter] = letters
        assert letter.key == cube.encode()
        assert mark.encode() in letter.value  # the original record's bytes
        assert letter.header("memos.error_type") == b"ProcessingError"
        assert b"when the worker died, 3 times" in (letter.header("memos.error") or b"")
        info = await rt.control.task(tasks[0])
        assert info is None or info.status != "completed"
        log_text = log_path.read_text(errors="replace")
        assert "poison record sent to DLQ" in log_text
