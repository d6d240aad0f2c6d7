"""The memory scheduler (MemOS ``GeneralScheduler``) on the task log.

``submit_messages`` appends one ``TaskSubmitted`` event per ScheduleMessageItem to the tasks topic (its
status is ``waiting`` at once); the runtime's dispatch stage runs the handler registered for the label
(``dispatcher.register_handlers``) and records ``in_progress`` then ``completed`` or ``failed``. A task's id
is derived from the message's ``item_id`` and label, so a re-labelled copy (``model_copy(update={"label":
...})``) is a new task; the message's ``task_id`` is the business id several tasks share. Status is
queryable per task and per business id (:meth:`GeneralScheduler.status`).

Default handlers (installed by ``start`` for labels with no handler of the user's):

- ``query``: remember the query (last ``context_window_size`` per user and cube), submit a ``mem_update``;
- ``mem_update``: search the cube's text memory with the query and warm its activation memory: one KV
  cache of the retrieved memories (``KVCacheMemory.warm``, kept in the shared cache store and as the
  cube's activation item), recorded as ``KVCacheWarmed`` on the activation topic;
- ``answer``: remember the answer (recorded as completed).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from memos.client import SyncClient, default_client
from memos.configs.mem_scheduler import GeneralSchedulerConfig
from memos.mem_scheduler.dispatcher import Handler, SchedulerDispatcher
from memos.mem_scheduler.schemas.message_schemas import ScheduleMessageItem
from memos.mem_scheduler.schemas.task_schemas import (
    ANSWER_TASK_LABEL,
    MEM_UPDATE_TASK_LABEL,
    QUERY_TASK_LABEL,
)
from memos.mem_scheduler.utils.db_utils import get_utc_now
from processors.kv_warmer import compose_memory_text
from schemas.events import KVCacheEvicted, KVCacheWarmed, TaskSubmitted, derive_id

__all__ = ["TERMINAL_STATUSES", "GeneralScheduler", "task_id_of"]

logger = logging.getLogger(__name__)

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})


def task_id_of(message: ScheduleMessageItem) -> str:
    """The task id of a message: derived from ``(item_id, label)`` (a re-labelled copy is a new task)."""
    return str(derive_id(f"schedule:{message.item_id}", message.label))


class GeneralScheduler:
    """Schedules memory work for users and cubes over the task log (see the module doc)."""

    def __init__(
        self, config: GeneralSchedulerConfig | None = None, *, client: SyncClient | None = None
    ) -> None:
        self.config = config or GeneralSchedulerConfig()
        self.client = client or default_client()
        self.top_k = self.config.top_k
        self.top_n = self.config.top_n
        self.context_window_size = self.config.context_window_size or 10
        self.dispatcher = SchedulerDispatcher(
            self, max_workers=self.config.thread_pool_max_workers,
            enable_parallel_dispatch=self.config.enable_parallel_dispatch,
        )  # fmt: skip
        self.mem_cubes: dict[str, Any] = {}
        """Live cubes by id (a MOS shares its ``mem_cubes``); handlers get ``msg.mem_cube`` from here."""
        self.current_user_id: str | None = None
        self.current_mem_cube_id: str | None = None
        self.current_mem_cube: Any = None
        self.chat_llm: Any = None
        self.process_llm: Any = None
        self.query_history: dict[tuple[str, str], deque[str]] = {}
        self.answer_history: dict[tuple[str, str], deque[str]] = {}
        self._history_lock = threading.Lock()
        self._running = False

    # --- lifecycle ----------------------------------------------------------------------------------

    def initialize_modules(self, chat_llm: Any = None, process_llm: Any = None, **_: Any) -> None:
        """Keep the models MemOS passes in (the default handlers need none)."""
        self.chat_llm = chat_llm
        self.process_llm = process_llm or chat_llm

    def default_handlers(self) -> dict[str, Handler]:
        """The built-in handlers by label (see the module doc)."""
        return {
            QUERY_TASK_LABEL: self._query_message_consumer,
            MEM_UPDATE_TASK_LABEL: self._mem_update_message_consumer,
            ANSWER_TASK_LABEL: self._answer_message_consumer,
        }

    def start(self) -> None:
        """Install the default handlers for labels without one, and every registered handler. Idempotent."""
        for label, handler in self.default_handlers().items():
            if label not in self.dispatcher.handlers:
                self.dispatcher.register_handler(label, handler)
        self.dispatcher.install()
        self._running = True

    def stop(self) -> None:
        """Remove this scheduler's handlers from the runtime (tasks then fail as unhandled)."""
        self.dispatcher.uninstall()
        self._running = False

    @property
    def running(self) -> bool:
        """Whether the handlers are installed."""
        return self._running

    @property
    def mem_cube(self) -> Any:
        """The cube the scheduler serves now: the last one registered or submitted for."""
        return self.current_mem_cube

    @mem_cube.setter
    def mem_cube(self, value: Any) -> None:
        self.current_mem_cube = value
        cube_id = getattr(value, "cube_id", None)
        if cube_id:
            self.current_mem_cube_id = cube_id

    # --- submission and conversion ------------------------------------------------------------------

    def submit_messages(self, messages: ScheduleMessageItem | Sequence[ScheduleMessageItem]) -> list[str]:
        """Append the messages as tasks (status ``waiting``); returns their task ids.

        Raises NotFound for an unknown cube and PermissionDenied when the message's user may not read it.
        Safe from handler threads; not from the runtime's own loop.
        """
        batch = [messages] if isinstance(messages, ScheduleMessageItem) else list(messages)
        service = self.client.service
        items = []
        for msg in batch:
            self.client.call(service.check_read(msg.user_id, msg.mem_cube_id))
            items.append({
                "task_id": task_id_of(msg), "user_id": msg.user_id, "cube_id": msg.mem_cube_id,
                "label": msg.label, "content": msg.content, "business_task_id": msg.task_id,
                "session_id": msg.session_id or "default_session",
                "payload": {
                    "item_id": msg.item_id, "trace_id": msg.trace_id, "session_id": msg.session_id,
                    "user_name": msg.user_name, "info": msg.info, "timestamp": msg.timestamp.isoformat(),
                    "redis_message_id": msg.redis_message_id, "stream_key": msg.stream_key,
                },
            })  # fmt: skip
        ids = self.client.call(service.submit_tasks(items)) if items else []
        for msg in batch:
            self.current_user_id = msg.user_id
            cube = msg.mem_cube if msg.mem_cube is not None else self.mem_cubes.get(msg.mem_cube_id)
            if cube is not None:
                self.current_mem_cube, self.current_mem_cube_id = cube, msg.mem_cube_id
        logger.info("scheduler_submitted count=%d labels=%s", len(ids), sorted({m.label for m in batch}))
        return ids

    def message_of(self, task: TaskSubmitted) -> ScheduleMessageItem:
        """The ScheduleMessageItem a task was submitted as, with ``mem_cube`` set to the live cube."""
        payload = task.payload
        stamp = payload.get("timestamp")
        return ScheduleMessageItem(
            item_id=str(payload.get("item_id") or task.task_id),
            redis_message_id=str(payload.get("redis_message_id") or ""),
            stream_key=str(payload.get("stream_key") or ""),
            user_id=task.user_id,
            trace_id=str(payload.get("trace_id") or task.trace_id or uuid.uuid4().hex),
            mem_cube_id=task.cube_id,
            session_id=str(payload.get("session_id", task.session_id) or ""),
            label=task.label,
            mem_cube=self.mem_cubes.get(task.cube_id),
            content=task.content,
            timestamp=datetime.fromisoformat(stamp) if isinstance(stamp, str) else task.occurred_at,
            user_name=str(payload.get("user_name") or ""),
            info=payload.get("info"),
            task_id=task.business_task_id,
        )

    # --- status ---------------------------------------------------------------------------------------

    def status(
        self, task_id: str | None = None, *, business_task_id: str | None = None, user_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Tasks with their status (waiting, in_progress, completed, failed): one task, a business id's
        tasks, or a user's, newest first."""
        infos = self.client.call(self.client.service.task_records(
            task_id=task_id, business_task_id=business_task_id, user_id=user_id))
        return [
            {
                "task_id": i.task_id,
                "cube_id": i.cube_id,
                "user_id": i.user_id,
                "label": i.label,
                "business_task_id": i.business_task_id,
                "status": i.status,
                "error": i.error,
                "result": i.result,
                "submitted_at": i.submitted_at,
                "updated_at": i.updated_at,
            }
            for i in infos
        ]

    def wait(
        self, task_ids: Sequence[str] = (), *, business_task_id: str | None = None, timeout_s: float = 60.0
    ) -> list[dict[str, Any]]:
        """Block until the named tasks (and every task of ``business_task_id``, including those submitted
        meanwhile by handlers) have finished; returns their status. Raises TimeoutError, and RuntimeError
        on the runtime's own loop thread (the tasks could never progress)."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.client.loop:
            raise RuntimeError("GeneralScheduler.wait() cannot block the runtime's own event loop")
        deadline = time.monotonic() + timeout_s
        pause = threading.Event()
        while True:
            tasks = [t for tid in task_ids for t in self.status(tid)]
            if business_task_id is not None:
                tasks += [
                    t for t in self.status(business_task_id=business_task_id) if t["task_id"] not in task_ids
                ]
            known = {t["task_id"] for t in tasks}
            if all(tid in known for tid in task_ids) and all(t["status"] in TERMINAL_STATUSES for t in tasks):
                return tasks
            if time.monotonic() > deadline:
                pending = sorted(t["task_id"] for t in tasks if t["status"] not in TERMINAL_STATUSES)
                raise TimeoutError(f"scheduler tasks still running after {timeout_s}s: {pending!r}")
            pause.wait(0.02)

    # --- default handlers ---------------------------------------------------------------------------

    def _remember(self, store: dict[tuple[str, str], deque[str]], msg: ScheduleMessageItem) -> None:
        with self._history_lock:
            store.setdefault((msg.user_id, msg.mem_cube_id), deque(maxlen=self.context_window_size)).append(
                msg.content
            )

    def _query_message_consumer(self, messages: list[ScheduleMessageItem]) -> dict[str, Any]:
        """Record each query and schedule a ``mem_update`` for it."""
        for msg in messages:
            self._remember(self.query_history, msg)
        follow_up = self.submit_messages(
            [m.model_copy(update={"label": MEM_UPDATE_TASK_LABEL}) for m in messages]
        )
        return {"queries": len(messages), "follow_up": follow_up}

    def _answer_message_consumer(self, messages: list[ScheduleMessageItem]) -> dict[str, Any]:
        """Record each answer."""
        for msg in messages:
            self._remember(self.answer_history, msg)
        return {"answers": len(messages)}

    def _mem_update_message_consumer(self, messages: list[ScheduleMessageItem]) -> dict[str, Any]:
        """Search the cube's text memory with the queries and warm its activation memory with the hits."""
        cube = messages[0].mem_cube
        cube_id = messages[0].mem_cube_id
        text_mem = getattr(cube, "text_mem", None)
        if text_mem is None:
            logger.info("mem_update skipped cube=%s reason=no registered text memory", cube_id)
            return {"skipped": "cube has no registered text memory", "memory_ids": []}
        hits: dict[str, str] = {}
        for msg in messages:
            for item in text_mem.search(msg.content, top_k=self.top_k)[: self.top_n]:
                hits.setdefault(item.id, item.memory)
        kv = getattr(cube, "act_mem", None)
        if kv is None or not hits or not hasattr(kv, "warm"):
            return {"memory_ids": list(hits), "warmed": False}
        return {"memory_ids": list(hits), "warmed": True, **self._warm(kv, cube_id, hits)}

    def _warm(self, kv: Any, cube_id: str, hits: dict[str, str]) -> dict[str, Any]:
        from memory_store.kv.cache import shallow_copy
        from memos.memories.activation.item import KVCacheItem, KVCacheRecords

        texts, ids = list(hits.values()), list(hits)
        entry, evicted = kv.warm(texts, memory_ids=ids, cube_id=cube_id)
        item = KVCacheItem(
            id=str(derive_id(f"kv:{cube_id}", entry.key.prefix_hash)),
            memory=shallow_copy(entry.cache),
            metadata={
                "cache_key": str(entry.key),
                "model_id": entry.key.model_id,
                "tokens": len(entry.prefix_ids),
                "memory_ids": ids,
                "source": "scheduler",
            },
            records=KVCacheRecords(
                text_memories=texts, composed_text_memory=compose_memory_text(texts), timestamp=get_utc_now()
            ),
        )
        kv.delete_all()
        kv.add([item])
        runtime = self.client.runtime
        now = runtime.now()
        events: list[Any] = [KVCacheWarmed(
            event_id=uuid.uuid4(), occurred_at=now, key=cube_id, producer="scheduler", cube_id=cube_id,
            cache_key=str(entry.key), model_id=entry.key.model_id, memory_ids=ids, tokens=len(entry.prefix_ids),
            bytes=entry.bytes, build_ms=entry.build_ms,
        )]  # fmt: skip
        events += [
            KVCacheEvicted(
                event_id=uuid.uuid4(),
                occurred_at=now,
                key=e.cube_id,
                producer="scheduler",
                cube_id=e.cube_id,
                cache_key=e.cache_key,
                reason=e.reason,
            )
            for e in evicted
        ]
        self.client.call(runtime.publish(events))
        logger.info(
            "kv_warmed cube=%s memories=%d tokens=%d evicted=%d",
            cube_id,
            len(ids),
            len(entry.prefix_ids),
            len(evicted),
        )
        return {"cache_key": str(entry.key), "tokens": len(entry.prefix_ids)}
