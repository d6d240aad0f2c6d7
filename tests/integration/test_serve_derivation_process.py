"""`memos serve` with its derivation process: a child `memos worker` derives, the server projects and reads
(read-your-writes through the log's committed offsets), a killed child is restarted, no child outlives the
server, and replays while the child derives lose nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.memos_serve import memos_serve


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _worker_of(server: subprocess.Popen[bytes], deadline_s: float = 60.0, *, not_pid: int | None = None) -> int:
    """The server's child `memos worker` (another than ``not_pid``), waiting until there is one."""
    deadline = time.monotonic() + deadline_s
    while True:
        for pid in _children(server.pid):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"worker" in command and pid != not_pid:
                return pid
        assert time.monotonic() < deadline, "no derivation process"
        time.sleep(0.1)  # polling another process's state, with a deadline


def _is_worker(pid: int) -> bool:
    try:
        return b"worker" in Path(f"/proc/{pid}/cmdline").read_bytes()  # empty once it is a zombie
    except OSError:
        return False


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    with memos_serve(tmp_path / "home", tmp_path / "server.log", args=["--local-only"],
                     env={"MEMOS_SERVER__DERIVATION_NICENESS": "3"}) as running:  # fmt: skip
        yield running


def _add(url: str, text: str) -> list[dict[str, object]]:
    r = httpx.post(f"{url}/product/add", json={"user_id": "ann", "writable_cube_ids": ["ann_cube"], "messages": text,
                                               "mode": "fast", "async_mode": "sync"}, timeout=120)  # fmt: skip
    assert r.status_code == 200, r.text
    data: list[dict[str, object]] = r.json()["data"]
    assert data, r.text
    return data


def _found(url: str, query: str) -> list[str]:
    r = httpx.post(f"{url}/product/search", json={"user_id": "ann", "readable_cube_ids": ["ann_cube"],
                                                  "query": query, "top_k": 5}, timeout=60)  # fmt: skip
    assert r.status_code == 200, r.text
    return [m["memory"] for group in r.json()["data"]["text_mem"] for m in group["memories"]]


def test_the_child_derives_the_server_reads_and_a_killed_child_comes_back(
    server: tuple[subprocess.Popen[bytes], str],
) -> None:
    process, url = server
    child = _worker_of(process)
    assert os.getpriority(os.PRIO_PROCESS, child) == os.getpriority(os.PRIO_PROCESS, process.pid) + 3

    first = _add(url, "I keep three beehives on the roof of my flat in Porto.")
    assert any("beehives" in m for m in _found(url, "Where are my beehives?")), first

    os.kill(child, signal.SIGKILL)
    replacement = _worker_of(process, not_pid=child)
    second = _add(url, "My sister Ines teaches the violin in Braga.")
    assert any("violin" in m for m in _found(url, "Who teaches the violin?")), second

    process.terminate()
    assert process.wait(60) in (0, -signal.SIGTERM)  # uvicorn exits by the signal it stopped on
    deadline = time.monotonic() + 30
    while _is_worker(replacement):
        assert time.monotonic() < deadline, "the derivation process outlived the server"
        time.sleep(0.1)  # polling another process's exit


def _memory_ids(url: str) -> set[str]:
    r = httpx.post(f"{url}/product/get_memory", json={"user_id": "ann", "mem_cube_id": "ann_cube"}, timeout=60)
    assert r.status_code == 200, r.text
    return {m["id"] for m in r.json()["data"]["text_mem"][0]["memories"]}


def test_replays_while_adds_are_projected_lose_nothing(server: tuple[subprocess.Popen[bytes], str]) -> None:
    """The projector runs where replays run (the server), so a replay pauses it: replaying while the child derives
    a stream of adds leaves the live projection equal to a replay of the log (it used to lose most of them)."""
    _, url = server
    _add(url, "I keep three beehives on the roof of my flat in Porto.")
    sent: list[int] = []

    def add_many(first: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            for n in range(first, first + 120):
                r = client.post("/product/add", json={
                    "user_id": "ann", "writable_cube_ids": ["ann_cube"], "mode": "fast", "async_mode": "async",
                    "messages": f"Parcel {n} went to street {n * 13}, door {n * 7}."})  # fmt: skip
                assert r.status_code == 200, r.text
                sent.append(n)

    adders = [threading.Thread(target=add_many, args=(first,)) for first in (0, 1000)]
    for thread in adders:
        thread.start()
    replays = 0
    while any(thread.is_alive() for thread in adders) or replays < 2:
        r = httpx.post(f"{url}/v1/cubes/ann_cube/replay?user_id=ann", timeout=120)
        assert r.status_code == 200, r.text
        replays += 1
    for thread in adders:
        thread.join()
    assert len(sent) == 240
    r = httpx.get(f"{url}/product/scheduler/wait", params={"user_id": "ann", "timeout_seconds": 240}, timeout=260)
    assert r.status_code == 200 and r.json()["data"]["done"], r.text  # both phases of every add derived
    _add(url, "My sister Ines teaches the violin in Braga.")  # sync: what they derived is projected too
    live = _memory_ids(url)
    r = httpx.post(f"{url}/v1/cubes/ann_cube/replay?user_id=ann", timeout=120)
    assert r.status_code == 200, r.text
    replayed = _memory_ids(url)
    assert replayed == live, (len(live), len(replayed), len(live - replayed), len(replayed - live))
    assert len(live) >= 60  # the parcels are distinct: few may merge, none may be lost


def test_a_replay_from_another_process_is_refused_while_the_server_projects(
    server: tuple[subprocess.Popen[bytes], str], tmp_path: Path,
) -> None:
    """`memos replay` on the data directory of a running `memos serve` could pause only its own (absent)
    projector: it is refused, naming the server's process, and nothing is dropped."""
    process, url = server
    _add(url, "I keep three beehives on the roof of my flat in Porto.")
    before = _memory_ids(url)
    env = {**os.environ, "MEMOS_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    env.pop("MEMOS_CONFIG", None)
    cli = subprocess.run([sys.executable, "-m", "memos", "replay", "--cube", "ann_cube"], env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert cli.returncode != 0
    assert "another process projects this data" in cli.stdout + cli.stderr and f":{process.pid}" in cli.stdout + cli.stderr
    assert _memory_ids(url) == before and before
    r = httpx.post(f"{url}/v1/cubes/ann_cube/replay?user_id=ann", timeout=120)  # the server's own replay runs
    assert r.status_code == 200 and r.json()["data"]["events_applied"] >= 1, r.text
