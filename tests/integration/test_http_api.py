"""The HTTP API end to end on a real uvicorn server: MemOS routes, scheduler, feed, replay, chat, metrics.

Also home of the helpers the other HTTP test modules import (``live_server``, ``make_user``, ``read_sse``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from memos.application.service import MemoryService
from memos.server.app import BackgroundServer, create_app
from memos.server.routes_product import ChatFn
from schemas.errors import ConfigError
from streams.settings import load_settings

pytestmark = pytest.mark.timeout(600)

TRIP = [
    {
        "role": "user",
        "content": "I am planning a trip to Guangzhou this summer. Which chain hotels are there?",
    },
    {"role": "assistant", "content": "You could consider 7 Days Inn, Ji Hotel or Hilton."},
    {"role": "user", "content": "I will choose 7 Days Inn because it is cheap."},
]


# --- helpers shared by the HTTP test modules -------------------------------------------------------------


@contextmanager
def live_server(home: Path, *, chat: ChatFn | None = None, **server: Any) -> Iterator[BackgroundServer]:
    """A real uvicorn server on a free loopback port over a fresh data directory."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEMOS_HOME", str(home))
        settings = load_settings("default")
        settings = settings.model_copy(update={"server": settings.server.model_copy(update=server)})
        running = BackgroundServer(create_app(settings, chat=chat)).start()
        try:
            yield running
        finally:
            running.stop()


@dataclass(frozen=True)
class Tenant:
    """A user with an API key."""

    user_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def service_of(server: BackgroundServer) -> MemoryService:
    service: MemoryService = server.app.state.service
    return service


def make_user(server: BackgroundServer, user_id: str, *, admin: bool = False) -> Tenant:
    """Register a user and issue it a key, on the server's own loop."""
    service = service_of(server)
    server.call(service.create_user(user_id, role="admin" if admin else "user"))
    return Tenant(user_id, server.call(service.issue_key(user_id)))


def client_for(server: BackgroundServer, tenant: Tenant | None = None) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=tenant.headers if tenant else {}, timeout=120.0)


def create_cube(client: httpx.Client, cube_id: str) -> None:
    r = client.post("/product/create_cube", json={"mem_cube_id": cube_id})
    assert r.status_code == 200, r.text


def add_fast(
    client: httpx.Client, cube_id: str, messages: list[dict[str, Any]] | str
) -> list[dict[str, Any]]:
    """A sync fast add; returns the memories it produced (at least one)."""
    r = client.post(
        "/product/add",
        json={"writable_cube_ids": [cube_id], "messages": messages, "async_mode": "sync", "mode": "fast"},
    )
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    assert data, r.text
    return data


def read_sse(response: httpx.Response, *, limit: int | None = None) -> list[dict[str, str]]:
    """Parse server-sent events (comments skipped) until the stream ends or ``limit`` events arrived."""
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in current:
                events.append(current)
                if limit is not None and len(events) >= limit:
                    break
            current = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        current[name] = current[name] + "\n" + value if name == "data" and name in current else value
    return events


def feed(
    client: httpx.Client, *, headers: dict[str, str] | None = None, limit: int | None = None, **params: Any
) -> tuple[int, list[dict[str, str]]]:
    """Read a feed (follow=false unless given) and return (status, events)."""
    params.setdefault("follow", "false")
    with client.stream("GET", "/v1/feed", params=params, headers=headers or {}) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code, [{"data": r.text}]
        return 200, read_sse(r, limit=limit)


# --- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    with live_server(tmp_path_factory.mktemp("http_api")) as running:
        yield running


@pytest.fixture(scope="module")
def alice(server: BackgroundServer) -> Tenant:
    return make_user(server, "alice")


@pytest.fixture
def ac(server: BackgroundServer, alice: Tenant) -> Iterator[httpx.Client]:
    with client_for(server, alice) as client:
        yield client


# --- tests -----------------------------------------------------------------------------------------------


