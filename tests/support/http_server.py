"""A threaded local HTTP server whose routes are set per test: bodies, statuses, delays, chunked streams."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["LocalHTTPServer", "Route", "serve"]

logger = logging.getLogger(__name__)


@dataclass
class Route:
    """What one path answers: ``body`` with ``content_type`` and ``status``, after ``delay_s``.

    ``chunked`` sends the body with chunked transfer encoding and no Content-Length; ``repeat`` sends it
    that many times (a large stream without holding it in memory); ``handler`` overrides everything
    and gets (method, path, headers, body) -> (status, content type, body).
    """

    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    status: int = 200
    delay_s: float = 0.0
    chunked: bool = False
    repeat: int = 1
    headers: dict[str, str] = field(default_factory=dict)
    handler: Callable[[str, str, dict[str, str], bytes], tuple[int, str, bytes]] | None = None


class LocalHTTPServer(ThreadingHTTPServer):
    """Serves ``routes`` on 127.0.0.1 at a free port; records every request as (method, path)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that hang up (a fetcher stopping at a limit); report anything else."""
        if isinstance(sys.exc_info()[1], ConnectionResetError | BrokenPipeError):
            return
        super().handle_error(request, client_address)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def url(self, path: str) -> str:
        """Absolute URL of ``path``."""
        return self.base_url + (path if path.startswith("/") else "/" + path)


class _Handler(BaseHTTPRequestHandler):
    server: LocalHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("test-http " + format, *args)

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        payload = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        with self.server.lock:
            self.server.requests.append((method, self.path))
            route = self.server.routes.get(path)
        if route is None:
            self._send(404, "text/plain", b"not found")
            return
        if route.delay_s:
            time.sleep(route.delay_s)
        if route.handler is not None:
            status, ctype, body = route.handler(method, path, dict(self.headers), payload)
            self._send(status, ctype, body)
            return
        if not route.chunked:
            self._send(route.status, route.content_type, route.body * route.repeat, route.headers)
            return
        self.send_response(route.status)
        self.send_header("Content-Type", route.content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for _ in range(route.repeat):
                self.wfile.write(f"{len(route.body):x}\r\n".encode() + route.body + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading (a size limit): that is the point of the test

    def _send(self, status: int, ctype: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")


@contextmanager
def serve() -> Iterator[LocalHTTPServer]:
    """Run a LocalHTTPServer in a thread for the duration of the block."""
    server = LocalHTTPServer()
    thread = threading.Thread(target=server.serve_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
