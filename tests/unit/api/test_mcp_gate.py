"""The MCP HTTP gate's count of a user's sessions: a session held open only by a long GET stream stays counted
(it used to leave the count after the idle time while the stream, and the session, went on)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import memos.server.mcp as mcp
from memos.server.auth import Caller
from memos.server.mcp import KeyGate


class Auth:
    async def authenticate(self, key: str) -> Caller | None:
        return Caller(user_id="alice", key_id="k1") if key == "mk_k1_secret" else None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _scope(method: str, session: str | None = None) -> dict[str, Any]:
    headers = [(b"authorization", b"Bearer mk_k1_secret")]
    if session:
        headers.append((b"mcp-session-id", session.encode()))
    return {"type": "http", "method": method, "path": "/mcp", "headers": headers}


async def _call(gate: KeyGate, scope: dict[str, Any]) -> int:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await gate(scope, receive, send)
    return int(sent[0]["status"])


async def test_a_session_streaming_past_the_idle_time_stays_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, streaming, release = Clock(), asyncio.Event(), asyncio.Event()
    monkeypatch.setattr(mcp.time, "monotonic", clock)
    opened = iter(["s1", "s2"])

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["method"] == "GET":  # the server's stream of a session: open until the test lets it end
            await send({"type": "http.response.start", "status": 200, "headers": []})
            streaming.set()
            await release.wait()
        else:  # a new session
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"mcp-session-id", next(opened).encode())]})
        await send({"type": "http.response.body", "body": b""})

    gate = KeyGate(app, Auth(), required=True, per_user=1, idle_s=600.0)  # type: ignore[arg-type]
    assert await _call(gate, _scope("POST")) == 200
    stream = asyncio.create_task(_call(gate, _scope("GET", "s1")))
    await streaming.wait()
    clock.now += 3600  # an hour of streaming, no other request
    assert await _call(gate, _scope("POST")) == 429  # s1 is still alice's one session
    release.set()
    assert await stream == 200
    clock.now += 599  # idle counts from the end of its stream
    assert await _call(gate, _scope("POST")) == 429
    clock.now += 2
    assert await _call(gate, _scope("POST")) == 200  # idle past the limit: its place is free
