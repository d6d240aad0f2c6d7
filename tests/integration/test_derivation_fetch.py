"""HttpxFetcher against local HTTP servers: files, images, limits, and the deny-by-default policy.

The test servers listen on 127.0.0.1, which the policy refuses; tests that need them put 127.0.0.1 on the
allow-list, and the policy tests leave it off.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from memory_store.fetch import HttpxFetcher
from memory_store.netguard import AddressPolicy, blocked_address
from schemas.errors import FetchFailed
from tests.support.examples import REPORT_MD
from tests.support.http_server import LocalHTTPServer, Route, serve

LOOPBACK = ["127.0.0.1"]


@pytest.fixture
def server() -> Iterator[LocalHTTPServer]:
    with serve() as srv:
        srv.routes["/report.md"] = Route(REPORT_MD.encode(), "text/markdown; charset=utf-8")
        srv.routes["/pic.png"] = Route(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "image/png")
        srv.routes["/slow.md"] = Route(b"late", "text/markdown", delay_s=1.5)
        srv.routes["/big.txt"] = Route(b"x" * 1024, "text/plain", repeat=64)
        srv.routes["/stream.txt"] = Route(b"y" * 1024, "text/plain", chunked=True, repeat=256)
        srv.routes["/archive.zip"] = Route(b"PK\x03\x04", "application/zip")
        srv.routes["/moved"] = Route(b"", status=302, headers={"Location": "/report.md"})
        srv.routes["/loop"] = Route(b"", status=302, headers={"Location": "/loop"})
        srv.routes["/broken"] = Route(b"oops", status=500)
        yield srv


async def test_fetches_a_file_and_an_image_from_an_allowed_host(server: LocalHTTPServer) -> None:
    async with HttpxFetcher(allow_hosts=LOOPBACK) as fetcher:
        got = await fetcher.fetch("@" + server.url("/report.md"))
        assert got.data == REPORT_MD.encode() and got.content_type == "text/markdown; charset=utf-8"
        assert got.name == "report.md"
        image = await fetcher.fetch(server.url("/pic.png"), purpose="image")
        assert image.data.startswith(b"\x89PNG") and image.content_type == "image/png"
        moved = await fetcher.fetch(server.url("/moved"))
        assert moved.data == REPORT_MD.encode() and moved.name == "report.md"


async def test_errors_from_an_allowed_host_are_clear(server: LocalHTTPServer) -> None:
    async with HttpxFetcher(timeout_s=0.5, allow_hosts=LOOPBACK) as impatient:  # /slow.md answers after 1.5 s
        with pytest.raises(FetchFailed, match=r"^could not fetch 'http://127\.0\.0\.1:\d+/slow\.md'$"):
            await impatient.fetch(server.url("/slow.md"))
    async with HttpxFetcher(  # a timeout no answer of a busy two-core machine comes near
        timeout_s=10.0, max_bytes=16 * 1024, allow_hosts=LOOPBACK, max_redirects=2
    ) as fetcher:
        with pytest.raises(
            FetchFailed, match=r"HTTP 404 Not Found fetching 'http://127\.0\.0\.1:\d+/missing\.md'"
        ):
            await fetcher.fetch(server.url("/missing.md"))
        with pytest.raises(FetchFailed, match="HTTP 500"):
            await fetcher.fetch(server.url("/broken"))
        with pytest.raises(FetchFailed, match=r"too large: 65536 bytes, over the limit of 16384 bytes"):
            await fetcher.fetch(server.url("/big.txt"))
        with pytest.raises(FetchFailed, match=r"too large: more than \d+ bytes, over the limit of 16384"):
            await fetcher.fetch(server.url("/stream.txt"))
        with pytest.raises(FetchFailed, match="unsupported content type 'application/zip' for a file"):
            await fetcher.fetch(server.url("/archive.zip"))
        with pytest.raises(
            FetchFailed, match="unsupported content type 'text/markdown; charset=utf-8' for an image"
        ):
            await fetcher.fetch(server.url("/report.md"), purpose="image")
        with pytest.raises(FetchFailed, match=r"too many redirects .* \(at most 2\)"):
            await fetcher.fetch(server.url("/loop"))


async def test_malformed_and_unsupported_references() -> None:
    async with HttpxFetcher(timeout_s=2.0) as fetcher:
        with pytest.raises(FetchFailed, match="malformed URL 'http:///nohost.md'"):
            await fetcher.fetch("http:///nohost.md")
        with pytest.raises(FetchFailed, match="unsupported URL scheme in 'gopher://x/y'"):
            await fetcher.fetch("gopher://x/y")
        with pytest.raises(FetchFailed, match="empty reference"):
            await fetcher.fetch("  ")


async def test_data_urls() -> None:
    async with HttpxFetcher(max_bytes=100) as fetcher:
        got = await fetcher.fetch("data:text/plain;base64," + base64.b64encode(b"hello").decode())
        assert got.data == b"hello" and got.content_type == "text/plain"
        with pytest.raises(FetchFailed, match="too large"):
            await fetcher.fetch("data:text/plain;base64," + base64.b64encode(b"z" * 400).decode())
        with pytest.raises(FetchFailed, match="malformed data URL"):
            await fetcher.fetch("data:text/plain;base64")


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "127.1", "2130706433", "0x7f000001", "0177.0.0.1", "[::1]", "[::ffff:127.0.0.1]",
     "0.0.0.0", "10.1.2.3", "192.168.0.1", "172.16.0.1", "169.254.169.254", "100.100.100.200", "[fd00:ec2::254]",
     "224.0.0.1", "240.0.0.1", "100.64.0.1", "[64:ff9b::7f00:1]", "[2002:7f00:1::]"],
)  # fmt: skip
async def test_internal_addresses_are_refused_in_every_notation(server: LocalHTTPServer, host: str) -> None:
    """Refused before any connection, with the same message whether or not something listens there."""
    port = server.server_address[1]
    async with HttpxFetcher(timeout_s=2.0) as fetcher:
        with pytest.raises(FetchFailed) as caught:
            await fetcher.fetch(f"http://{host}:{port}/report.md")
    url = f"http://{host}:{port}/report.md"
    assert str(caught.value) == f"could not fetch {url!r}" or str(caught.value).startswith(
        f"malformed URL {url!r}"
    )
    assert server.requests == []


async def test_an_open_port_and_a_closed_one_read_the_same(server: LocalHTTPServer) -> None:
    open_url, closed_url = server.url("/report.md"), "http://127.0.0.1:9/report.md"
    async with HttpxFetcher(timeout_s=2.0) as fetcher:
        messages = []
        for url in (open_url, closed_url):
            with pytest.raises(FetchFailed) as caught:
                await fetcher.fetch(url)
            messages.append(str(caught.value).replace(url, "URL"))
    assert messages == ["could not fetch 'URL'", "could not fetch 'URL'"]


def test_address_classification() -> None:
    import ipaddress

    assert blocked_address(ipaddress.ip_address("93.184.216.34")) is None
    assert blocked_address(ipaddress.ip_address("2606:4700::1111")) is None
    assert "loopback" in (blocked_address(ipaddress.ip_address("::ffff:127.0.0.1")) or "")
    assert "metadata" in (blocked_address(ipaddress.ip_address("169.254.169.254")) or "")
    policy = AddressPolicy.of(["10.0.0.0/8", "Files.Internal."])
    assert policy.host_allowed("10.2.3.4") and policy.host_allowed("files.internal")
    assert not policy.host_allowed("11.0.0.1") and not policy.host_allowed("localhost")


async def test_local_files_only_for_local_callers_and_only_under_the_roots(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "notes.md").write_text("# Notes\n- one\n")
    (tmp_path / "secret.txt").write_text("no")
    (allowed / "link.txt").symlink_to(tmp_path / "secret.txt")
    async with HttpxFetcher(local_roots=[allowed]) as fetcher:
        got = await fetcher.fetch(str(allowed / "notes.md"), origin="local")
        assert got.data == b"# Notes\n- one\n" and got.name == "notes.md"
        assert (await fetcher.fetch((allowed / "notes.md").as_uri(), origin="local")).data == got.data
        refused = [
            (str(allowed / "notes.md"), "remote"),  # under the roots, but asked for by a remote caller
            ((allowed / "notes.md").as_uri(), "remote"),
            (str(tmp_path / "secret.txt"), "local"),  # outside the roots
            (str(allowed / "link.txt"), "local"),  # a link out of the roots
            (str(allowed / ".." / "secret.txt"), "local"),
            (str(allowed / "missing.md"), "local"),  # missing: reads like a refusal
            ("/etc/passwd", "remote"),
        ]
        for ref, origin in refused:
            with pytest.raises(FetchFailed) as caught:
                await fetcher.fetch(ref, origin=origin)  # type: ignore[arg-type]
            assert str(caught.value) == f"could not fetch {ref!r}", ref
    async with HttpxFetcher() as no_roots:
        with pytest.raises(FetchFailed, match="could not fetch"):
            await no_roots.fetch(str(allowed / "notes.md"), origin="local")
    async with HttpxFetcher(max_bytes=3, local_roots=[allowed]) as tiny:
        with pytest.raises(FetchFailed, match="too large: 14 bytes"):
            await tiny.fetch(str(allowed / "notes.md"), origin="local")


async def test_an_environment_proxy_is_used_only_when_allow_listed(
    server: LocalHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy resolves names itself, so it is trusted only by name; otherwise nothing is sent through it."""
    monkeypatch.setenv("HTTP_PROXY", server.base_url)
    monkeypatch.setenv("NO_PROXY", "")
    async with HttpxFetcher(timeout_s=2.0) as fetcher:
        with pytest.raises(FetchFailed, match=r"^could not fetch 'http://93\.184\.216\.34/x\.md'$"):
            await fetcher.fetch("http://93.184.216.34/x.md")
    assert server.requests == []
    async with HttpxFetcher(timeout_s=2.0, allow_hosts=LOOPBACK) as fetcher:
        with pytest.raises(FetchFailed, match="HTTP 404"):
            await fetcher.fetch("http://93.184.216.34/x.md")
    assert server.requests == [("GET", "http://93.184.216.34/x.md")]


async def test_connections_go_only_to_the_checked_address(server: LocalHTTPServer) -> None:
    """The guard sits in httpx's connection path: nothing unchecked connects, a pinned name never re-resolves."""
    import httpcore

    from memory_store.netguard import GuardedBackend, pin, pinned

    port = server.server_address[1]
    backend = GuardedBackend(AddressPolicy.of())
    with pytest.raises(httpcore.ConnectError, match="was not checked"):
        await backend.connect_tcp("127.0.0.1", port)
    token = pin([("rebound.invalid", "127.0.0.1")])  # a name DNS cannot answer: only the pin can
    try:
        stream = await backend.connect_tcp("rebound.invalid", port)
        await stream.aclose()
    finally:
        pinned.reset(token)
    async with HttpxFetcher() as fetcher:
        client = fetcher._client(None)
        with pytest.raises(httpx.ConnectError):
            await client.get(server.url("/report.md"))  # the fetcher's own client, used without a check
    assert server.requests == []
