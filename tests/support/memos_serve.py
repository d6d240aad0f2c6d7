"""A real `memos serve` in a child process for tests: started over a home, answering /healthz, stopped after."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

__all__ = ["ROOT", "free_port", "memos_serve"]

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def memos_serve(
    home: Path, log_path: Path, *, args: Sequence[str] = (), env: Mapping[str, str] | None = None,
    start_timeout_s: float = 240.0,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`memos serve --port <free> --log-level warning *args` over ``home`` (output to ``log_path``); yields the
    process and its base URL once /healthz answers, and terminates it on exit if it still runs."""
    port = free_port()
    environment = {**os.environ, "MEMOS_HOME": str(home), "OMP_NUM_THREADS": "1",
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    environment.pop("MEMOS_CONFIG", None)
    environment.update(env or {})
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "memos", "serve", "--port", str(port), "--log-level", "warning", *args],
            env=environment, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + start_timeout_s
            while True:
                assert process.poll() is None, log_path.read_text()
                try:
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)  # polling a child process's start-up
            yield process, url
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait(60)
