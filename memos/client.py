"""A synchronous handle on the async runtime: a private event loop thread, started on first use."""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from memos.application.service import MemoryService
from memos.runtime import Runtime
from streams.settings import AppSettings, load_settings

__all__ = ["SyncClient", "default_client", "reset_default_client"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class SyncClient:
    """Runs a Runtime on its own loop thread; ``call`` runs a coroutine there and waits for its result."""

    def __init__(self, settings: AppSettings | None = None, *, run_stages: bool = True) -> None:
        self.settings = settings or load_settings()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="memos-runtime", daemon=True)
        self._thread.start()
        self.runtime = Runtime(self.settings, run_stages=run_stages)
        self.service = MemoryService(self.runtime)
        self._closed = False
        try:
            self.call(self.runtime.start())
        except BaseException:
            self._stop_loop()
            raise

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The runtime's event loop."""
        return self._loop

    def call(self, coro: Coroutine[Any, Any, T], *, timeout_s: float | None = None) -> T:
        """Run a coroutine on the runtime loop and return its result (exceptions propagate)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("SyncClient.call() cannot be used from the runtime's own loop thread")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def close(self) -> None:
        """Stop the stages (committing their work), close stores and the loop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.call(self.runtime.aclose(), timeout_s=60)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_default: SyncClient | None = None
_lock = threading.Lock()


def _at_exit(fn: Callable[[], None]) -> None:
    """Run ``fn`` at interpreter exit *before* executors shut down (threading's exit hooks run first,
    newest first), so closing the runtime can still use ``run_in_executor``; atexit as a fallback."""
    try:
        threading._register_atexit(fn)  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        atexit.register(fn)


def default_client() -> SyncClient:
    """The process-wide client behind the MemOS-style functions; created on first use, closed at exit."""
    global _default
    with _lock:
        if _default is None:
            _default = SyncClient()
            _at_exit(reset_default_client)
        return _default


def reset_default_client() -> None:
    """Close the process-wide client (a later call creates a new one)."""
    global _default
    with _lock:
        client, _default = _default, None
    if client is not None:
        client.close()
