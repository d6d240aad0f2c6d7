"""Thread priority: background threads (derivation, ingest embedding) lower their own Linux niceness."""

from __future__ import annotations

import logging
import os
import threading

__all__ = ["BACKGROUND_NICENESS", "nice_current_thread"]

logger = logging.getLogger(__name__)

BACKGROUND_NICENESS = 10
"""How much background threads lower their priority (Linux niceness, 0..19; higher yields more)."""


def nice_current_thread(niceness: int = BACKGROUND_NICENESS) -> None:
    """Lower the calling thread's scheduling priority by ``niceness`` (a no-op where threads cannot).

    Linux niceness is per thread, and threads started later by this one (a native library's thread
    pool, say) inherit it.
    """
    get_native_id = getattr(threading, "get_native_id", None)
    if niceness <= 0 or get_native_id is None or not hasattr(os, "setpriority"):
        return
    tid = get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + niceness))
    except OSError as exc:  # not Linux semantics (the whole process) or not permitted: serve anyway
        logger.debug("could not lower thread priority tid=%s: %r", tid, exc)
