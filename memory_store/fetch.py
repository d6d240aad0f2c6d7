"""Fetcher port and HttpxFetcher: download files and images (http, https, data URLs, local paths) with limits.

Every failure is a FetchFailed whose message says what happened and to which reference: malformed
URL, HTTP status, timeout, too large, unsupported content type, missing or disallowed local file.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import mimetypes
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import httpx

from schemas.errors import FetchFailed

__all__ = ["DEFAULT_FILE_TYPES", "DEFAULT_IMAGE_TYPES", "Fetched", "Fetcher", "HttpxFetcher", "Purpose"]

logger = logging.getLogger(__name__)

Purpose = Literal["file", "image"]

DEFAULT_FILE_TYPES: tuple[str, ...] = (
    "text/",
    "application/pdf",
    "application/json",
    "application/xhtml+xml",
    "application/xml",
    "application/x-markdown",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/octet-stream",
    "binary/octet-stream",
)
"""Content types accepted for files (a prefix ending in "/" accepts the whole family)."""

DEFAULT_IMAGE_TYPES: tuple[str, ...] = ("image/", "application/octet-stream", "binary/octet-stream")
"""Content types accepted for images."""


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
    async def fetch(self, ref: str, *, purpose: Purpose = "file") -> Fetched:
        """Fetch ``ref`` (http(s) URL, ``data:`` URL, ``file://`` URL or local path) for ``purpose``.

        Raises FetchFailed with a message naming the reference and the reason. Never returns partial
        content: a body cut by a limit is an error.
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
    """Fetcher over httpx with a size limit (streamed; aborts past ``max_bytes``), an overall time limit,
    content-type allow-lists per purpose, and local paths limited to ``local_roots`` (None: anywhere;
    ``allow_local=False``: nowhere).
    """

    def __init__(
        self,
        *,
        max_bytes: int = 20 * 1024 * 1024,
        timeout_s: float = 10.0,
        file_types: Sequence[str] = DEFAULT_FILE_TYPES,
        image_types: Sequence[str] = DEFAULT_IMAGE_TYPES,
        allow_local: bool = True,
        local_roots: Sequence[str | Path] | None = None,
        max_redirects: int = 5,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.types: dict[Purpose, tuple[str, ...]] = {"file": tuple(file_types), "image": tuple(image_types)}
        self.allow_local = allow_local
        self.local_roots = None if local_roots is None else tuple(Path(r).resolve() for r in local_roots)
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=True,
            max_redirects=max_redirects,
            headers={"User-Agent": "memos-stream-fetcher/0.1"},
        )

    async def fetch(self, ref: str, *, purpose: Purpose = "file") -> Fetched:
        ref = ref.strip()
        if ref.startswith("@"):
            ref = ref[1:].strip()
        lowered = ref.lower()
        if lowered.startswith("data:"):
            return self._data_url(ref, purpose)
        if lowered.startswith(("http://", "https://")):
            return await self._http(ref, purpose)
        if lowered.startswith("file://"):
            return await self._local(urllib.parse.unquote(urllib.parse.urlsplit(ref).path), ref, purpose)
        if "://" in ref[:16]:
            raise FetchFailed(f"malformed or unsupported URL {ref!r} (use http, https, data, file or a path)")
        if not ref:
            raise FetchFailed("empty reference: nothing to fetch")
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
            raise FetchFailed(f"malformed URL {url!r}: {exc}") from exc
        if not parsed.host:
            raise FetchFailed(f"malformed URL {url!r}: no host")
        name = urllib.parse.unquote(parsed.path.rsplit("/", 1)[-1]) or parsed.host
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._client.stream("GET", parsed) as response:
                    if response.status_code >= 400:
                        reason = response.reason_phrase or "error"
                        raise FetchFailed(f"HTTP {response.status_code} {reason} fetching {url!r}")
                    content_type = response.headers.get("content-type")
                    self._check_type(content_type, url, purpose)
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > self.max_bytes:
                        raise self._too_large(url, declared)
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > self.max_bytes:
                            raise self._too_large(url, f"more than {size}")
                        chunks.append(chunk)
        except TimeoutError as exc:
            raise FetchFailed(f"timed out after {self.timeout_s:g}s fetching {url!r}") from exc
        except httpx.TimeoutException as exc:
            raise FetchFailed(f"timed out after {self.timeout_s:g}s fetching {url!r}") from exc
        except httpx.TooManyRedirects as exc:
            raise FetchFailed(f"too many redirects fetching {url!r}") from exc
        except httpx.InvalidURL as exc:
            raise FetchFailed(f"malformed URL {url!r}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise FetchFailed(f"could not fetch {url!r}: {type(exc).__name__}: {exc}") from exc
        logger.debug("fetched url=%s bytes=%d content_type=%s", url, size, content_type)
        return Fetched(b"".join(chunks), content_type, name, url)

    async def _local(self, path_text: str, ref: str, purpose: Purpose) -> Fetched:
        if not self.allow_local:
            raise FetchFailed(f"local paths are not allowed here: {ref!r}")
        path = Path(path_text).expanduser().resolve()
        if self.local_roots is not None and not any(path.is_relative_to(root) for root in self.local_roots):
            raise FetchFailed(f"local path {ref!r} is outside the allowed roots")
        if not path.is_file():
            raise FetchFailed(f"no such file: {ref!r}")
        size = path.stat().st_size
        if size > self.max_bytes:
            raise self._too_large(ref, size)
        content_type = mimetypes.guess_type(path.name)[0]
        self._check_type(content_type, ref, purpose)
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise FetchFailed(f"could not read {ref!r}: {exc}") from exc
        return Fetched(data, content_type, path.name, ref)

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()
