"""`memos serve` with its derivation process: a child `memos worker` derives and projects, the server
reads what it wrote (read-your-writes through the vector journal), a killed child is restarted, and no child
outlives the server."""

from __future__ import annotations

import os
import signal
import subprocess
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
