"""Reranker adapters: the lexical one, and the HTTP one against a local server speaking ``/rerank``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from memory_store.rerank import HttpReranker, LexicalReranker, reranker_from_url
from schemas.errors import ConfigError, ModelOutputInvalid, ModelUnavailable


async def test_lexical_reranker_orders_by_query_terms() -> None:
    reranker = LexicalReranker()
    docs = ["a grey cat named Pixel", "the cat sat", "printer jams", "Pixel the grey cat sleeps"]
    scores = await reranker.rerank("grey cat Pixel", docs)
    assert len(scores) == 4 and all(0.0 <= s <= 1.0 for s in scores)
    assert scores[2] == 0.0
    assert scores[0] > scores[1] and scores[3] > scores[1]
    assert scores[0] == max(scores) == scores[3]  # every term, and the bigram "grey cat"
    assert await reranker.rerank("anything", []) == []
    assert await reranker.rerank("?", ["x"]) == [0.0]


class _Handler(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]] = []
    mode = "ok"

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(
            {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
        )
        if self.mode == "down":
            self.send_response(503)
            self.end_headers()
            return
        if self.mode == "garbage":
            payload: Any = {"nothing": True}
        else:
            docs = body["documents"]
            scores = (
                [2.0 if "cat" in d else -2.0 for d in docs]
                if self.mode == "logits"
                else [0.9 if "cat" in d else 0.1 for d in docs]
            )
            results = [{"index": i, "relevance_score": s} for i, s in enumerate(scores)]
            payload = {"results": list(reversed(results))}
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.requests = []
    _Handler.mode = "ok"
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1/rerank"
    finally:
        httpd.shutdown()
        httpd.server_close()


async def test_http_reranker_speaks_the_rerank_protocol(server: str) -> None:
    reranker = reranker_from_url(server + "?model=bge-reranker", api_key="sk-test")
    assert isinstance(reranker, HttpReranker) and reranker.model_id == "bge-reranker"
    async with reranker:
        scores = await reranker.rerank("cat", ["a cat", "a dog"])
        assert scores == [0.9, 0.1]  # results come back reordered; scores follow the input order
        _Handler.mode = "logits"
        logits = await reranker.rerank("cat", ["a cat", "a dog"])
        assert logits[0] > 0.8 and logits[1] < 0.2
        _Handler.mode = "garbage"
        with pytest.raises(ModelOutputInvalid):
            await reranker.rerank("cat", ["a cat"])
        _Handler.mode = "down"
        with pytest.raises(ModelUnavailable):
            await reranker.rerank("cat", ["a cat"])
        assert await reranker.rerank("cat", []) == []
    first = _Handler.requests[0]
    assert first["path"] == "/v1/rerank" and first["auth"] == "Bearer sk-test"
    assert first["body"] == {
        "query": "cat",
        "documents": ["a cat", "a dog"],
        "top_n": 2,
        "model": "bge-reranker",
    }


async def test_unreachable_reranker_is_unavailable() -> None:
    async with HttpReranker("http://127.0.0.1:9/rerank", timeout_s=2.0) as reranker:
        with pytest.raises(ModelUnavailable):
            await reranker.rerank("q", ["d"])


def test_reranker_from_url() -> None:
    assert reranker_from_url(None) is None and reranker_from_url("") is None
    assert isinstance(reranker_from_url("lexical://"), LexicalReranker)
    with pytest.raises(ConfigError):
        reranker_from_url("ftp://x/rerank")
