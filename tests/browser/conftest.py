"""Browser fixtures: a real memos server over a fresh home with two tenants, and headless Chromium.

The browser is Debian's ``chromium`` (``.ci/run`` installs it) driven by Playwright through
``executable_path``; ``playwright install`` is never needed. Without it the "browser" engine leg is
skipped, or fails when MEMOS_REQUIRE_ENGINES names it (CI does).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from memos.server.app import BackgroundServer, create_app
from streams.settings import load_settings
from tests.engines import required_engines

logger = logging.getLogger(__name__)

TRIP = [
    {"role": "user", "content": "I am planning a trip to Guangzhou this summer. Which chain hotels are there?",
     "message_id": "m-1", "chat_time": "2025-06-01 09:00"},
    {"role": "assistant", "content": "You could consider 7 Days Inn, Ji Hotel or Hilton.", "message_id": "m-2",
     "chat_time": "2025-06-01 09:01"},
    {"role": "user", "content": "I will choose 7 Days Inn because it is cheap.", "message_id": "m-3",
     "chat_time": "2025-06-01 09:02"},
]


def chromium_path() -> str:
    """The system Chromium; skip (or fail when the browser leg is required) when it is missing."""
    path = os.environ.get("MEMOS_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    reason = ""
    if not Path(path).is_file():
        reason = f"no chromium at {path!r} (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "the playwright package is not installed"
    if reason:
        if "browser" in required_engines():
            pytest.fail(f"engine leg 'browser' is required (MEMOS_REQUIRE_ENGINES) but {reason}")
        pytest.skip(f"engine leg 'browser' skipped: {reason}")
    return path


@dataclass(frozen=True)
class Tenant:
    """A user and its API key."""

    user_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class Console:
    """The running server and its tenants."""

    server: BackgroundServer
    ann: Tenant
    bob: Tenant

    @property
    def url(self) -> str:
        return self.server.url

    def add(self, tenant: Tenant, cube_id: str, messages: list[dict[str, Any]], *, mode: str = "fast"
            ) -> dict[str, Any]:
        """Add messages through the HTTP API (sync) and return the response body."""
        body = {"user_id": tenant.user_id, "writable_cube_ids": [cube_id], "messages": messages,
                "async_mode": "sync", "mode": mode}
        resp = httpx.post(f"{self.url}/product/add", json=body, headers=tenant.headers, timeout=120.0)
        assert resp.status_code == 200, resp.text
        result: dict[str, Any] = resp.json()
        return result


def _tenant(server: BackgroundServer, user_id: str, cube_id: str) -> Tenant:
    service = server.app.state.service
    server.call(service.create_user(user_id))
    server.call(service.create_cube(cube_id, owner_id=user_id))
    return Tenant(user_id, server.call(service.issue_key(user_id)))


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """A server with ann (cube ann_trips, three memories) and bob (cube bob_notes, one memory)."""
    chromium_path()
    home = tmp_path_factory.mktemp("console_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEMOS_HOME", str(home))
        mp.setenv("MEMOS_DERIVATION__KEEP_WINDOWS", "false")  # fine adds refine their windows: lineage to show
        server = BackgroundServer(create_app(load_settings("default"))).start()
    try:
        ann = _tenant(server, "ann", "ann_trips")
        bob = _tenant(server, "bob", "bob_notes")
        running = Console(server, ann, bob)
        running.add(ann, "ann_trips", TRIP)
        running.add(bob, "bob_notes", [{"role": "user", "content": "Bob keeps bees on the roof of his flat."}])
        yield running
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless system Chromium under Playwright."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=path, headless=True,
                                      args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (its own storage) at 1280x800, with every request URL recorded."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(30_000)
    tab = context.new_page()
    tab.requested = []
    tab.on("request", lambda request: tab.requested.append(request.url))
    try:
        yield tab
    finally:
        context.close()