def test_add_search_get_delete_round_trip(ac: httpx.Client, unique: str) -> None:
    cube = f"trip_{unique}"
    create_cube(ac, cube)
    added = add_fast(ac, cube, TRIP)
    assert all(m["cube_id"] == cube and m["memory_id"] and m["task_id"] for m in added)
    memory_id = added[0]["memory_id"]

    r = ac.post(
        "/product/search",
        json={
            "user_id": "alice",
            "readable_cube_ids": [cube],
            "query": "Which hotel did I choose?",
            "relativity": 0,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["code"] == 200
    found = [m["id"] for bucket in body["data"]["text_mem"] for m in bucket["memories"]]
    assert memory_id in found

    one = ac.get(f"/product/get_memory/{memory_id}", params={"mem_cube_id": cube})
    assert one.status_code == 200, one.text
    assert one.json()["data"]["id"] == memory_id and "7 Days Inn" in one.json()["data"]["memory"]

    listed = ac.post("/product/get_memory", json={"mem_cube_id": cube})
    assert listed.status_code == 200, listed.text
    assert memory_id in [m["id"] for m in listed.json()["data"]["text_mem"][0]["memories"]]

    gone = ac.post("/product/delete_memory", json={"writable_cube_ids": [cube], "memory_ids": [memory_id]})
    assert gone.status_code == 200, gone.text
    assert gone.json()["data"]["deleted_ids"] == [memory_id]
    after = ac.post("/product/get_memory", json={"mem_cube_id": cube}).json()["data"]["text_mem"][0][
        "memories"
    ]
    assert memory_id not in [m["id"] for m in after]
    retired = ac.get(f"/product/get_memory/{memory_id}", params={"mem_cube_id": cube}).json()["data"]
    assert retired["metadata"]["status"] == "retired"


def test_string_messages_and_multi_cube_search(ac: httpx.Client, unique: str) -> None:
    one, two = f"m1_{unique}", f"m2_{unique}"
    for cube in (one, two):
        create_cube(ac, cube)
    add_fast(ac, one, "My favourite colour is teal.")
    add_fast(ac, two, [{"role": "user", "content": "I play the cello every Sunday."}])
    r = ac.post(
        "/product/search",
        json={
            "user_id": "alice",
            "readable_cube_ids": [one, two],
            "query": "What do I do on Sundays?",
            "relativity": 0,
        },
    )
    assert r.status_code == 200, r.text
    cubes = {bucket["cube_id"] for bucket in r.json()["data"]["text_mem"] if bucket["memories"]}
    assert two in cubes


def test_async_add_then_scheduler_wait_and_status(ac: httpx.Client, unique: str) -> None:
    cube = f"async_{unique}"
    create_cube(ac, cube)
    r = ac.post("/product/add", json={"writable_cube_ids": [cube], "messages": TRIP, "async_mode": "async"})
    assert r.status_code == 200, r.text
    task_id = r.json()["data"][0]["task_id"]

    waited = ac.post("/product/scheduler/wait", params={"task_id": task_id, "timeout_seconds": 120})
    assert waited.status_code == 200, waited.text
    assert waited.json()["data"]["done"] is True
    assert waited.json()["data"]["tasks"][0]["status"] == "completed"

    status = ac.get("/product/scheduler/status", params={"task_id": task_id})
    assert status.status_code == 200, status.text
    [item] = status.json()["data"]
    assert {k: item[k] for k in ("task_id", "status")} == {"task_id": task_id, "status": "completed"}
    assert item["progress"]["step"] == "done" and item["progress"]["done"] == item["progress"]["total"]
    everything = ac.get("/product/scheduler/allstatus")
    assert everything.status_code == 200
    assert everything.json()["data"]["all_tasks_summary"]["completed"] >= 1

    idle = ac.get("/product/scheduler/wait", params={"timeout_seconds": 60})
    assert idle.status_code == 200 and idle.json()["data"]["done"] is True

    unknown = ac.get("/product/scheduler/wait", params={"task_id": f"nope_{unique}", "timeout_seconds": 1})
    assert unknown.status_code == 404 and "task_id" in unknown.json()["message"]


def test_feed_resumes_exactly_after_last_event_id(ac: httpx.Client, unique: str) -> None:
    cube = f"feed_{unique}"
    create_cube(ac, cube)
    for text in ("I like green tea.", "My sister lives in Lyon.", "I am allergic to peanuts."):
        add_fast(ac, cube, text)
    status, everything = feed(ac, cube=cube, **{"from": "beginning"})
    assert status == 200 and len(everything) >= 3
    ids = [json.loads(e["data"])["event"]["event_id"] for e in everything]
    assert all(json.loads(e["data"])["event"]["key"] == cube for e in everything)

    _, first = feed(ac, cube=cube, limit=2, **{"from": "beginning", "follow": "true"})
    assert [json.loads(e["data"])["event"]["event_id"] for e in first] == ids[:2]
    _, rest = feed(ac, cube=cube, headers={"Last-Event-ID": first[-1]["id"]})
    assert [json.loads(e["data"])["event"]["event_id"] for e in rest] == ids[2:]
    _, by_query = feed(ac, cube=cube, cursor=first[0]["id"])
    assert [json.loads(e["data"])["event"]["event_id"] for e in by_query] == ids[1:]
    assert "embedding" not in json.loads(everything[0]["data"])["event"]


def test_feed_follows_live_events(server: BackgroundServer, ac: httpx.Client, unique: str) -> None:
    cube = f"live_{unique}"
    create_cube(ac, cube)
    received: list[dict[str, str]] = []

    def follow() -> None:
        with (
            client_for(server) as c,
            c.stream(
                "GET", "/v1/feed", headers=ac.headers, params={"cube": cube, "from": "beginning", "limit": 1}
            ) as r,
        ):
            received.extend(read_sse(r, limit=1))

    reader = threading.Thread(target=follow)
    reader.start()
    added = add_fast(ac, cube, "The wifi password at home is swordfish.")
    reader.join(60)
    assert not reader.is_alive()
    assert received and received[0]["event"] == "MemoryAdded"
    assert json.loads(received[0]["data"])["event"]["memory_id"] in {m["memory_id"] for m in added}


def test_replay_rebuilds_the_same_cube(ac: httpx.Client, unique: str) -> None:
    cube = f"replay_{unique}"
    create_cube(ac, cube)
    add_fast(ac, cube, TRIP)
    add_fast(ac, cube, "I run 5 km every morning.")
    before = ac.post("/product/get_memory", json={"mem_cube_id": cube}).json()["data"]["text_mem"][0][
        "memories"
    ]
    r = ac.post(f"/v1/cubes/{cube}/replay")
    assert r.status_code == 200, r.text
    assert r.json()["data"]["events_applied"] >= 2
    after = ac.post("/product/get_memory", json={"mem_cube_id": cube}).json()["data"]["text_mem"][0][
        "memories"
    ]
    assert sorted((m["id"], m["memory"]) for m in after) == sorted((m["id"], m["memory"]) for m in before)


def test_chat_is_501_without_a_model_and_uses_the_wired_callable(
    server: BackgroundServer, ac: httpx.Client, unique: str
) -> None:
    cube = f"chat_{unique}"
    create_cube(ac, cube)
    add_fast(ac, cube, TRIP)
    request = {
        "user_id": "alice",
        "query": "Which hotel?",
        "readable_cube_ids": [cube],
        "add_message_on_answer": False,
    }
    r = ac.post("/product/chat/complete", json=request)
    assert r.status_code == 501 and "chat is not configured" in r.json()["message"]
    fresh = f"chatnew_{unique}"  # a chat that cannot run creates no cube it names
    r = ac.post("/product/chat/complete", json={**request, "add_message_on_answer": True,
                                                "writable_cube_ids": [fresh]})
    assert r.status_code == 501
    assert ac.post("/product/get_memory", json={"mem_cube_id": fresh}).status_code == 404  # never created

    async def answer(service: MemoryService, user_id: str, req: Any) -> AsyncIterator[str]:
        found = await service.search(user_id, req.readable_cube_ids, req.query, top_k=1, relativity=0)
        yield "You said: "
        yield found["text_mem"][0]["memories"][0]["memory"]

    server.app.state.chat = answer
    try:
        done = ac.post("/product/chat/complete", json=request)
        assert done.status_code == 200, done.text
        assert done.json()["data"].startswith("You said: ") and "7 Days Inn" in done.json()["data"]
        with ac.stream("POST", "/product/chat/stream", json=request) as s:
            assert s.status_code == 200
            chunks = [json.loads(e["data"]) for e in read_sse(s)]
        assert [c["type"] for c in chunks] == ["text", "text", "end"]
        assert "7 Days Inn" in chunks[1]["data"]
    finally:
        server.app.state.chat = None


def test_health_docs_and_admin_metrics(server: BackgroundServer, ac: httpx.Client, unique: str) -> None:
    with client_for(server) as anonymous:
        health = anonymous.get("/healthz")
        assert health.status_code == 200 and health.json()["data"]["status"] == "ok"
        assert anonymous.get("/docs").status_code == 200
        assert "/product/add" in anonymous.get("/openapi.json").json()["paths"]
    create_cube(ac, f"metrics_{unique}")
    add_fast(ac, f"metrics_{unique}", "I count my steps every day.")
    assert ac.get("/metrics").status_code == 403
    timing = ac.get("/healthz").headers["server-timing"]  # the server's own time, apart from the client's
    assert timing.startswith("app;dur=") and float(timing.removeprefix("app;dur=")) >= 0
    admin = make_user(server, f"root_{unique}", admin=True)
    with client_for(server, admin) as root:
        r = root.get("/metrics")
    assert r.status_code == 200, r.text
    text = r.text
    assert 'memos_http_requests_total{method="POST",route="/product/add",status="200"}' in text
    assert 'memos_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/healthz"}' in text
    assert 'memos_processor_lag_records{group="projector"' in text
    assert 'memos_tasks{status="completed"}' in text
    deadline = time.monotonic() + 30
    while 'memos_model_tokens_total{direction="prompt",kind="embedding"' not in text:
        assert time.monotonic() < deadline, "no model tokens counted from the memory events"
        time.sleep(0.2)
        with client_for(server, admin) as root:
            text = root.get("/metrics").text


def test_local_only_mode_takes_the_user_from_the_request(tmp_path: Path, unique: str) -> None:
    with pytest.raises(ConfigError, match="local-only"):
        settings = load_settings("default")
        create_app(
            settings.model_copy(
                update={"server": settings.server.model_copy(update={"local_only": True, "host": "0.0.0.0"})}
            )
        )
    with (
        live_server(tmp_path / "local", local_only=True) as local,
        client_for(local) as c,
    ):
        missing = c.post("/product/add", json={"writable_cube_ids": ["c"], "messages": "hello"})
        assert missing.status_code == 422 and "user_id" in missing.json()["message"]
        added = c.post(
            "/product/add",
            json={
                "user_id": "carol",
                "writable_cube_ids": [f"c_{unique}"],
                "messages": "I keep bees.",
                "async_mode": "sync",
                "mode": "fast",
            },
        )
        assert added.status_code == 200, added.text
        assert local.call(service_of(local).owner_of(f"c_{unique}")) == "carol"
        other = c.post(
            "/product/search", json={"user_id": "dave", "readable_cube_ids": [f"c_{unique}"], "query": "bees"}
        )
        assert other.status_code == 404  # a cube dave may not read answers like an unknown one
