"""A real HTTP server (uvicorn on loopback) configured as deployed, plus local servers that hold secrets.

The fetch allow-list names only ``localhost``: files a test wants fetched (the seed's remote files, the
bombs) are served at ``http://localhost:PORT``; the secrets are served at ``127.0.0.1`` and every other
spelling of loopback, which the policy must refuse. The socket guard (tests/conftest.py) keeps the whole
suite on loopback.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from memos.server.app import BackgroundServer, create_app
from streams.settings import load_settings
from tests.support.http_server import LocalHTTPServer, Route, serve

SECRET = f"SECRET-{uuid.uuid4().hex}"
"""A marker that must never appear in any memory, search result or error."""


@dataclass(frozen=True)
class Tenant:
    """A user with an API key."""

    user_id: str
    key: str

    def client(self, server: BackgroundServer) -> httpx.Client:
        return httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=300.0
        )


def start_server(home: Path, *, door: dict[str, Any] | None = None, **derivation: Any) -> BackgroundServer:
    """The HTTP server over a fresh home with the given derivation (and door) settings (API keys on)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEMOS_HOME", str(home))
        settings = load_settings("default")
        settings = settings.model_copy(
            update={"derivation": settings.derivation.model_copy(update=derivation),
                    "door": settings.door.model_copy(update=door or {})}
        )
        return BackgroundServer(create_app(settings)).start()


def tenant(server: BackgroundServer, user_id: str) -> Tenant:
    service = server.app.state.service
    server.call(service.create_user(user_id, role="user"))
    return Tenant(user_id, server.call(service.issue_key(user_id)))


@pytest.fixture(scope="package")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("secrets")
    (folder / "passwd").write_text(f"root:x:0:0:{SECRET}:/root:/bin/bash\n")
    return folder


@pytest.fixture(scope="package")
def secret_http() -> Iterator[LocalHTTPServer]:
    """An internal service with a secret page, and a redirector that points at it."""
    with serve() as srv:
        srv.routes["/secret.md"] = Route(f"# internal\n{SECRET}\n".encode(), "text/markdown")
        yield srv


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    running = start_server(
        tmp_path_factory.mktemp("security_home"),
        fetch_allow_hosts=["localhost"],
        fetch_timeout_s=10.0,
        parse_memory_mb=512,
        parse_timeout_s=30.0,
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="package")
def mallory(server: BackgroundServer) -> Tenant:
    return tenant(server, "mallory")


@pytest.fixture(scope="package")
def alice(server: BackgroundServer) -> Tenant:
    return tenant(server, "alice")


def add(
    client: httpx.Client, cube: str, messages: Any, *, mode: str = "fast", sync: bool = True
) -> dict[str, Any]:
    """POST /product/add; returns the response body (asserts 200)."""
    r = client.post(
        "/product/add",
        json={"writable_cube_ids": [cube], "messages": messages, "mode": mode,
              "async_mode": "sync" if sync else "async"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def memories_of(client: httpx.Client, cube: str) -> list[dict[str, Any]]:
    """Every memory of ``cube`` (all kinds), through POST /product/get_memory."""
    r = client.post("/product/get_memory", json={"mem_cube_id": cube})
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("memory"), str):
                found.append(node)
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(r.json()["data"])
    return found
