"""The MCP server (`memos mcp`) over stdio and streamable HTTP: add, search, delete, with tenancy."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from memos.application.service import MemoryService
from memos.runtime import Runtime
from streams.settings import load_settings

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[2]
CLI = ["-m", "memos"]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A data directory with alice and bob (keys issued) and a cube each, made before any server runs."""
    path = tmp_path_factory.mktemp("mcp_home")

    async def prepare() -> dict[str, Any]:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MEMOS_HOME", str(path))
            settings = load_settings("default")
        async with Runtime(settings, run_stages=False) as rt:
            service = MemoryService(rt)
            keys = {}
            for user in ("alice", "bob"):
                await service.create_user(user)
                await service.create_cube(f"{user}_cube", owner_id=user)
                keys[user] = await service.issue_key(user)
        return {"path": path, "keys": keys}

    import asyncio

    return asyncio.run(prepare())


def _env(home: dict[str, Any], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MEMOS_API_KEY"}
    env.update(
        {
            "MEMOS_HOME": str(home["path"]),
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        },
        **extra,
    )
    return env


def _text(result: Any) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


async def _exercise(client: Client, *, own: str, other: str) -> None:
    tools = {t.name for t in (await client.list_tools()).tools}
    assert {"add", "search", "delete"} <= tools

    added = await client.call_tool("add", {"content": "My passport expires in March 2031.", "cube_id": own})
    assert not added.is_error, _text(added)
    memories = added.structured_content["memories"]
    assert memories and memories[0]["cube_id"] == own
    memory_id = memories[0]["memory_id"]

    found = await client.call_tool("search", {"query": "When does my passport expire?", "cube_ids": [own]})
    assert not found.is_error, _text(found)
    ids = [m["id"] for bucket in found.structured_content["text_mem"] for m in bucket["memories"]]
    assert memory_id in ids

    foreign = await client.call_tool("search", {"query": "anything", "cube_ids": [other]})
    assert foreign.is_error and "404" in _text(foreign) and "not found" in _text(foreign)
    write_foreign = await client.call_tool("add", {"content": "sneaky", "cube_id": other})
    assert write_foreign.is_error and "404" in _text(write_foreign)
    unknown = await client.call_tool("search", {"query": "anything", "cube_ids": [f"no_such_cube_{own}"]})
    assert unknown.is_error  # an unknown cube and an unreadable one answer alike
    assert _text(unknown).replace(f"no_such_cube_{own}", other) == _text(foreign)
    wrong_cube = await client.call_tool("delete", {"cube_id": other, "memory_ids": [memory_id]})
    assert wrong_cube.is_error

    deleted = await client.call_tool("delete", {"cube_id": own, "memory_ids": [memory_id]})
    assert not deleted.is_error, _text(deleted)
    assert deleted.structured_content["deleted_ids"] == [memory_id]
    again = await client.call_tool("search", {"query": "When does my passport expire?", "cube_ids": [own]})
    assert memory_id not in [m["id"] for b in again.structured_content["text_mem"] for m in b["memories"]]


async def test_mcp_over_stdio_acts_as_the_key_user(home: dict[str, Any]) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=[*CLI, "mcp", "--transport", "stdio"],
        env=_env(home, MEMOS_API_KEY=home["keys"]["alice"]),
        cwd=str(ROOT),
    )
    async with Client(params, read_timeout_seconds=120) as client:
        await _exercise(client, own="alice_cube", other="bob_cube")


def test_stdio_refuses_to_start_without_an_identity(home: dict[str, Any]) -> None:
    done = subprocess.run(
        [sys.executable, *CLI, "mcp", "--transport", "stdio"],
        env=_env(home),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert "--api-key" in done.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


SESSIONS = 5
"""``door.mcp_sessions_per_user`` of the HTTP server these tests start (the default is 32)."""


@pytest.fixture
def http_mcp(home: dict[str, Any]) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, *CLI, "mcp", "--transport", "http", "--port", str(port)],
        env={**_env(home), "MEMOS_DOOR__MCP_SESSIONS_PER_USER": str(SESSIONS)},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + 240
    try:
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "exited"
            try:
                httpx.get(url, timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "MCP HTTP server did not start"
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


async def test_mcp_over_http_needs_a_key_and_acts_as_its_user(home: dict[str, Any], http_mcp: str) -> None:
    async with httpx.AsyncClient() as raw:
        refused = await raw.post(
            http_mcp,
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Accept": "application/json, text/event-stream"},
        )
        assert refused.status_code == 401
        bad = await raw.post(http_mcp, json={}, headers={"Authorization": "Bearer mk_x_y"})
        assert bad.status_code == 401
    headers = {"Authorization": f"Bearer {home['keys']['bob']}"}
    async with httpx2.AsyncClient(headers=headers, timeout=120) as http:
        async with Client(
            streamable_http_client(http_mcp, http_client=http), read_timeout_seconds=120
        ) as client:
            await _exercise(client, own="bob_cube", other="alice_cube")


_ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def _initialize(url: str, key: str) -> httpx.Response:
    from mcp.types import LATEST_PROTOCOL_VERSION

    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": LATEST_PROTOCOL_VERSION, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    return httpx.post(url, json=body, headers={**_ACCEPT, "Authorization": f"Bearer {key}"}, timeout=60)


def test_mcp_sessions_belong_to_their_key_and_a_user_holds_only_so_many(home: dict[str, Any], http_mcp: str) -> None:
    alice, bob = home["keys"]["alice"], home["keys"]["bob"]
    opened = _initialize(http_mcp, alice)
    assert opened.status_code == 200, opened.text
    session = opened.headers["mcp-session-id"]
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    stolen = httpx.post(http_mcp, json=ping, headers={**_ACCEPT, "Authorization": f"Bearer {bob}",
                                                      "mcp-session-id": session}, timeout=60)
    assert stolen.status_code == 404  # another key cannot use alice's session, as if it did not exist
    for _ in range(SESSIONS - 1):  # the setting, not the default, bounds them
        assert _initialize(http_mcp, alice).status_code == 200
    full = _initialize(http_mcp, alice)
    assert full.status_code == 429 and int(full.headers["retry-after"]) > 0, full.text
    assert "sessions" in full.json()["message"]
    assert _initialize(http_mcp, bob).status_code == 200  # bob is not held by alice's sessions
    closed = httpx.delete(http_mcp, headers={**_ACCEPT, "Authorization": f"Bearer {alice}",
                                             "mcp-session-id": session}, timeout=60)
    assert closed.status_code < 300, closed.text
    assert _initialize(http_mcp, alice).status_code == 200  # a closed session frees its place


def test_guessing_a_key_on_mcp_is_refused_with_429_never_500(home: dict[str, Any], http_mcp: str) -> None:
    key_id = home["keys"]["alice"].split("_")[1]
    statuses = [_initialize(http_mcp, f"mk_{key_id}_wrong{n}") for n in range(5)]
    assert all(r.status_code in (401, 429) for r in statuses), [(r.status_code, r.text[:100]) for r in statuses]
    assert any(r.status_code == 429 and r.headers.get("retry-after") for r in statuses), [
        r.status_code for r in statuses]
    assert _initialize(http_mcp, home["keys"]["bob"]).status_code == 200  # another key id is not held
