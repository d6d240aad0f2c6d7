"""A stage that stops on an error is never silent: it logs why, the runtime names it, /healthz answers 503 (for
a supervisor to restart the server), and the rest of the runtime still closes cleanly."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest
from fastapi import FastAPI
from starlette.requests import Request

from memos.application.service import MemoryService
from memos.runtime import Runtime
from memos.server.routes_v1 import healthz
from schemas.envelope import Envelope
from schemas.errors import StoreUnavailable
from schemas.events import AnyEvent, Event
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
