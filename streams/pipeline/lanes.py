"""Serving first: blocking calls made by background stages run on their own threads, at lower OS priority.

Search and the other use cases hand their blocking calls (store reads) to the event loop's default
executor, and so do the derivation, projection and task stages (parsing hand-off, dedup, store writes,
log appends), mostly through ``asyncio.to_thread`` deep inside the stores. :class:`LaneExecutor`
replaces the loop's default executor and sends each call by the lane of the task that made it: a task
started under :func:`background_context` submits to a separate pool whose threads lower their own
scheduling priority (``nice``) as they start. A search's store read therefore never queues behind
derivation in the shared pool, and when both want the CPU the kernel prefers serving. The lane is a
context variable, so tasks a background task creates inherit it; threads the background threads start
inherit their niceness (Linux niceness is per thread).
"""

from __future__ import annotations

import contextvars
import logging
import weakref
from asyncio import AbstractEventLoop
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from memory_store.priority import BACKGROUND_NICENESS, nice_current_thread

__all__ = ["LaneExecutor", "background_context", "in_background", "install_lanes"]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

_BACKGROUND: contextvars.ContextVar[bool] = contextvars.ContextVar("memos_background_lane", default=False)
_installed: weakref.WeakKeyDictionary[AbstractEventLoop, LaneExecutor] = weakref.WeakKeyDictionary()


def in_background() -> bool:
    """Whether the running task belongs to the background lane."""
    return _BACKGROUND.get()


def background_context() -> contextvars.Context:
    """A copy of the current context in the background lane (``asyncio.create_task(..., context=...)``)."""
    context = contextvars.copy_context()
    context.run(_BACKGROUND.set, True)
    return context


class LaneExecutor(ThreadPoolExecutor):
    """The loop's default executor: serving calls run here, background calls on a niced pool of their own."""

    def __init__(self, *, max_workers: int | None = None, background_workers: int = 4,
                 niceness: int = BACKGROUND_NICENESS) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix="asyncio")
        self.background = ThreadPoolExecutor(max_workers=background_workers, thread_name_prefix="memos-background",
                                             initializer=nice_current_thread, initargs=(niceness,))

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        if _BACKGROUND.get():
            return self.background.submit(fn, *args, **kwargs)
        return super().submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.background.shutdown(wait=wait, cancel_futures=cancel_futures)
        super().shutdown(wait=wait, cancel_futures=cancel_futures)


def install_lanes(loop: AbstractEventLoop, **options: Any) -> LaneExecutor:
    """Make a :class:`LaneExecutor` the loop's default executor (once per loop; later calls return it).

    Call it before the loop's first ``to_thread``: a default executor the loop made already is replaced
    (its threads end when the interpreter exits).
    """
    executor = _installed.get(loop)
    if executor is None:
        executor = LaneExecutor(**options)
        loop.set_default_executor(executor)
        _installed[loop] = executor
        logger.info("serving and background lanes installed (background niceness=%s)",
                    options.get("niceness", BACKGROUND_NICENESS))
    return executor
