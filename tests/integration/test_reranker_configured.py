"""A reranker named in the settings (``derivation.reranker_url``) reorders fine-mode searches; fast mode stays
unreranked unless asked, and a reranker that fails leaves search answering in its own order."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from memory_store.rerank import reranker_from_url
from memos.application.search import RERANKER_PAUSE_S
from memos.application.service import MemoryService
from memos.runtime import Runtime
from schemas.errors import ConfigError
from streams.settings import AppSettings, load_settings
from tests.support.http_server import Route, serve

TEXTS = [
    "We booked a hotel near the old harbour for the summer trip.",
    "The hotel breakfast had fresh pastries and strong coffee.",
    "On the trip we rented a kayak and paddled to the sea caves.",
]


def _route(seen: list[dict[str, Any]], state: dict[str, int]) -> Route:
    """A local server speaking TEI's /rerank: documents naming a kayak score 0.9, the rest 0.1."""

    def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        request = json.loads(body)
        seen.append(request)
        if state["status"] != 200:
            return state["status"], "application/json", b'{"error": "overloaded"}'
        scores = [{"index": i, "score": 0.9 if "kayak" in d else 0.1} for i, d in enumerate(request["documents"])]
        return 200, "application/json", json.dumps(scores).encode()

    return Route(handler=handle)


def _memories(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for group in data["text_mem"] for m in group["memories"]]


async def test_a_configured_reranker_reorders_fine_searches_and_its_outage_degrades(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[dict[str, Any]] = []
    state = {"status": 200}
    with serve() as server:
        server.routes["/rerank"] = _route(seen, state)
        url = f"http://127.0.0.1:{server.server_address[1]}/rerank?model=bge-reranker"
        settings = AppSettings(home=tmp_path, derivation={"reranker_url": url})
        async with Runtime(settings) as rt:
            service = MemoryService(rt)
            for text in TEXTS:
                await service.add("ann", ["trips"], [{"role": "user", "content": text}], mode="fast")
            query = "Which hotel did we book for the trip?"
            fast = _memories(await service.search("ann", ["trips"], query, mode="fast"))
            assert seen == []  # fast mode is not reranked by default: no call
            assert "kayak" not in fast[0]["memory"]
            assert all("rerank" not in m["metadata"]["score_parts"] for m in fast)

            fine = _memories(await service.search("ann", ["trips"], query, mode="fine"))
            assert "kayak" in fine[0]["memory"]  # the reranker's 0.9 outweighs the retrievers' order
            assert fine[0]["metadata"]["score_parts"]["rerank"] == 0.9
            assert seen[-1]["model"] == "bge-reranker" and seen[-1]["query"] == query
            assert len(seen[-1]["documents"]) == len(TEXTS)

            state["status"] = 503
            with caplog.at_level(logging.WARNING, logger="memos.application.search"):
                degraded = _memories(await service.search("ann", ["trips"], query, mode="fine"))
            assert [m["id"] for m in degraded] == [m["id"] for m in fast]  # the retrievers' own order
            assert all("rerank" not in m["metadata"]["score_parts"] for m in degraded)
            assert any("reranker" in r.getMessage() and "503" in r.getMessage() for r in caplog.records)
            asked = len(seen)
            state["status"] = 200
            paused = _memories(await service.search("ann", ["trips"], query, mode="fine"))
            assert len(seen) == asked and "kayak" not in paused[0]["memory"]  # not asked again for a while
            real = rt.search_service.clock
            rt.search_service.clock = lambda: real() + RERANKER_PAUSE_S  # the pause has passed
            back = _memories(await service.search("ann", ["trips"], query, mode="fine"))
            assert len(seen) == asked + 1 and "kayak" in back[0]["memory"]


async def test_a_reranker_url_with_an_unknown_scheme_or_a_key_in_a_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="reranker URL scheme 'ftp'"):
        async with Runtime(AppSettings(home=tmp_path, derivation={"reranker_url": "ftp://host/rerank"})):
            pass
    for bad in ("0", "-1", "soon", "301"):
        with pytest.raises(ConfigError, match="invalid timeout in reranker URL"):
            reranker_from_url(f"http://127.0.0.1:9/rerank?model=m&timeout={bad}")
    config = tmp_path / "leaky.yaml"
    config.write_text("derivation:\n  reranker_api_key: sk-secret\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="reranker_api_key, a secret"):
        load_settings(config)


async def test_a_reranker_slower_than_its_timeout_leaves_the_search_unreranked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with serve() as server:
        server.routes["/rerank"] = Route(body=b"[]", content_type="application/json", delay_s=3.0)
        url = f"http://127.0.0.1:{server.server_address[1]}/rerank?model=m&timeout=0.3"
        async with Runtime(AppSettings(home=tmp_path, derivation={"reranker_url": url})) as rt:
            service = MemoryService(rt)
            await service.add("ann", ["trips"], [{"role": "user", "content": TEXTS[2]}], mode="fast")
            with caplog.at_level(logging.WARNING, logger="memos.application.search"):
                found = _memories(await service.search("ann", ["trips"], "kayak", mode="fine"))
    assert "kayak" in found[0]["memory"] and "rerank" not in found[0]["metadata"]["score_parts"]
    assert any("did not answer" in r.getMessage() for r in caplog.records)


async def test_reranker_in_fast_mode_reorders_the_searches_memos_clients_make_by_default(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []
    with serve() as server:
        server.routes["/rerank"] = _route(seen, {"status": 200})
        url = f"http://127.0.0.1:{server.server_address[1]}/rerank?model=m"
        settings = AppSettings(home=tmp_path, derivation={"reranker_url": url, "reranker_in_fast_mode": True})
        async with Runtime(settings) as rt:
            service = MemoryService(rt)
            for text in TEXTS:
                await service.add("ann", ["trips"], [{"role": "user", "content": text}], mode="fast")
            fast = _memories(await service.search("ann", ["trips"], "Which hotel did we book?", mode="fast"))
    assert len(seen) == 1 and "kayak" in fast[0]["memory"]
