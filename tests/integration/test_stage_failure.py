"""A stage that stops on an error is never silent: it logs why, the runtime names it, /healthz answers 503 (for
a supervisor to restart the server), and the rest of the runtime still closes cleanly."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.requests import Request

import memos.runtime as runtime_module
from memos.application.service import MemoryService
from memos.runtime import Runtime
from memos.server.routes_v1 import healthz
from schemas.envelope import Envelope
from schemas.errors import StoreUnavailable
from schemas.events import AnyEvent, Event
from streams.log.local.log import LocalEventLog
from streams.pipeline.runner import Runner
from streams.pipeline.stages import DispatchStage
from streams.settings import AppSettings


async def test_a_stage_that_stops_is_named_logged_and_reported_unhealthy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    async def down(self: DispatchStage, batch: Sequence[Envelope[AnyEvent]]) -> list[Event]:
        raise StoreUnavailable("the task engine is down")  # retried, then the runner stops

    monkeypatch.setattr(DispatchStage, "handle", down)
    app = FastAPI()
    async with Runtime(AppSettings(home=tmp_path)) as rt:
        app.state.runtime, app.state.service = rt, MemoryService(rt)
        healthy = await healthz(Request({"type": "http", "app": app}))
        assert healthy.status_code == 200 and rt.failed_stages() == []
        with caplog.at_level(logging.CRITICAL, logger="streams.pipeline.runner"):
            await app.state.service.add("ann", ["ann"], [{"role": "user", "content": "Pixel is my dog."}],
                                        mode="fast", async_mode="async")  # its task status reaches the stage
            failed = await asyncio.wait_for(app.state.service.stage_failure(), 60)
        assert len(failed) == 1 and failed[0].startswith("runner:scheduler") and "task engine is down" in failed[0]
        assert "group=scheduler stopped on an error" in caplog.text
        unhealthy = await healthz(Request({"type": "http", "app": app}))
        body = json.loads(bytes(unhealthy.body))
        assert unhealthy.status_code == 503 and body["data"]["failed_stages"] == failed
        found = await app.state.service.search("ann", ["ann"], "dog")  # the other stages went on
        assert found["text_mem"][0]["memories"]


class HangingLog(LocalEventLog):
    """Its consumers' polls never return once the runner is under way (a broker stuck in a rebalance)."""

    polling = asyncio.Event()

    def consumer(self, *args: Any, **kwargs: Any) -> Any:
        consumer = super().consumer(*args, **kwargs)

        async def poll(**_: Any) -> list[Any]:
            self.polling.set()
            await asyncio.Event().wait()
            return []

        consumer.poll = poll  # type: ignore[method-assign]
        return consumer


async def test_a_hanging_poll_never_holds_up_a_stop(tmp_path: Path) -> None:
    async with HangingLog(tmp_path / "log.db", partitions=1) as log:
        runner = Runner(log, DispatchStage({}, emit=_nothing))
        running = asyncio.create_task(runner.run())
        await asyncio.wait_for(log.polling.wait(), 10)
        runner.stop()
        await asyncio.wait_for(running, 10)  # it used to wait on the poll for ever


async def _nothing(events: Sequence[Event]) -> None:
    return None


async def test_closing_cancels_stages_past_the_deadline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    entered = asyncio.Event()

    async def stuck(self: DispatchStage, batch: Sequence[Envelope[AnyEvent]]) -> list[Event]:
        entered.set()
        await asyncio.Event().wait()  # a batch that never finishes
        return []

    monkeypatch.setattr(DispatchStage, "handle", stuck)
    monkeypatch.setattr(runtime_module, "STOP_DEADLINE_S", 0.5)
    rt = Runtime(AppSettings(home=tmp_path))
    await rt.start()
    await MemoryService(rt).add("ann", ["ann"], [{"role": "user", "content": "Pixel is my dog."}], mode="fast",
                                async_mode="async")
    await asyncio.wait_for(entered.wait(), 60)
    with caplog.at_level(logging.WARNING, logger="memos.runtime"):
        await asyncio.wait_for(rt.aclose(), 30)  # not for ever: the stuck batch is cancelled, uncommitted
    assert "stage runner:scheduler did not stop" in caplog.text


def test_memos_forget_on_kafka_is_refused_before_anything_starts(tmp_path: Path) -> None:
    config = tmp_path / "kafka.yaml"
    config.write_text('log:\n  url: "kafka://127.0.0.1:9"\n')  # nothing listens: a joined group would hang
    env = {**os.environ, "MEMOS_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    for args in (["--cube", "c1"], ["--user", "u1"]):
        proc = subprocess.run([sys.executable, "-m", "memos", "forget", *args, "--config", str(config)],
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "cannot delete records" in proc.stderr, proc.stderr
