"""A large add shows its progress in its task status, through the real HTTP server, and the progress is on the
log (so any process, and a rebuilt control projection, shows the same)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from memos.server.app import BackgroundServer
from schemas.codec import decode
from schemas.events import TaskStatusChanged
from schemas.topics import TASKS
from tests.security.conftest import Tenant, add, start_server, tenant

pytestmark = pytest.mark.timeout(900)

WORDS = ("we planned the trip to the lake and agreed that the boat leaves early so everyone must pack the "
         "night before with food water and warm clothes").split()  # fmt: skip


def big_text(chars: int, *, seed: int = 5) -> str:
    rng = random.Random(seed)
    out: list[str] = []
    size = 0
    while size < chars:
        sentence = (
            f"Note {len(out)} ({rng.getrandbits(40):x}): "
            + " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 18)))
            + ". "
        )
        out.append(sentence)
        size += len(sentence)
    return "".join(out)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    running = start_server(tmp_path_factory.mktemp("progress_home"), slice_size=8)  # steps of 8 memories
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def carol(server: BackgroundServer) -> Tenant:
    return tenant(server, "carol")


def _status(client: httpx.Client, task_id: str) -> dict[str, Any] | None:
    """The task's status item; None while the task is not yet projected (an async add's first moments)."""
    r = client.get("/product/scheduler/status", params={"task_id": task_id})
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["data"]
    assert [i["task_id"] for i in items] == [task_id]
    return items[0]


def _wait_a_little(client: httpx.Client, task_id: str) -> None:
    """Block until the task finishes or a fifth of a second passed (the server's own wait, not a sleep)."""
    r = client.get("/product/scheduler/wait", params={"task_id": task_id, "timeout_seconds": 0.2,
                                                     "poll_interval": 0.05})  # fmt: skip
    assert r.status_code == 200, r.text


def _progress_on_log(server: BackgroundServer, task_id: str) -> list[dict[str, Any]]:
    log = server.app.state.service.rt.log
    found: list[dict[str, Any]] = []
    for partition, end in server.call(log.end_offsets(TASKS)).items():
        offset = 0
        while offset < end:
            records = server.call(log.read(TASKS, partition, offset, limit=1000))
            for record in records:
                event = decode(record.value)
                if (
                    isinstance(event, TaskStatusChanged)
                    and event.task_id == task_id
                    and "progress" in event.result
                ):
                    found.append({"status": event.status, **event.result["progress"]})
            offset = records[-1].position.offset + 1
    return found


def test_a_large_fine_add_reports_progress_in_its_task_status(
    server: BackgroundServer, carol: Tenant
) -> None:
    with carol.client(server) as client:
        messages = [{"role": "user" if n % 2 == 0 else "assistant", "content": big_text(300, seed=n)}
                    for n in range(160)]  # fmt: skip
        body = add(client, "carol", messages, mode="fine", sync=False)  # async: fast now, refined after
        task_id = body["data"][0]["task_id"] if isinstance(body["data"], list) else body["data"]["task_id"]
        seen: list[dict[str, Any]] = []
        while True:
            item = _status(client, task_id)
            if item is None:
                continue  # polled again at once: the control stage is about to project the new task
            if item["progress"] is not None:
                seen.append({"status": item["status"], **item["progress"]})
            if item["status"] in ("completed", "failed"):
                break
            _wait_a_little(client, task_id)
    assert item is not None and item["status"] == "completed", item
    final = item["progress"]
    assert final["step"] == "done" and final["done"] == final["total"] > 8, final
    running = [s for s in seen if s["status"] == "in_progress"]
    assert any(0 < s["done"] < s["total"] for s in running), seen  # seen while it ran, through HTTP
    on_log = _progress_on_log(server, task_id)
    steps = [s["step"] for s in on_log if s["status"] == "in_progress"]
    assert {"embedding", "deduplicating"} <= set(steps), on_log
    assert len(on_log) <= 4 * 12, on_log  # bounded: about a tenth of each step per status
    assert on_log[-1] == {"status": "completed", **final}
