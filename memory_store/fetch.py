"""Fetcher port and HttpxFetcher: files and images on a caller's behalf, deny by default.

The policy (one place, :class:`HttpxFetcher`):

- ``data:`` URLs are decoded (size-limited) for every caller.
- ``http``/``https`` only to public addresses: every resolved address of every hop is checked
  (:mod:`memory_store.netguard`), redirects are followed by hand and re-checked (at most
  ``max_redirects``), and the connection goes to the checked address (no DNS rebinding). Hosts on
  ``allow_hosts`` (names or networks) are exempt. Environment proxies are used only when the proxy host is
  on ``allow_hosts``; otherwise nothing is fetched through them.
- Local files only for ``origin="local"`` (the in-process API) and only under ``local_roots`` (none by
  default). Requests that arrived over HTTP or MCP are ``origin="remote"``: never a local file.

Failures are FetchFailed. Whatever would tell a remote caller whether an internal port is open or a file
exists (refusals, DNS and connection errors, timeouts, missing files) reads the same: ``could not fetch
'<ref>'``; the reason goes to the server log. Errors from an allowed host (HTTP status, size, content
type) name the reason.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import mimetypes
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import httpx

from memory_store.netguard import AddressPolicy, GuardedBackend, Refused, pin, pinned
from schemas.errors import ConfigError, FetchFailed

__all__ = [
    "DEFAULT_FILE_TYPES",
    "DEFAULT_IMAGE_TYPES",
    "Fetched",
    "Fetcher",
    "HttpxFetcher",
    "Origin",
    "Purpose",
    "could_not_fetch",
]

logger = logging.getLogger(__name__)

Purpose = Literal["file", "image"]
Origin = Literal["remote", "local"]

DEFAULT_FILE_TYPES: tuple[str, ...] = (
    "text/",
    "application/pdf",
    "application/json",
    "application/xhtml+xml",
    "application/xml",
    "application/x-markdown",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/octet-stream",
    "binary/octet-stream",
)
"""Content types accepted for files (a prefix ending in "/" accepts the whole family)."""

DEFAULT_IMAGE_TYPES: tuple[str, ...] = ("image/", "application/octet-stream", "binary/octet-stream")
"""Content types accepted for images."""

_REDIRECTS = {301, 302, 303, 307, 308}


def could_not_fetch(ref: str) -> FetchFailed:
    """The one error a caller sees when a fetch is refused or fails before an allowed host answered."""
    return FetchFailed(f"could not fetch {ref[:200]!r}")


@dataclass(frozen=True, slots=True)
class Fetched:
    """Bytes of a fetched reference with the content type the source declared (or guessed from the name)."""

    data: bytes
    content_type: str | None
    name: str
    ref: str


class Fetcher(ABC):
    """Fetches the files and images that messages reference."""

    @abstractmethod
    async def fetch(self, ref: str, *, purpose: Purpose = "file", origin: Origin = "remote") -> Fetched:
        """Fetch ``ref`` (http(s) URL, ``data:`` URL, ``file://`` URL or local path) for ``purpose``.

        ``origin`` is where the request came from ("remote": HTTP or MCP; "local": the in-process API)
        and picks the policy. Raises FetchFailed. Never returns partial content: a body cut by a limit
        is an error.
        """

    async def aclose(self) -> None:
        """Release the HTTP client. Idempotent."""
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _allowed(content_type: str | None, allowed: Sequence[str]) -> bool:
    if not content_type:
        return True
    base = content_type.split(";", 1)[0].strip().lower()
    return any(base.startswith(a) if a.endswith("/") else base == a for a in allowed)


class HttpxFetcher(Fetcher):
    """Fetcher over httpx with the policy above, a size limit (streamed; aborts past ``max_bytes``), an
    overall time limit and content-type allow-lists per purpose.
    """

    def __init__(
        self,
        *,
        max_bytes: int = 20 * 1024 * 1024,
        timeout_s: float = 10.0,
        file_types: Sequence[str] = DEFAULT_FILE_TYPES,
        image_types: Sequence[str] = DEFAULT_IMAGE_TYPES,
        local_roots: Sequence[str | Path] = (),
        allow_hosts: Sequence[str] = (),
        max_redirects: int = 3,
    ) -> None:
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.types: dict[Purpose, tuple[str, ...]] = {"file": tuple(file_types), "image": tuple(image_types)}
        self.local_roots = tuple(Path(r).expanduser().resolve() for r in local_roots)
        self.policy = AddressPolicy.of(allow_hosts)
        self.max_redirects = max_redirects
        self._backend = GuardedBackend(self.policy)
        self._clients: dict[str | None, httpx.AsyncClient] = {}

    def _client(self, proxy: str | None) -> httpx.AsyncClient:
        client = self._clients.get(proxy)
        if client is None:
            transport = httpx.AsyncHTTPTransport(proxy=proxy)
            pool = transport._pool
            if not hasattr(pool, "_network_backend"):  # never fetch unguarded if httpcore changes shape
                raise ConfigError(
                    "this httpcore version has no network backend hook: the fetch guard cannot run"
                )
            pool._network_backend = self._backend  # every connection goes through the guard
            client = httpx.AsyncClient(
                transport=transport,
                timeout=httpx.Timeout(self.timeout_s),
                follow_redirects=False,
                trust_env=False,
                headers={"User-Agent": "memos-stream-fetcher/0.2"},
            )
            self._clients[proxy] = client
        return client

    async def fetch(self, ref: str, *, purpose: Purpose = "file", origin: Origin = "remote") -> Fetched:
        ref = ref.strip()
        if ref.startswith("@"):
            ref = ref[1:].strip()
        if not ref:
            raise FetchFailed("empty reference: nothing to fetch")
        lowered = ref.lower()
        if lowered.startswith("data:"):
            return self._data_url(ref, purpose)
        if lowered.startswith(("http://", "https://")):
            return await self._http(ref, purpose)
        if "://" in ref[:16] and not lowered.startswith("file://"):
            raise FetchFailed(f"unsupported URL scheme in {ref[:80]!r} (use http, https or data)")
        if origin != "local":
            logger.warning("fetch refused ref=%r: local files are not fetched for remote callers", ref[:200])
            raise could_not_fetch(ref)
        if lowered.startswith("file://"):
            return await self._local(urllib.parse.unquote(urllib.parse.urlsplit(ref).path), ref, purpose)
        return await self._local(ref, ref, purpose)

    def _check_type(self, content_type: str | None, ref: str, purpose: Purpose) -> None:
        if not _allowed(content_type, self.types[purpose]):
            what = "an image" if purpose == "image" else "a file"
            raise FetchFailed(f"unsupported content type {content_type!r} for {what} at {ref!r}")

    def _too_large(self, ref: str, size: int | str) -> FetchFailed:
        return FetchFailed(f"{ref!r} is too large: {size} bytes, over the limit of {self.max_bytes} bytes")

    def _data_url(self, ref: str, purpose: Purpose) -> Fetched:
        header, sep, payload = ref[5:].partition(",")
        if not sep:
            raise FetchFailed(f"malformed data URL {ref[:48]!r}: no comma")
        parts = header.split(";")
        mime = parts[0] or "text/plain"
        self._check_type(mime, ref[:48], purpose)
        if len(payload) * 3 // 4 > self.max_bytes:
            raise self._too_large(ref[:48], len(payload) * 3 // 4)
        try:
            data = (
                base64.b64decode(payload, validate=False)
                if "base64" in parts[1:]
                else urllib.parse.unquote_to_bytes(payload)
            )
        except (binascii.Error, ValueError) as exc:
            raise FetchFailed(f"malformed data URL {ref[:48]!r}: {exc}") from exc
        return Fetched(data, mime, "inline", ref[:48])

    async def _http(self, url: str, purpose: Purpose) -> Fetched:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError) as exc:
            raise FetchFailed(f"malformed URL {url[:200]!r}: {exc}") from exc
        if not parsed.host:
            raise FetchFailed(f"malformed URL {url[:200]!r}: no host")
        token = pinned.set(None)
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._follow(url, parsed, purpose)
        except TimeoutError as exc:
            logger.info("fetch timed out url=%s after %.1fs", url[:200], self.timeout_s)
            raise could_not_fetch(url) from exc
        finally:
            pinned.reset(token)

    async def _follow(self, url: str, current: httpx.URL, purpose: Purpose) -> Fetched:
        """Request ``current``, following redirects by hand; every hop is checked and pinned first."""
        for _ in range(self.max_redirects + 1):
            if current.scheme not in ("http", "https") or not current.host:
                logger.warning("fetch refused url=%s: redirect to %s", url[:200], str(current)[:200])
                raise could_not_fetch(url)
            port = current.port or (443 if current.scheme == "https" else 80)
            try:
                address = await self.policy.check(current.host, port)
            except Refused as exc:
                logger.warning("fetch refused url=%s hop=%s: %s", url[:200], str(current)[:200], exc)
                raise could_not_fetch(url) from exc
            pin([(current.host, address)])
            proxy = self._proxy_for(current)
            try:
                async with self._client(proxy).stream("GET", current) as response:
                    if response.status_code in _REDIRECTS and "location" in response.headers:
                        current = current.join(response.headers["location"])
                        continue
                    return await self._read_body(url, current, response, purpose)
            except FetchFailed:
                raise
            except httpx.HTTPError as exc:
                logger.info("fetch failed url=%s hop=%s: %s: %s", url[:200], current, type(exc).__name__, exc)
                raise could_not_fetch(url) from exc
        logger.info("fetch failed url=%s: more than %d redirects", url[:200], self.max_redirects)
        raise FetchFailed(f"too many redirects fetching {url[:200]!r} (at most {self.max_redirects})")

    def _proxy_for(self, url: httpx.URL) -> str | None:
        """The environment proxy for ``url`` (``None``: direct); used only when its host is allow-listed."""
        proxy = urllib.request.getproxies().get(url.scheme)
        if not proxy or urllib.request.proxy_bypass(url.host):
            return None
        host = urllib.parse.urlsplit(proxy).hostname or ""
        if not self.policy.host_allowed(host):
            logger.warning("fetch refused url=%s: proxy %s is not on the allow-list", url, host)
            raise could_not_fetch(str(url))
        return proxy

    async def _read_body(
        self, url: str, final: httpx.URL, response: httpx.Response, purpose: Purpose
    ) -> Fetched:
        if response.status_code >= 400:
            reason = response.reason_phrase or "error"
            raise FetchFailed(f"HTTP {response.status_code} {reason} fetching {url[:200]!r}")
        content_type = response.headers.get("content-type")
        self._check_type(content_type, url, purpose)
        declared = response.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > self.max_bytes:
            raise self._too_large(url, declared)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise self._too_large(url, f"more than {size}")
            chunks.append(chunk)
        name = urllib.parse.unquote(final.path.rsplit("/", 1)[-1]) or final.host
        logger.debug("fetched url=%s bytes=%d content_type=%s", url[:200], size, content_type)
        return Fetched(b"".join(chunks), content_type, name, url)

    async def _local(self, path_text: str, ref: str, purpose: Purpose) -> Fetched:
        try:
            path = Path(path_text).expanduser().resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            logger.info("fetch failed ref=%r: %s", ref[:200], exc)
            raise could_not_fetch(ref) from exc
        if not any(path.is_relative_to(root) for root in self.local_roots) or not path.is_file():
            logger.warning(
                "fetch refused ref=%r: not a file under the local roots %s", ref[:200], self.local_roots
            )
            raise could_not_fetch(ref)
        size = path.stat().st_size
        if size > self.max_bytes:
            raise self._too_large(ref, size)
        content_type = mimetypes.guess_type(path.name)[0]
        self._check_type(content_type, ref, purpose)
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            logger.info("fetch failed ref=%r: %s", ref[:200], exc)
            raise could_not_fetch(ref) from exc
        return Fetched(data, content_type, path.name, ref)

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
