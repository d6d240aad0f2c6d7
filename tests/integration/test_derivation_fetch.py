"""HttpxFetcher against a local HTTP server: files, images, limits and every failure mode."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from memory_store.fetch import HttpxFetcher
from schemas.errors import FetchFailed
from tests.support.examples import REPORT_MD
from tests.support.http_server import LocalHTTPServer, Route, serve


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
        srv.routes["/broken"] = Route(b"oops", status=500)
        yield srv


async def test_fetches_a_file_and_an_image(server: LocalHTTPServer) -> None:
    async with HttpxFetcher() as fetcher:
        got = await fetcher.fetch("@" + server.url("/report.md"))
        assert got.data == REPORT_MD.encode() and got.content_type == "text/markdown; charset=utf-8"
        assert got.name == "report.md"
        image = await fetcher.fetch(server.url("/pic.png"), purpose="image")
        assert image.data.startswith(b"\x89PNG") and image.content_type == "image/png"
        moved = await fetcher.fetch(server.url("/moved"))
        assert moved.data == REPORT_MD.encode()


async def test_http_errors_are_clear(server: LocalHTTPServer) -> None:
    async with HttpxFetcher(timeout_s=0.5, max_bytes=16 * 1024) as fetcher:
        with pytest.raises(
            FetchFailed, match=r"HTTP 404 Not Found fetching 'http://127\.0\.0\.1:\d+/missing\.md'"
        ):
            await fetcher.fetch(server.url("/missing.md"))
        with pytest.raises(FetchFailed, match="HTTP 500"):
            await fetcher.fetch(server.url("/broken"))
        with pytest.raises(FetchFailed, match=r"timed out after 0\.5s fetching"):
            await fetcher.fetch(server.url("/slow.md"))
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


async def test_malformed_and_unreachable_urls() -> None:
    async with HttpxFetcher(timeout_s=2.0) as fetcher:
        with pytest.raises(FetchFailed, match="malformed URL 'http:///nohost.md'"):
            await fetcher.fetch("http:///nohost.md")
        with pytest.raises(FetchFailed, match="malformed or unsupported URL 'gopher://x/y'"):
            await fetcher.fetch("gopher://x/y")
        with pytest.raises(FetchFailed, match="could not fetch 'http://127.0.0.1:9/x.md': ConnectError"):
            await fetcher.fetch("http://127.0.0.1:9/x.md")
        with pytest.raises(FetchFailed, match="empty reference"):
            await fetcher.fetch("  ")


async def test_data_urls(server: LocalHTTPServer) -> None:
    async with HttpxFetcher(max_bytes=100) as fetcher:
        got = await fetcher.fetch("data:text/plain;base64," + base64.b64encode(b"hello").decode())
        assert got.data == b"hello" and got.content_type == "text/plain"
        with pytest.raises(FetchFailed, match="too large"):
            await fetcher.fetch("data:text/plain;base64," + base64.b64encode(b"z" * 400).decode())
        with pytest.raises(FetchFailed, match="malformed data URL"):
            await fetcher.fetch("data:text/plain;base64")


async def test_local_paths_and_roots(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "notes.md").write_text("# Notes\n- one\n")
    (tmp_path / "secret.txt").write_text("no")
    async with HttpxFetcher(local_roots=[allowed]) as fetcher:
        got = await fetcher.fetch(str(allowed / "notes.md"))
        assert got.data == b"# Notes\n- one\n" and got.name == "notes.md"
        assert (await fetcher.fetch((allowed / "notes.md").as_uri())).data == got.data
        with pytest.raises(FetchFailed, match="outside the allowed roots"):
            await fetcher.fetch(str(tmp_path / "secret.txt"))
        with pytest.raises(FetchFailed, match="no such file"):
            await fetcher.fetch(str(allowed / "missing.md"))
    async with HttpxFetcher() as anywhere:
        assert (await anywhere.fetch(str(tmp_path / "secret.txt"))).data == b"no"
    async with HttpxFetcher(allow_local=False) as nowhere:
        with pytest.raises(FetchFailed, match="local paths are not allowed"):
            await nowhere.fetch(str(tmp_path / "secret.txt"))
    async with HttpxFetcher(max_bytes=3) as tiny:
        with pytest.raises(FetchFailed, match="too large: 14 bytes"):
            await tiny.fetch(str(allowed / "notes.md"))
