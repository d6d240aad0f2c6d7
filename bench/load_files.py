"""Hostile inputs of ``bench.load``'s hostile phase: a zip-bomb docx and a loopback server of a file of NULs."""

from __future__ import annotations

import io
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["nul_file_server", "zip_bomb_docx"]


def zip_bomb_docx(inflated: int = 256 * 1024 * 1024) -> bytes:
    """A docx-shaped zip whose document.xml inflates to ``inflated`` bytes."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            block = b" " * (1024 * 1024)
            for _ in range(inflated // len(block)):
                member.write(block)
    return out.getvalue()


@contextmanager
def nul_file_server(size: int = 20 * 1024 * 1024) -> Iterator[str]:
    """A loopback HTTP server whose /nul.txt is ``size`` NUL bytes; yields its base URL (``localhost``)."""
    body = b"\0" * size

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/nul.txt" else 404)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body) if self.path == "/nul.txt" else 0))
            self.end_headers()
            if self.path == "/nul.txt":
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
