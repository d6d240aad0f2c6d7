"""One huge add does not stall other tenants: while a large fine add is being derived (its own lane), another
tenant's small add is derived, stored and searchable, through the real HTTP server, before the large one ends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from memos.server.app import BackgroundServer
from tests.security.conftest import add, start_server, tenant
from tests.security.test_task_progress import _status, _wait_a_little, big_text

pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    running = start_server(tmp_path_factory.mktemp("lanes_home"), slice_size=8, large_add_chars=20_000)
    try:
        yield running
    finally:
        running.stop()


def test_a_small_add_is_searchable_while_a_large_one_is_derived(server: BackgroundServer) -> None:
    dave, erin = tenant(server, "dave"), tenant(server, "erin")
    with dave.client(server) as d, erin.client(server) as e:
        messages = [{"role": "user" if n % 2 == 0 else "assistant", "content": big_text(300, seed=n)}
                    for n in range(160)]  # fmt: skip
        big = add(d, "dave", messages, mode="fine", sync=False)["data"][0]["task_id"]
        while True:  # until the large add is being derived (it reports progress)
            item = _status(d, big)
            if item is not None and item["progress"] is not None:
                break
            if item is not None:
                _wait_a_little(d, big)
        assert item["status"] == "in_progress", item
        small = add(e, "erin", [{"role": "user", "content": "The lighthouse keeper is called Ottoline."}])
        assert small["data"] and "Ottoline" in small["data"][0]["memory"], small
        r = e.post(
            "/product/search",
            json={"user_id": "erin", "query": "who keeps the lighthouse", "readable_cube_ids": ["erin"]},
        )
        assert r.status_code == 200 and "Ottoline" in r.text, r.text
        still = _status(d, big)
        assert still is not None and still["status"] == "in_progress", still  # the large add is not done yet
        r = d.get("/product/scheduler/wait", params={"task_id": big, "timeout_seconds": 300})
        assert r.status_code == 200 and r.json()["data"]["done"], r.text  # and it does finish
