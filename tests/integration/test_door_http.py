"""The one door through the real HTTP server: identifiers, squatting, task ids, bounds, backpressure, docs."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from memos.application.limits import MAX_ADD_RECORD_BYTES, MAX_PAGE, DoorLimits
from memos.application.pending import PendingWork, Waiting
from memos.server.app import BackgroundServer
from schemas.topics import CONVERSATIONS
from tests.integration.test_http_api import Tenant, client_for, live_server, make_user, service_of

pytestmark = pytest.mark.timeout(600)

BAD_CUBE_IDS = ["a\x00b", "a\nb", " lead", "trail ", "a\u202eb", "x'; DROP TABLE cubes;--", "", "x" * 129]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    with live_server(tmp_path_factory.mktemp("door_http")) as running:
        yield running


@pytest.fixture(scope="module")
def alice(server: BackgroundServer) -> Tenant:
    return make_user(server, "alice")


@pytest.fixture(scope="module")
def bob(server: BackgroundServer) -> Tenant:
    return make_user(server, "bob")


def _add(c: httpx.Client, cube: str | None, text: str = "I like green tea.", **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"messages": text, "async_mode": "sync", "mode": "fast", **extra}
    if cube is not None:
        body["writable_cube_ids"] = [cube]
    return c.post("/product/add", json=body)


@pytest.mark.parametrize("cube", BAD_CUBE_IDS)
def test_bad_cube_ids_are_422_naming_the_field_and_nothing_is_written(
    server: BackgroundServer, alice: Tenant, cube: str
) -> None:
    with client_for(server, alice) as c:
        for r in (
            _add(c, cube),
            c.post("/product/search", json={"user_id": alice.user_id, "readable_cube_ids": [cube], "query": "tea"}),
            c.post("/product/create_cube", json={"mem_cube_id": cube}),
        ):
            assert r.status_code == 422, (cube, r.text)
            assert "cube_id" in r.json()["message"] or "writable_cube_ids" in r.json()["message"], r.text
    assert not server.call(service_of(server).cube_exists(cube))


def test_bad_user_ids_are_422_naming_the_field(server: BackgroundServer, unique: str) -> None:
    root = make_user(server, f"root_{unique}", admin=True)
    with client_for(server, root) as c:
        for user in ("a b", "a\u202eb", "bob\n"):
            r = c.post("/product/search", json={"user_id": user, "query": "tea"})
            assert r.status_code == 422 and "user_id" in r.json()["message"], (user, r.text)


def test_ids_are_nfc_normalised_at_the_door(server: BackgroundServer, alice: Tenant, unique: str) -> None:
    composed, decomposed = f"caf\u00e9_{unique}", f"cafe\u0301_{unique}"
    with client_for(server, alice) as c:
        assert _add(c, decomposed, "The café opens at eight.").status_code == 200
        found = c.post("/product/search", json={"user_id": alice.user_id, "readable_cube_ids": [composed],
                                                "query": "café", "relativity": 0})
        assert found.status_code == 200, found.text
        assert [e["cube_id"] for e in found.json()["data"]["text_mem"]] == [composed]


def test_no_squatting_on_a_users_default_cube(server: BackgroundServer, alice: Tenant, bob: Tenant) -> None:
    with client_for(server, alice) as a, client_for(server, bob) as b:
        taken = a.post("/product/create_cube", json={"mem_cube_id": "bob"})
        assert taken.status_code == 403 and "default cube" in taken.json()["message"]
        assert _add(a, "bob", "Bob, read this.").status_code == 403
        assert not server.call(service_of(server).cube_exists("bob"))
        # bob's add without a cube goes to his default cube, created for him
        mine = _add(b, None, "My locker code is 4711.")
        assert mine.status_code == 200 and {m["cube_id"] for m in mine.json()["data"]} == {"bob"}
        assert server.call(service_of(server).owner_of("bob")) == "bob"
        assert _add(a, "bob", "sneaky").status_code == 404  # now it exists, and alice may not read it


def test_a_user_id_taken_by_another_users_cube_is_refused(server: BackgroundServer, alice: Tenant, unique: str) -> None:
    with client_for(server, alice) as a:
        assert a.post("/product/create_cube", json={"mem_cube_id": f"dora_{unique}"}).status_code == 200
    with pytest.raises(Exception, match="taken"):
        make_user(server, f"dora_{unique}")


def test_task_ids_belong_to_their_user(server: BackgroundServer, alice: Tenant, bob: Tenant, unique: str) -> None:
    shared_name = f"t1_{unique}"
    with client_for(server, alice) as a, client_for(server, bob) as b:
        first = a.post("/product/add", json={"messages": "Alice likes jazz.", "async_mode": "async",
                                             "mode": "fast", "task_id": shared_name})
        second = b.post("/product/add", json={"messages": "Bob likes techno.", "async_mode": "async",
                                              "mode": "fast", "task_id": shared_name})
        assert first.status_code == 200 and second.status_code == 200, (first.text, second.text)
        alice_task, bob_task = first.json()["data"][0]["task_id"], second.json()["data"][0]["task_id"]
        assert alice_task != bob_task != shared_name
        for client, own in ((a, alice_task), (b, bob_task)):
            waited = client.post("/product/scheduler/wait", params={"task_id": shared_name, "timeout_seconds": 120})
            assert waited.status_code == 200 and waited.json()["data"]["done"], waited.text
            assert [t["task_id"] for t in waited.json()["data"]["tasks"]] == [own]
            status = client.get("/product/scheduler/status", params={"task_id": shared_name})
            [item] = status.json()["data"]
            assert {k: item[k] for k in ("task_id", "status")} == {"task_id": own, "status": "completed"}
            assert item["progress"]["step"] == "done" and item["progress"]["done"] == item["progress"]["total"]
        # neither can read the other's task by its real id
        assert a.get("/product/scheduler/status", params={"task_id": bob_task}).status_code == 404
        assert b.get("/product/scheduler/status", params={"task_id": alice_task}).status_code == 404
        bob_memories = b.post("/product/search", json={"user_id": "bob", "query": "What music do I like?",
                                                       "relativity": 0}).json()
        texts = [m["memory"] for e in bob_memories["data"]["text_mem"] for m in e["memories"]]
        assert any("techno" in t for t in texts) and not any("jazz" in t for t in texts)


def test_numbers_text_and_sizes_are_bounded(server: BackgroundServer, alice: Tenant, unique: str) -> None:
    cube = f"bounds_{unique}"
    with client_for(server, alice) as c:
        assert _add(c, cube).status_code == 200
        for value in (2**63, 10**6, 0, -1):
            r = c.post("/product/search", json={"user_id": alice.user_id, "readable_cube_ids": [cube], "query": "tea",
                                                "top_k": value})
            assert r.status_code == 422 and "top_k" in r.json()["message"], (value, r.text)
        long_query = c.post("/product/search", json={"user_id": alice.user_id, "readable_cube_ids": [cube],
                                                     "query": "q" * 100_000})
        assert long_query.status_code == 422 and "query" in long_query.json()["message"]
        for text, where in (("tea\ud800", "messages"), ("tea\x00time", "messages")):
            raw = json.dumps({"writable_cube_ids": [cube], "messages": text})  # escapes: \ud800, \u0000
            r = c.post("/product/add", content=raw, headers={"Content-Type": "application/json"})
            assert r.status_code == 422 and where in r.json()["message"], r.text
        surrogate_query = json.dumps({"user_id": "alice", "readable_cube_ids": [cube], "query": "tea\udc00"})
        r = c.post("/product/search", content=surrogate_query, headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and "query" in r.json()["message"], r.text
        late = [{"role": "user", "content": "tea", "chat_time": "9 May, 2023"},
                {"role": "user", "content": "more tea", "chat_time": "t" * 60_000}]  # repeated on every window line
        r = c.post("/product/add", json={"user_id": alice.user_id, "writable_cube_ids": [cube], "messages": late})
        assert r.status_code == 422 and "messages.1.chat_time" in r.json()["message"], r.text[:300]
        big = _add(c, cube, "x" * (MAX_ADD_RECORD_BYTES + 10))
        assert big.status_code == 413 and str(MAX_ADD_RECORD_BYTES) in big.json()["message"], big.text[:300]


def test_a_full_backlog_is_429_with_retry_after_and_async_still_accepted(
    server: BackgroundServer, alice: Tenant, unique: str
) -> None:
    service = service_of(server)
    saved = service.limits
    service.limits = DoorLimits(max_backlog=0, backlog_retry_after_s=7)
    try:
        with client_for(server, alice) as c:
            r = _add(c, f"busy_{unique}")
            assert r.status_code == 429 and r.headers["retry-after"] == "7", r.text
            assert "derivation" in r.json()["message"]
            accepted = _add(c, f"busy_{unique}", async_mode="async")
            assert accepted.status_code == 200, accepted.text
    finally:
        service.limits = saved


def test_a_user_past_the_pending_bound_is_429_with_retry_after(
    server: BackgroundServer, alice: Tenant, bob: Tenant, unique: str
) -> None:
    service = service_of(server)
    saved = service.pending
    pending = service.pending = PendingWork(service.rt, per_user=1, retry_after_s=7)
    # alice has one add on the log that derivation will never pass (an offset past the end)
    pending._waiting[alice.user_id].append(Waiting(CONVERSATIONS, 0, 1 << 62, ("deriver",)))
    try:
        with client_for(server, alice) as c:
            r = _add(c, f"flood_{unique}", async_mode="async")
            assert r.status_code == 429 and r.headers["retry-after"] == "7", r.text
            assert "max_pending_per_user" in r.json()["message"]
        with client_for(server, bob) as c:  # another user is not held by alice's count
            assert _add(c, f"calm_{unique}", async_mode="async").status_code == 200
    finally:
        service.pending = saved


def _until(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Wait for ``condition`` (checked every few ms), failing with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


async def _release(lock: asyncio.Lock) -> None:
    lock.release()


def _post(server: BackgroundServer, tenant: Tenant, path: str) -> httpx.Response:
    with client_for(server, tenant) as c:
        return c.post(path)


def test_replays_join_per_cube_and_a_users_share_is_bounded(server: BackgroundServer, alice: Tenant, unique: str) -> None:
    """While alice's replay of one cube waits for the projection, a console request for the same cube joins
    it (202, although her share is one replay), a replay of her second cube is 429 with Retry-After through
    both front ends, and once the projection is free every request gets the same rebuilt cube."""
    service = service_of(server)
    first, second = f"rp1_{unique}", f"rp2_{unique}"
    with client_for(server, alice) as c:
        for cube in (first, second):
            assert _add(c, cube).status_code == 200
    lock = service.rt.projection_stage.lock
    server.call(lock.acquire())  # the replay is admitted and then waits for the projection
    try:
        with ThreadPoolExecutor(1) as pool, client_for(server, alice) as c:
            waiting = pool.submit(_post, server, alice, f"/v1/cubes/{first}/replay")
            _until(lambda: service.replays.running(first), "the replay to be admitted")
            for path in (f"/v1/cubes/{second}/replay", f"/v1/console/cubes/{second}/replay"):
                busy = c.post(path)
                assert busy.status_code == 429 and busy.headers["retry-after"] == "5", busy.text
                assert "door.replays_per_user" in busy.json()["message"]
            joined = c.post(f"/v1/console/cubes/{first}/replay")
            assert joined.status_code == 202, joined.text
            job_id = joined.json()["job_id"]
            assert c.post(f"/v1/console/cubes/{first}/replay").json()["job_id"] == job_id  # asked again: same job
            server.call(_release(lock))
            lock = None
            replayed = waiting.result(timeout=120)
            assert replayed.status_code == 200, replayed.text
            _until(lambda: c.get(f"/v1/console/jobs/{job_id}").json()["status"] != "running", "the console job")
            job = c.get(f"/v1/console/jobs/{job_id}").json()
            assert job["status"] == "completed", job
            assert job["result"]["events_applied"] == replayed.json()["data"]["events_applied"] >= 1
            assert not service.replays.running(first)
            assert c.post(f"/v1/cubes/{second}/replay").status_code == 200  # her share is free again
    finally:
        if lock is not None:
            server.call(_release(lock))


def test_a_console_page_past_the_last_possible_is_422(server: BackgroundServer, alice: Tenant, unique: str) -> None:
    cube = f"pages_{unique}"
    with client_for(server, alice) as c:
        assert _add(c, cube).status_code == 200
        for page in (2**63 - 1, MAX_PAGE + 1):
            r = c.get(f"/v1/console/cubes/{cube}/memories", params={"page": page, "page_size": 500})
            assert r.status_code == 422 and "page" in r.text, (page, r.text[:300])
        assert c.get(f"/v1/console/cubes/{cube}/memories", params={"page": MAX_PAGE}).status_code == 200


def test_a_sync_add_that_times_out_says_it_will_complete(server: BackgroundServer, alice: Tenant, unique: str) -> None:
    service = service_of(server)
    saved = service.limits
    service.limits = DoorLimits(sync_timeout_s=1e-6)
    try:
        with client_for(server, alice) as c:
            r = _add(c, f"slow_{unique}", "The boat leaves at noon.")
    finally:
        service.limits = saved
    assert r.status_code == 504, r.text
    body = r.json()
    assert body["data"]["will_complete"] is True and len(body["data"]["task_ids"]) == 1
    task_id = body["data"]["task_ids"][0]
    assert task_id in body["message"]
    with client_for(server, alice) as c:
        waited = c.post("/product/scheduler/wait", params={"task_id": task_id, "timeout_seconds": 120})
        assert waited.json()["data"]["done"] and waited.json()["data"]["tasks"][0]["status"] == "completed"
        # a task's status and its memories reach different projections: a later sync add settles every one
        assert _add(c, f"slow_{unique}", "The harbour is in the old town.").status_code == 200
        found = c.post("/product/search", json={"user_id": alice.user_id, "readable_cube_ids": [f"slow_{unique}"],
                                                "query": "boat", "relativity": 0})
        assert any("noon" in m["memory"] for e in found.json()["data"]["text_mem"] for m in e["memories"])


def test_docs_work_offline_and_declare_the_key_schemes(server: BackgroundServer) -> None:
    with client_for(server) as anonymous:
        page = anonymous.get("/docs")
        assert page.status_code == 200
        sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sources and all(s.startswith("/") for s in sources), sources
        for source in sources:
            asset = anonymous.get(source)
            assert asset.status_code == 200 and len(asset.content) > 100, source
        spec = anonymous.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerKey"] == {**schemes["bearerKey"], "type": "http", "scheme": "bearer"}
    assert schemes["apiKeyHeader"]["name"] == "X-API-Key"
    assert {"bearerKey": []} in spec["security"]
    assert spec["paths"]["/healthz"]["get"]["security"] == []
