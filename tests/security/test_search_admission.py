"""Through the real HTTP server: a search that cannot be admitted gets 429 with Retry-After, then succeeds."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from memos.application.admission import SearchGate
from memos.server.app import BackgroundServer
from tests.security.conftest import Tenant, add


@pytest.fixture()
def one_slot(server: BackgroundServer) -> Iterator[SearchGate]:
    """The server's gate narrowed to one search at once and no queueing (restored afterwards)."""
    gate: SearchGate = server.app.state.service.search_gate
    saved = gate.max_active, gate.queue_s
    gate.max_active, gate.queue_s = 1, 0.0
    try:
        yield gate
    finally:
        gate.max_active, gate.queue_s = saved


def test_a_search_over_the_admission_limit_gets_429_with_retry_after(
    server: BackgroundServer, alice: Tenant, one_slot: SearchGate
) -> None:
    with alice.client(server) as client:
        add(client, "alice_admission", [{"role": "user", "content": "I keep my bike in the garden shed."}])
        held, release = threading.Event(), threading.Event()

        async def hold_the_slot() -> None:
            async with one_slot.enter("someone_else"):
                held.set()
                await asyncio.to_thread(release.wait, 60)

        holder = asyncio.run_coroutine_threadsafe(hold_the_slot(), server.app.state.loop)
        try:
            assert held.wait(30)
            search = {"user_id": alice.user_id, "readable_cube_ids": ["alice_admission"], "query": "where is the bike",
                      "top_k": 3}
            refused = client.post("/product/search", json=search)
            assert refused.status_code == 429, refused.text
            assert refused.headers["retry-after"] == "1"
            assert "searches are running" in refused.json()["message"]
            assert one_slot.stats.refused_busy >= 1
        finally:
            release.set()
            holder.result(30)
        answered = client.post("/product/search", json=search)
        assert answered.status_code == 200, answered.text
        texts = [m["memory"] for bucket in answered.json()["data"]["text_mem"] for m in bucket["memories"]]
        assert any("garden shed" in t for t in texts)
        assert one_slot.active == 0
