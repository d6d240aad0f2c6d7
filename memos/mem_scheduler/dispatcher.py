"""The scheduler's dispatcher (MemOS ``SchedulerDispatcher``): label -> handler, run over the task log.

Handlers are MemOS's: sync callables taking ``list[ScheduleMessageItem]``. Registering one installs a
wrapper in the runtime's ``task_handlers``; the runtime's dispatch stage reads ``TaskSubmitted`` events
from the tasks topic, groups them by (user, cube, label) and calls the wrapper, which turns the events back
into ScheduleMessageItem objects (``mem_cube`` set to the live cube) and runs the handler in a worker
thread. Task status (waiting -> in_progress -> completed / failed) is recorded on the log by the stage; a
handler that raises fails its batch. A handler may call ``submit_messages`` (it runs off the loop thread).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from memos.mem_scheduler.schemas.message_schemas import ScheduleMessageItem
from schemas.events import TaskSubmitted

if TYPE_CHECKING:
    from memos.mem_scheduler.general_scheduler import GeneralScheduler

__all__ = ["Handler", "SchedulerDispatcher"]

logger = logging.getLogger(__name__)

Handler = Callable[[list[ScheduleMessageItem]], Any]
"""A MemOS handler: called with a batch of messages of one user, cube and label; its return is ignored
unless it is a JSON-able dict (then it is kept in the task's result)."""


def _summary(handler: Handler, count: int, returned: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "handled": count,
        "handler": getattr(handler, "__name__", type(handler).__name__),
    }
    if isinstance(returned, Mapping):
        try:
            summary["result"] = json.loads(json.dumps(dict(returned), default=str))
        except (TypeError, ValueError):
            logger.debug("handler result is not JSON-able handler=%s", summary["handler"])
    return summary


class SchedulerDispatcher:
    """Routes scheduled tasks to the handler registered for their label (see the module doc)."""

    def __init__(
        self, scheduler: GeneralScheduler, *, max_workers: int = 30, enable_parallel_dispatch: bool = True
    ) -> None:
        self.scheduler = scheduler
        self.max_workers = max_workers
        self.enable_parallel_dispatch = enable_parallel_dispatch
        self.handlers: dict[str, Handler] = {}
        self._installed: dict[str, Callable[[list[TaskSubmitted]], Any]] = {}

    # --- registration -------------------------------------------------------------------------------

    def register_handler(self, label: str, handler: Handler) -> None:
        """Handle tasks labelled ``label`` with ``handler`` (replacing any earlier one)."""
        if not isinstance(label, str) or not label:
            raise TypeError(f"a task label must be a non-empty string, got {label!r}")
        if not callable(handler):
            raise TypeError(f"the handler for label {label!r} is not callable: {handler!r}")
        self.handlers[label] = handler
        self._install(label)
        logger.info(
            "scheduler_handler_registered label=%s handler=%s", label, getattr(handler, "__name__", "")
        )

    def register_handlers(self, handlers: Mapping[str, Handler]) -> None:
        """Register several handlers at once (MemOS's bulk form)."""
        for label, handler in handlers.items():
            self.register_handler(label, handler)

    def unregister_handler(self, label: str) -> bool:
        """Stop handling ``label`` (its tasks then fail as having no handler); False if none was set."""
        found = self.handlers.pop(label, None) is not None
        wrapper = self._installed.pop(label, None)
        service = self.scheduler.client.service
        if wrapper is not None and service.task_handler(label) is wrapper:
            service.register_task_handler(label, None)
        return found

    def unregister_handlers(self, labels: Sequence[str]) -> dict[str, bool]:
        """Unregister several labels; label -> whether one was registered."""
        return {label: self.unregister_handler(label) for label in labels}

    def install(self) -> None:
        """(Re)install every registered handler into the runtime (after another scheduler replaced them)."""
        for label in self.handlers:
            self._install(label)

    def uninstall(self) -> None:
        """Remove this dispatcher's wrappers from the runtime; registrations are kept for ``install``."""
        service = self.scheduler.client.service
        for label, wrapper in list(self._installed.items()):
            if service.task_handler(label) is wrapper:
                service.register_task_handler(label, None)
        self._installed.clear()

    def _install(self, label: str) -> None:
        wrapper = self._wrapper(label)
        self._installed[label] = wrapper
        self.scheduler.client.service.register_task_handler(label, wrapper)

    def _wrapper(self, label: str) -> Callable[[list[TaskSubmitted]], Any]:
        async def run(tasks: list[TaskSubmitted]) -> dict[str, Any]:
            handler = self.handlers[label]
            messages = [self.scheduler.message_of(task) for task in tasks]
            if inspect.iscoroutinefunction(handler):
                returned = await handler(messages)
            else:
                returned = await asyncio.to_thread(handler, messages)
            return _summary(handler, len(messages), returned)

        run.__name__ = f"scheduled_{label}"
        return run

    # --- direct dispatch (MemOS API) ----------------------------------------------------------------

    def dispatch(self, msg_list: Sequence[ScheduleMessageItem]) -> None:
        """Run handlers on these messages now, in this thread, grouped by label (bypasses the log).

        Use ``scheduler.submit_messages`` for tracked, durable tasks. Raises KeyError for a label with no
        handler.
        """
        groups: dict[str, list[ScheduleMessageItem]] = defaultdict(list)
        for message in msg_list:
            groups[message.label].append(message)
        for label, messages in groups.items():
            if label not in self.handlers:
                raise KeyError(f"no handler registered for label {label!r}")
            self.handlers[label](messages)

    def join(self, timeout: float | None = None) -> bool:
        """Kept for MemOS compatibility: handlers run on the runtime, there is no pool to join."""
        return True

    def shutdown(self) -> None:
        """Remove the handlers from the runtime."""
        self.uninstall()
