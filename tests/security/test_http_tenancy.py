"""Security and tenancy of the HTTP API on a real server: keys, cross-tenant access, sharing, limits, forget."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from memos.server.app import BackgroundServer
from memos.server.auth import resolve_caller
from schemas.errors import PermissionDenied
from schemas.topics import ALL_TOPICS
from tests.integration.test_http_api import (
    TRIP,
    Tenant,
    add_fast,
    client_for,
    create_cube,
    feed,
    live_server,
    make_user,
    service_of,
)

pytestmark = pytest.mark.timeout(600)

MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    with live_server(tmp_path_factory.mktemp("http_security"), max_body_bytes=MAX_BODY) as running:
        yield running


@pytest.fixture(scope="module")
def alice(server: BackgroundServer) -> Tenant:
    return make_user(server, "alice")


@pytest.fixture(scope="module")
def bob(server: BackgroundServer) -> Tenant:
    return make_user(server, "bob")


@pytest.fixture(scope="module")
def world(server: BackgroundServer, alice: Tenant) -> dict[str, Any]:
    """Alice's cube with one memory and one finished task."""
    with client_for(server, alice) as c:
        create_cube(c, "alice_cube")
        memory = add_fast(c, "alice_cube", TRIP)[0]
    return {"cube": "alice_cube", "memory_id": memory["memory_id"], "task_id": memory["task_id"]}


