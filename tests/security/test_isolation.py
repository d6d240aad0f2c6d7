"""One tenant's hostile adds cannot stall another tenant or the server: bombs become memories that say so.

Mallory adds (sync, fast mode, from five threads at once) a zip-bomb docx, a PDF whose stream inflates to 200 MB, a deeply nested
JSON file, a 20 MB file of NULs (fetched from an allowed host) and 2,000 messages. Meanwhile Alice
searches her own cube. The bound is checked on observable state, not on a clock: Alice's searches
answer, correctly, while Mallory's adds have not returned yet (so they were not queued behind them), and
the server's peak memory grows by far less than the inputs would inflate to. The timings are in
``python -m bench.load``.
"""

from __future__ import annotations

import base64
import io
import resource
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from memos.server.app import BackgroundServer
from tests.security.conftest import Tenant, add, memories_of
from tests.support.http_server import Route, serve

pytestmark = pytest.mark.timeout(1200)

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def zip_bomb_docx(inflated: int = 256 * 1024 * 1024, *, member: str = "word/document.xml") -> bytes:
    """A docx-shaped zip (another Office kind by ``member``) whose member inflates to ``inflated`` bytes (about
    250 KB on the wire)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        with archive.open(member, "w", force_zip64=True) as inflating:
            block = b" " * (1024 * 1024)
            for _ in range(inflated // len(block)):
                inflating.write(block)
    return out.getvalue()


def pdf_bomb(inflated: int = 200 * 1024 * 1024) -> bytes:
    """A one-object PDF whose Flate stream inflates to ``inflated`` bytes."""
    squeezer = zlib.compressobj(9)
    payload = b"".join(squeezer.compress(b"\0" * (1024 * 1024)) for _ in range(inflated // (1024 * 1024)))
    payload += squeezer.flush()
    head = (
        b"%PDF-1.4\n1 0 obj\n<< /Length " + str(len(payload)).encode() + b" /Filter /FlateDecode >>\nstream\n"
    )
    return head + payload + b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def file_message(name: str, ref: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "file", "file": {"filename": name, "file_data": ref}}]}


def test_hostile_adds_do_not_stall_another_tenant(
    server: BackgroundServer, mallory: Tenant, alice: Tenant
) -> None:
    with alice.client(server) as a:
        add(a, "alice_home", "I keep the spare key under the blue flowerpot by the door.")
    nested = b"[" * 50_000 + b"]" * 50_000
    with serve() as files, alice.client(server) as a, ThreadPoolExecutor(5) as pool:
        files.routes["/nul.txt"] = Route(b"\0" * (1024 * 1024), "text/plain", repeat=20)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        hostile = [
            [file_message("bomb.docx", data_url(DOCX, zip_bomb_docx()))],
            [file_message("bomb.pdf", data_url("application/pdf", pdf_bomb()))],
            [file_message("nested.json", data_url("application/json", nested))],
            [file_message("nul.txt", f"http://localhost:{files.server_address[1]}/nul.txt")],
            [{"role": "user", "content": f"Message {n}: the weather report number {n} says rain."}
             for n in range(2000)],
        ]  # fmt: skip

        def hostile_add(messages: list[dict[str, Any]]) -> dict[str, Any]:
            with mallory.client(server) as m:
                return add(m, "mallory_bombs", messages)  # sync, fast: returns when its memories are stored

        pending = [pool.submit(hostile_add, messages) for messages in hostile]
        overlapped = searches = 0
        while not all(f.done() for f in pending) and searches < 500:
            r = a.post("/product/search", json={"user_id": "alice", "readable_cube_ids": ["alice_home"],
                                                "query": "Where is the spare key?"})  # fmt: skip
            searches += 1
            assert r.status_code == 200, r.text
            assert "blue flowerpot" in r.text
            assert a.get("/healthz").status_code == 200
            overlapped += any(not f.done() for f in pending)  # answered while hostile work was unfinished
        assert overlapped >= 1, "every hostile add finished before the first search: nothing was measured"
        for future in pending:
            assert future.result()["code"] == 200
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        assert files.requests == [("GET", "/nul.txt")]
        with mallory.client(server) as m:
            memories = memories_of(m, "mallory_bombs")
    assert grown < 600 * 1024 * 1024, f"server peak memory grew by {grown / 2**20:.0f} MB"
    said = {m["memory"] for m in memories}
    errors = " ".join(
        m["memory"] for m in memories if (m.get("metadata") or {}).get("type") == "source_error"
    )
    assert "bomb.docx" in errors and "over budget" in errors and "inflate" in errors
    assert "bomb.pdf" in errors and "PDF streams" in errors
    assert "nested.json" in errors and "nul.txt" in errors
    assert any("weather report number 1999" in text for text in said)  # the 2,000 messages were all read
