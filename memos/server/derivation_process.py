"""`memos serve`'s derivation process: the stages that compute (derivation, task dispatch) in a child
`memos worker`, restarted when it dies, so the serving process's interpreter does not run them."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CHILD_STAGES", "SERVER_STAGES", "DerivationProcess"]

logger = logging.getLogger(__name__)

CHILD_STAGES = ("deriver", "refiner", "scheduler")
"""Stages the child hosts (naming a derivation stage hosts both its lanes)."""

SERVER_STAGES = frozenset({"control", "projector", "kv-warmer"})
"""Stages the serving process keeps: access data must be fresh where requests are checked; the projector is
paused by the replays and forgets the server runs (one process writes the projections, so a replay cannot race
the live projection); warm KV caches are used where chat runs."""

_PR_SET_PDEATHSIG = 1
_prctl: Any
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: nothing is loaded between fork and exec
except (AttributeError, OSError):  # not Linux
    _prctl = None


def _child_setup(niceness: int) -> None:  # runs in the child between fork and exec
    if niceness:
        os.nice(niceness)
    if _prctl is not None:  # SIGTERM to the child when the thread that started it ends: the server, even by kill -9
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class DerivationProcess:
    """One child process (``command``), started by ``start``, restarted after an unexpected exit (waiting
    1, 2, 4 ... at most ``max_backoff_s`` seconds between starts; a run longer than a minute resets the wait),
    stopped by ``stop`` (SIGTERM: the worker finishes and commits its batches; SIGKILL after ``stop_timeout_s``).

    Its output goes to ``log_path`` (appended), or to the server's own output when None.
    """

    def __init__(self, command: Sequence[str], *, env: Mapping[str, str] | None = None, niceness: int = 0,
                 log_path: Path | None = None, max_backoff_s: float = 30.0, stop_timeout_s: float = 30.0) -> None:
        self.command = list(command)
        self.env = dict(env if env is not None else os.environ)
        self.niceness = niceness
        self.log_path = log_path
        self.max_backoff_s = max_backoff_s
        self.stop_timeout_s = stop_timeout_s
        self.starts = 0
        """How many times the child was started (restarts included)."""
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    @classmethod
    def for_worker(cls, config: str | None, *, niceness: int = 0, log_path: Path | None = None) -> DerivationProcess:
        """The child `memos worker` hosting ``CHILD_STAGES`` with the server's config and environment."""
        command = [sys.executable, "-m", "memos", "worker", "--stages", ",".join(CHILD_STAGES)]
        if config:
            command += ["--config", config]
        return cls(command, niceness=niceness, log_path=log_path)

    @property
    def pid(self) -> int | None:
        """The running child's process id (None before start or after stop)."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def _spawn(self) -> subprocess.Popen[bytes]:
        output = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            output = open(self.log_path, "ab")  # noqa: SIM115 - the child holds its own copy; ours closes below
        try:
            process = subprocess.Popen(self.command, env=self.env, stdin=subprocess.DEVNULL, stdout=output,
                                       stderr=subprocess.STDOUT if output is not None else None,
                                       preexec_fn=lambda: _child_setup(self.niceness))  # fmt: skip
        finally:
            if output is not None:
                output.close()
        self.starts += 1
        logger.info("derivation process started pid=%d starts=%d", process.pid, self.starts)
        return process

    def start(self) -> None:
        """Start the child and the thread that restarts it. Idempotent."""
        with self._lock:
            if self._watcher is not None:
                return
            self._stopping.clear()
            self._process = self._spawn()  # here, so that a command that cannot start fails the caller
            self._watcher = threading.Thread(target=self._watch, name="derivation-process", daemon=True)
            self._watcher.start()

    def _watch(self) -> None:
        """Wait for the child; restart it after an exit nobody asked for."""
        backoff = 1.0
        while True:
            process = self._process
            assert process is not None
            started = time.monotonic()
            code = process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started > 60.0:
                backoff = 1.0
            logger.error("derivation process pid=%d exited with %s; restarting in %.0f s", process.pid, code, backoff)
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, self.max_backoff_s)
            with self._lock:
                if self._stopping.is_set():
                    return
                self._process = self._spawn()

    def stop(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL after ``stop_timeout_s``) and its watcher. Idempotent."""
        with self._lock:
            self._stopping.set()
            process, watcher = self._process, self._watcher
            self._watcher = None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("derivation process pid=%d did not stop in %.0f s: killed", process.pid,
                               self.stop_timeout_s)  # fmt: skip
                process.kill()
                process.wait()
        if watcher is not None:
            watcher.join()
        self._process = None

