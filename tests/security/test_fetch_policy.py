"""No file or network access on a caller's behalf: local files and internal addresses, through the real server.

Each case is an add over HTTP whose file part names a secret (a local file, or a page on an internal
loopback service). The add succeeds, the reference is recorded as a memory that says it could not be
fetched (type ``source_error``), the secret appears nowhere (memories, search, errors), and the internal
service saw no request.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from memos.server.app import BackgroundServer
from tests.security.conftest import SECRET, Tenant, add, memories_of
from tests.support.http_server import LocalHTTPServer, Route, serve

pytestmark = pytest.mark.timeout(900)


def _file_part(ref: str) -> dict[str, Any]:
    return {"type": "file", "file": {"filename": "notes.txt", "file_data": ref}}


def _attempt(client: Any, cube: str, refs: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One sync add naming every ref; returns the add body and the cube's memories."""
    messages = [{"role": "user", "content": [{"type": "text", "text": "Please read my notes."}, _file_part(r)]}
                for r in refs]  # fmt: skip
    body = add(client, cube, messages)
    return body, memories_of(client, cube)


def _assert_refused(body: dict[str, Any], memories: list[dict[str, Any]], refs: list[str]) -> None:
    shown = repr(body) + repr(memories)
    assert SECRET not in shown
    errors = [m for m in memories if (m.get("metadata") or {}).get("type") == "source_error"]
    assert errors, shown[:2000]
    for ref in refs:
        shown_ref = ref.removeprefix("@").strip()
        if shown_ref.startswith("file://"):
            shown_ref = urllib.parse.unquote(urllib.parse.urlsplit(shown_ref).path)
        assert f"could not fetch {shown_ref!r}" in shown, (ref, shown[:2000])
    for word in ("No such file", "Permission", "refused", "ConnectError", "errno", "resolves to"):
        assert word not in shown, word


def test_local_files_in_every_notation_are_refused(
    server: BackgroundServer, mallory: Tenant, secrets_dir: Path
) -> None:
    secret = secrets_dir / "passwd"
    relative = os.path.relpath(secret, Path.cwd())
    refs = [
        str(secret),
        "@" + str(secret),
        secret.as_uri(),
        "file://localhost" + str(secret),
        relative if relative.startswith("..") else "./" + relative,
        str(secrets_dir / ".." / secrets_dir.name / "passwd"),
        "/etc/passwd",
        "/proc/self/environ",
        str(
            Path(server.app.state.settings.home if hasattr(server.app.state, "settings") else "/") / "log.db"
        ),
    ]
    with mallory.client(server) as c:
        body, memories = _attempt(c, "mallory_files", refs)
        _assert_refused(body, memories, refs)
        r = c.post(
            "/product/search",
            json={"user_id": "mallory", "readable_cube_ids": ["mallory_files"], "query": "root:x:0:0"},
        )
        assert r.status_code == 200 and SECRET not in r.text and "root:x:0:0" not in r.text


LOOPBACK_SPELLINGS = ["127.0.0.1", "127.1", "2130706433", "0x7f000001", "0x7f.1", "[::ffff:127.0.0.1]",
                      "[::ffff:7f00:1]", "127.000.000.001", "0.0.0.0"]  # fmt: skip


def test_loopback_in_every_notation_is_refused(
    server: BackgroundServer, mallory: Tenant, secret_http: LocalHTTPServer
) -> None:
    port = secret_http.server_address[1]
    refs = [f"http://{host}:{port}/secret.md" for host in LOOPBACK_SPELLINGS]
    refs += [f"@http://127.0.0.1:{port}/secret.md", f"http://127.0.0.1:{server.port}/openapi.json"]
    with mallory.client(server) as c:
        body, memories = _attempt(c, "mallory_ssrf", refs)
    shown = repr(body) + repr(memories)
    assert SECRET not in shown
    assert not any('"paths"' in m["memory"] for m in memories)  # the server's own /openapi.json stayed out
    assert secret_http.requests == []
    errors = [m for m in memories if (m.get("metadata") or {}).get("type") == "source_error"]
    assert len({m["memory"] for m in errors}) >= 1
    for ref in refs:  # every reference is recorded (in a memory's text or sources), none fetched
        assert ref.removeprefix("@") in shown, ref


def test_a_redirect_to_an_internal_address_is_refused(
    server: BackgroundServer, mallory: Tenant, secret_http: LocalHTTPServer
) -> None:
    """The first hop is an allowed host (``localhost``); its redirect to 127.0.0.1 is checked again."""
    target = secret_http.url("/secret.md")
    with serve() as redirector:
        redirector.routes["/go"] = Route(b"", status=302, headers={"Location": target})
        redirector.routes["/fine.md"] = Route(
            b"# Public notes\nThe meeting moved to Tuesday.\n", "text/markdown"
        )
        hop = f"http://localhost:{redirector.server_address[1]}/go"
        allowed = f"http://localhost:{redirector.server_address[1]}/fine.md"
        with mallory.client(server) as c:
            body, memories = _attempt(c, "mallory_redirect", [hop, allowed])
        assert sorted(path for _, path in redirector.requests) == ["/fine.md", "/go"]  # fetched concurrently
    assert secret_http.requests == []
    assert SECRET not in repr(body) + repr(memories)
    said = " ".join(m["memory"] for m in memories)
    assert f"could not fetch {hop!r}" in said
    assert "The meeting moved to Tuesday." in said  # the allow-listed host itself is fetched


def test_an_open_port_and_a_closed_port_read_the_same(
    server: BackgroundServer, mallory: Tenant, secret_http: LocalHTTPServer
) -> None:
    open_ref = f"http://127.0.0.1:{secret_http.server_address[1]}/secret.md"
    closed_ref = "http://127.0.0.1:9/secret.md"
    with mallory.client(server) as c:
        _, first = _attempt(c, "mallory_ports_a", [open_ref])
        _, second = _attempt(c, "mallory_ports_b", [closed_ref])
    said = [
        next(m["memory"] for m in found if (m.get("metadata") or {}).get("type") == "source_error").replace(
            ref, "REF"
        )
        for found, ref in ((first, open_ref), (second, closed_ref))
    ]
    assert said[0] == said[1]