def _requests(user: str, cube: str, memory_id: str, task_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    """One well-formed request per authenticated route, acting as ``user`` on ``cube``."""
    return [
        (method, template.format(memory_id=memory_id, cube_id=cube), kwargs)
        for method, template, kwargs in _templates(user, cube, memory_id, task_id)
    ]


def _templates(user: str, cube: str, memory_id: str, task_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    wait = {"params": {"user_id": user, "task_id": task_id, "timeout_seconds": 1}}
    chat = {"json": {"user_id": user, "query": "hi", "readable_cube_ids": [cube]}}
    return [
        (
            "POST",
            "/product/add",
            {
                "json": {
                    "user_id": user,
                    "writable_cube_ids": [cube],
                    "messages": "hi",
                    "async_mode": "sync",
                    "mode": "fast",
                }
            },
        ),
        (
            "POST",
            "/product/search",
            {"json": {"user_id": user, "readable_cube_ids": [cube], "query": "hotel"}},
        ),
        ("POST", "/product/get_memory", {"json": {"user_id": user, "mem_cube_id": cube}}),
        ("GET", "/product/get_memory/{memory_id}", {"params": {"user_id": user, "mem_cube_id": cube}}),
        (
            "POST",
            "/product/delete_memory",
            {"json": {"user_id": user, "writable_cube_ids": [cube], "memory_ids": [memory_id]}},
        ),
        ("POST", "/product/create_cube", {"json": {"user_id": user, "mem_cube_id": cube}}),
        (
            "POST",
            "/product/share_cube",
            {"json": {"user_id": user, "mem_cube_id": cube, "target_user_id": "alice"}},
        ),
        ("POST", "/product/chat/complete", chat),
        ("POST", "/product/chat/stream", chat),
        ("GET", "/product/scheduler/status", {"params": {"user_id": user, "task_id": task_id}}),
        ("GET", "/product/scheduler/allstatus", {"params": {"user_id": user}}),
        ("GET", "/product/scheduler/wait", wait),
        ("POST", "/product/scheduler/wait", wait),
        ("GET", "/v1/feed", {"params": {"user_id": user, "cube": cube, "follow": "false"}}),
        ("POST", "/v1/cubes/{cube_id}/replay", {"params": {"user_id": user}}),
        ("GET", "/metrics", {}),
    ]


def test_the_route_table_is_covered(server: BackgroundServer) -> None:
    with client_for(server) as c:
        paths = c.get("/openapi.json").json()["paths"]
    documented = {(method.upper(), path) for path, ops in paths.items() for method in ops}
    covered = {(method, template) for method, template, _ in _templates("u", "c", "m", "t")}
    assert documented - {("GET", "/healthz")} == covered


@pytest.mark.parametrize(
    "credentials",
    [
        {},
        {"Authorization": "Bearer mk_nope_nope"},
        {"X-API-Key": "garbage"},
        {"Authorization": "Basic YWxpY2U6cHc="},
    ],
)
def test_every_route_but_healthz_needs_a_valid_key(
    server: BackgroundServer, world: dict[str, Any], credentials: dict[str, str]
) -> None:
    with client_for(server) as c:
        for method, path, kwargs in _requests("alice", world["cube"], world["memory_id"], world["task_id"]):
            r = c.request(method, path, headers=credentials, **kwargs)
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            assert r.json()["code"] == 401 and r.json()["data"] is None
        assert c.post("/product/add", content=b"{not json", headers=credentials).status_code == 401
        assert c.get("/healthz").status_code == 200


def test_another_users_key_is_403_on_every_route(
    server: BackgroundServer, world: dict[str, Any], bob: Tenant
) -> None:
    with client_for(server, bob) as c:
        for method, path, kwargs in _requests("alice", world["cube"], world["memory_id"], world["task_id"]):
            if path == "/metrics":
                continue
            r = c.request(method, path, **kwargs)
            assert r.status_code == 403, (method, path, r.status_code, r.text)
            assert "alice" in r.json()["message"]


def test_cross_tenant_reads_and_writes_are_refused(
    server: BackgroundServer, world: dict[str, Any], alice: Tenant, bob: Tenant
) -> None:
    with client_for(server, bob) as c:
        for method, path, kwargs in _requests("bob", world["cube"], world["memory_id"], world["task_id"]):
            if path in ("/metrics", "/product/scheduler/allstatus") or path.startswith(
                "/product/create_cube"
            ):
                continue
            r = c.request(method, path, **kwargs)
            # a cube (or task) bob may not read answers exactly like an unknown one: its existence never leaks
            assert r.status_code == 404, (method, path, r.status_code, r.text)
        # bob's own view never shows alice's data
        allstatus = c.get("/product/scheduler/allstatus").json()["data"]["all_tasks_summary"]
        assert allstatus["total"] == 0
        taken = c.post("/product/create_cube", json={"mem_cube_id": world["cube"]})
        assert taken.status_code == 403
    with client_for(server, alice) as c:
        survived = c.get(f"/product/get_memory/{world['memory_id']}", params={"mem_cube_id": world["cube"]})
        assert survived.status_code == 200 and survived.json()["data"]["metadata"]["status"] == "activated"


def test_sharing_grants_exactly_read_or_write(
    server: BackgroundServer, alice: Tenant, bob: Tenant, unique: str
) -> None:
    cube = f"shared_{unique}"
    with client_for(server, alice) as a, client_for(server, bob) as b:
        create_cube(a, cube)
        memory_id = add_fast(a, cube, "The team offsite is in Porto.")[0]["memory_id"]
        search = {"readable_cube_ids": [cube], "query": "offsite", "user_id": "bob"}

        def bob_can() -> dict[str, int]:
            return {
                "read": b.post("/product/search", json=search).status_code,
                "get": b.get(f"/product/get_memory/{memory_id}", params={"mem_cube_id": cube}).status_code,
                "feed": feed(b, cube=cube)[0],
                "add": b.post(
                    "/product/add", json={"writable_cube_ids": [cube], "messages": "x", "async_mode": "async"}
                ).status_code,
                "share": b.post(
                    "/product/share_cube",
                    json={"mem_cube_id": cube, "target_user_id": "bob", "access": "write"},
                ).status_code,
            }

        assert bob_can() == {"read": 404, "get": 404, "feed": 404, "add": 404, "share": 404}
        assert (
            a.post("/product/share_cube", json={"mem_cube_id": cube, "target_user_id": "bob"}).status_code
            == 200
        )
        assert bob_can() == {"read": 200, "get": 200, "feed": 200, "add": 403, "share": 403}
        refused = b.post(
            "/product/delete_memory", json={"writable_cube_ids": [cube], "memory_ids": [memory_id]}
        )
        assert refused.status_code == 403
        assert (
            a.post(
                "/product/share_cube", json={"mem_cube_id": cube, "target_user_id": "bob", "access": "write"}
            ).status_code
            == 200
        )
        assert bob_can() == {"read": 200, "get": 200, "feed": 200, "add": 200, "share": 403}
        # write access adds memories and deletes the writer's own, never another user's (only the owner's may)
        foreign = b.post("/product/delete_memory", json={"writable_cube_ids": [cube], "memory_ids": [memory_id]})
        assert foreign.status_code == 403 and "written by others" in foreign.text
        own = add_fast(b, cube, "Bob brings the projector to Porto.")[0]["memory_id"]
        by_filter = b.post("/product/delete_memory",  # a filter matching both: bob's own only
                           json={"writable_cube_ids": [cube], "filter": {"memory": {"like": "Porto"}}})
        assert by_filter.status_code == 200 and by_filter.json()["data"]["deleted_ids"] == [own], by_filter.text
        deleted = a.post(
            "/product/delete_memory", json={"writable_cube_ids": [cube], "memory_ids": [memory_id]}
        )
        assert deleted.status_code == 200 and deleted.json()["data"]["deleted_ids"] == [memory_id]
        assert (
            a.post(
                "/product/share_cube", json={"mem_cube_id": cube, "target_user_id": "bob", "access": "none"}
            ).status_code
            == 200
        )
        assert bob_can() == {"read": 404, "get": 404, "feed": 404, "add": 404, "share": 404}


def test_unknown_cubes_are_404_and_never_created(
    server: BackgroundServer, alice: Tenant, unique: str
) -> None:
    cube = f"ghost_{unique}"
    with client_for(server, alice) as c:
        for method, path, kwargs in _requests("alice", cube, "m1", "t1"):
            if path in (
                "/product/add",  # an add creates the cube for its caller (next test)
                "/metrics",
                "/product/scheduler/allstatus",
                "/product/scheduler/status",
                "/product/scheduler/wait",
                "/product/share_cube",
            ) or path.startswith("/product/create"):
                continue
            r = c.request(method, path, **kwargs)
            assert r.status_code == 404, (method, path, r.status_code, r.text)
            assert cube in r.json()["message"] and r.json()["data"] is None
    assert not server.call(service_of(server).cube_exists(cube))


def test_an_add_to_a_new_cube_creates_it_for_the_caller(server: BackgroundServer, unique: str) -> None:
    carol = make_user(server, f"carol_{unique}")
    with client_for(server, carol) as c:
        add_fast(c, f"new_{unique}", "I grow tomatoes.")
    assert server.call(service_of(server).owner_of(f"new_{unique}")) == carol.user_id


def test_delete_is_scoped_to_the_named_cube(server: BackgroundServer, alice: Tenant, unique: str) -> None:
    one, two = f"one_{unique}", f"two_{unique}"
    with client_for(server, alice) as c:
        create_cube(c, one)
        create_cube(c, two)
        add_fast(c, one, "Cube one memory about kites.")
        other = add_fast(c, two, "Cube two memory about violins.")[0]["memory_id"]
        r = c.post("/product/delete_memory", json={"writable_cube_ids": [one], "memory_ids": [other]})
        assert r.status_code == 404 and other in r.json()["message"]
        kept = c.get(f"/product/get_memory/{other}", params={"mem_cube_id": two})
        assert kept.status_code == 200 and kept.json()["data"]["metadata"]["status"] == "activated"
        cross = c.get(f"/product/get_memory/{other}", params={"mem_cube_id": one})
        assert cross.status_code == 404


def test_forget_leaves_nothing(server: BackgroundServer, unique: str) -> None:
    erin = make_user(server, f"erin_{unique}")
    cube = f"forget_{unique}"
    with client_for(server, erin) as c:
        create_cube(c, cube)
        memory_id = add_fast(c, cube, "My bank PIN hint is the dog's birthday.")[0]["memory_id"]
        assert feed(c, cube=cube, **{"from": "beginning"})[1]
        service = service_of(server)
        forgotten = server.call(service.forget_user(erin.user_id))
        assert forgotten == [cube]
        # the key died with the user; an admin sees nothing left
        assert (
            c.post("/product/search", json={"readable_cube_ids": [cube], "query": "PIN"}).status_code == 401
        )
    root = make_user(server, f"root_{unique}", admin=True)
    with client_for(server, root) as c:
        as_erin = {"user_id": erin.user_id}
        assert (
            c.get(f"/product/get_memory/{memory_id}", params={**as_erin, "mem_cube_id": cube}).status_code
            == 404
        )
        assert (
            c.post(
                "/product/search", json={**as_erin, "readable_cube_ids": [cube], "query": "PIN"}
            ).status_code
            == 404
        )
        assert feed(c, cube=cube, **{"from": "beginning"})[0] == 404
        status, everything = feed(c, **{"from": "beginning"})
        assert status == 200
        assert all(json.loads(e["data"])["event"]["key"] != cube for e in everything)
        assert all(erin.user_id not in e["data"] and "PIN" not in e["data"] for e in everything)
    rt = server.app.state.runtime

    async def records_of(key: bytes) -> int:
        found = 0
        for topic in ALL_TOPICS:
            for partition in range(await rt.log.partitions(topic)):
                offset = 0
                while batch := await rt.log.read(topic, partition, offset, limit=1000):
                    found += sum(1 for r in batch if r.key == key or b"PIN hint" in r.value)
                    offset = batch[-1].position.offset + 1
        return found

    assert server.call(records_of(cube.encode())) == 0
    assert server.call(records_of(erin.user_id.encode())) == 0
    assert server.call(rt.graph.get([memory_id])) == []


def test_forget_cube_leaves_nothing_of_it_and_keeps_the_rest(server: BackgroundServer, unique: str) -> None:
    gina = make_user(server, f"gina_{unique}")
    gone, kept = f"gone_{unique}", f"kept_{unique}"
    with client_for(server, gina) as c:
        create_cube(c, gone)
        create_cube(c, kept)
        secret = add_fast(c, gone, "The vault code is quetzal-4711.")[0]["memory_id"]
        other = add_fast(c, kept, "I water the plants on Fridays.")[0]["memory_id"]
        server.call(service_of(server).forget_cube(gone, requested_by=gina.user_id))
        search = {"user_id": gina.user_id, "query": "vault code", "relativity": 0}
        assert c.post("/product/search", json={**search, "readable_cube_ids": [gone]}).status_code == 404
        assert c.get(f"/product/get_memory/{secret}", params={"mem_cube_id": gone}).status_code == 404
        assert c.post("/product/get_memory", json={"mem_cube_id": gone}).status_code == 404
        assert feed(c, cube=gone, **{"from": "beginning"})[0] == 404
        status, remaining = feed(c, **{"from": "beginning"})
        assert status == 200 and remaining
        assert all(json.loads(e["data"])["event"]["key"] == kept for e in remaining)
        assert all("quetzal" not in e["data"] for e in remaining)
        found = c.post("/product/search", json={**search, "readable_cube_ids": [kept]}).json()["data"]
        assert all("quetzal" not in m["memory"] for bucket in found["text_mem"] for m in bucket["memories"])
        assert c.get(f"/product/get_memory/{other}", params={"mem_cube_id": kept}).status_code == 200
    rt = server.app.state.runtime

    async def mentions() -> int:
        count = 0
        for topic in ALL_TOPICS:
            for partition in range(await rt.log.partitions(topic)):
                offset = 0
                while batch := await rt.log.read(topic, partition, offset, limit=1000):
                    count += sum(1 for r in batch if r.key == gone.encode() or b"quetzal-4711" in r.value)
                    offset = batch[-1].position.offset + 1
        return count

    assert server.call(mentions()) == 0
    assert server.call(rt.graph.get([secret])) == []


def test_body_user_id_must_match_the_key_unless_admin(
    server: BackgroundServer, world: dict[str, Any], bob: Tenant, unique: str
) -> None:
    with client_for(server, bob) as c:
        r = c.post(
            "/product/search", json={"user_id": "alice", "readable_cube_ids": [world["cube"]], "query": "q"}
        )
        assert r.status_code == 403 and "bob" in r.json()["message"]
    root = make_user(server, f"admin_{unique}", admin=True)
    with client_for(server, root) as c:
        r = c.post(
            "/product/search",
            json={
                "user_id": "alice",
                "readable_cube_ids": [world["cube"]],
                "query": "hotel",
                "relativity": 0,
            },
        )
        assert r.status_code == 200, r.text
        as_bob = c.post(
            "/product/search", json={"user_id": "bob", "readable_cube_ids": [world["cube"]], "query": "hotel"}
        )
        assert as_bob.status_code == 404


def test_revoked_keys_stop_working(server: BackgroundServer, world: dict[str, Any], unique: str) -> None:
    frank = make_user(server, f"frank_{unique}")
    with client_for(server, frank) as c:
        assert c.get("/product/scheduler/allstatus").status_code == 200
        key_id = frank.key.split("_")[1]
        server.call(service_of(server).revoke_key(key_id, user_id=frank.user_id))
        assert c.get("/product/scheduler/allstatus").status_code == 401


def test_oversize_bodies_are_413(server: BackgroundServer, alice: Tenant) -> None:
    big = json.dumps({"writable_cube_ids": ["alice_cube"], "messages": "x" * (MAX_BODY + 1)}).encode()
    with client_for(server, alice) as c:
        declared = c.post("/product/add", content=big, headers={"Content-Type": "application/json"})
        assert declared.status_code == 413 and declared.json()["code"] == 413
        chunked = c.post(
            "/product/add",
            content=iter([big[:1000], big[1000:]]),
            headers={"Content-Type": "application/json"},
        )
        assert chunked.status_code == 413
        assert "limit" in chunked.json()["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"user_id": "alice", "query": ', "body"),
        (b'{"user_id": "alice", "readable_cube_ids": ["alice_cube"]}', "query"),
        (b'{"user_id": "alice", "query": 5, "readable_cube_ids": ["alice_cube"]}', "query"),
        (b'{"user_id": "alice", "query": "q", "readable_cube_ids": "alice_cube"}', "readable_cube_ids"),
        (b'{"user_id": "alice", "query": "q", "readable_cube_ids": ["alice_cube"], "top_k": -1}', "top_k"),
        (
            b'{"user_id": "alice", "query": "q", "readable_cube_ids": ["alice_cube"], "readble_cube_ids": []}',
            "readble_cube_ids",
        ),
        (b'{"user_id": "alice", "query": "   ", "readable_cube_ids": ["alice_cube"]}', "query"),
        (b'{"query": "q", "readable_cube_ids": ["alice_cube"]}', "user_id"),
        (b"[1, 2]", "body"),
    ],
)
def test_bad_input_is_422_naming_the_field(
    server: BackgroundServer, alice: Tenant, world: dict[str, Any], body: bytes, field: str
) -> None:
    with client_for(server, alice) as c:
        r = c.post("/product/search", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    payload = r.json()
    assert payload["code"] == 422 and payload["data"] is None
    assert field in payload["message"], payload


def test_bad_query_parameters_are_422(server: BackgroundServer, alice: Tenant) -> None:
    with client_for(server, alice) as c:
        r = c.get("/v1/feed", params={"from": "yesterday"})
        assert r.status_code == 422 and "from" in r.json()["message"]
        r = c.get("/v1/feed", headers={"Last-Event-ID": "zero:one"}, params={"cube": "alice_cube"})
        assert r.status_code == 422 and "cursor" in r.json()["message"]
        r = c.get("/product/scheduler/wait", params={"timeout_seconds": 10_000})
        assert r.status_code == 422 and "timeout_seconds" in r.json()["message"]


def test_local_only_is_refused_for_remote_clients(tmp_path: Any) -> None:
    with live_server(tmp_path / "lo", local_only=True) as local:
        with client_for(local) as c:
            assert c.get("/product/scheduler/allstatus", params={"user_id": "x"}).status_code == 200
        state = local.app.state
        with pytest.raises(PermissionDenied, match="non-loopback"):
            local.call(resolve_caller(state, {}, "192.0.2.7"))
        assert local.call(resolve_caller(state, {}, "127.0.0.1")).user_id is None


def test_hostile_filters_and_feed_positions_are_refused_or_bounded(server: BackgroundServer, alice: Tenant) -> None:
    nested: dict[str, Any] = {"user_id": "alice"}
    for _ in range(330):  # the recursion that used to answer 500 or drop the connection
        nested = {"and": [nested]}
    with client_for(server, alice) as c:
        add = c.post("/product/add", json={
            "user_id": "alice", "writable_cube_ids": ["alice_like"], "mode": "fast", "async_mode": "sync",
            "messages": [{"role": "user", "content": "a" * 400}]})  # fmt: skip
        assert add.status_code == 200, add.text
        for route, body in (
            ("/product/get_memory", {"user_id": "alice", "mem_cube_id": "alice_like"}),
            ("/product/search", {"user_id": "alice", "query": "a", "readable_cube_ids": ["alice_like"]}),
            ("/product/delete_memory", {"user_id": "alice", "writable_cube_ids": ["alice_like"]}),
        ):
            r = c.post(route, json={**body, "filter": nested})
            assert r.status_code == 422 and "levels deep" in r.json()["message"], (route, r.text)
        # a pattern the backtracking regex took minutes on is answered now, and rightly
        listed = c.post("/product/get_memory", json={"user_id": "alice", "mem_cube_id": "alice_like",
                                                     "filter": {"memory": {"like": "%a%a%a%a%b%"}}})
        assert listed.status_code == 200 and listed.json()["data"]["total"] == 0, listed.text
        listed = c.post("/product/get_memory", json={"user_id": "alice", "mem_cube_id": "alice_like",
                                                     "filter": {"memory": {"like": "%a%a%a%a%"}}})
        assert listed.status_code == 200 and listed.json()["data"]["total"] >= 1, listed.text
        for params, headers, field in (
            ({"from": str(2**63)}, {}, "from"),
            ({"from": "²"}, {}, "from"),
            ({"cursor": f"0:{2**64}"}, {}, "cursor"),
            ({}, {"Last-Event-ID": f"{2**63}:1"}, "cursor"),
        ):
            r = c.get("/v1/feed", params={**params, "follow": "false"}, headers=headers)
            assert r.status_code == 422 and field in r.json()["message"], (params, headers, r.text)
