"""The task handlers every process gets (the dispatch stage runs them wherever it is hosted).

The composition root installs :func:`default_task_handlers` when it builds a runtime, so a worker that
hosts only the dispatch stage (``memos worker``) completes the built-in labels; an in-process MemOS
scheduler may replace them with its own (``MemoryService.register_task_handler``). Handlers receive the
tasks of one (user, cube, label) group and read the system only through the :class:`Platform` port.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from memos.application.ports import Platform, TaskHandler
from schemas.events import TaskSubmitted

__all__ = ["ANSWER", "MEM_UPDATE", "QUERY", "default_task_handlers"]

logger = logging.getLogger(__name__)

QUERY = "query"
ANSWER = "answer"
MEM_UPDATE = "mem_update"
_TOP_K = 10


def default_task_handlers(platform: Callable[[], Platform]) -> dict[str, TaskHandler]:
    """Handlers of the built-in labels; ``platform`` returns the (started) system they run on.

    - ``query``: schedule a ``mem_update`` for each query (same business id, derived task id);
    - ``mem_update``: search the cube with the query; the result lists the memories that the cube's
      activation memory should hold for it (``memory_ids``, best first);
    - ``answer``: recorded as completed.
    """

    async def query(tasks: list[TaskSubmitted]) -> dict[str, Any]:
        rt = platform()
        follow = [
            TaskSubmitted(
                event_id=uuid.uuid4(), occurred_at=rt.now(), key=t.cube_id, producer="scheduler",
                task_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{t.task_id}:{MEM_UPDATE}")), user_id=t.user_id,
                cube_id=t.cube_id, label=MEM_UPDATE, content=t.content, business_task_id=t.business_task_id,
                session_id=t.session_id, payload=t.payload,
            )
            for t in tasks
        ]
        await rt.publish(follow)
        return {"queries": len(tasks), "follow_up": [t.task_id for t in follow]}

    async def mem_update(tasks: list[TaskSubmitted]) -> dict[str, Any]:
        from processors.retrieval import SearchQuery

        rt = platform()
        found: dict[str, float] = {}
        for task in tasks:
            if not task.content.strip():
                continue
            top_k = int(task.payload.get("top_k") or _TOP_K) if isinstance(task.payload, dict) else _TOP_K
            data = await rt.search_service.search(SearchQuery(
                query=task.content, readable_cube_ids=(task.cube_id,), user_id=task.user_id, top_k=top_k,
                include_preference=False, search_tool_memory=False, include_skill_memory=False, relativity=0.0,
            ))
            for entry in data.get("text_mem", []):
                for memory in entry.get("memories", []):
                    score = float(memory.get("metadata", {}).get("relativity") or 0.0)
                    found[memory["id"]] = max(score, found.get(memory["id"], 0.0))
        ranked = sorted(found, key=lambda m: -found[m])
        logger.info("mem_update cube=%s tasks=%d memories=%d", tasks[0].cube_id, len(tasks), len(ranked))
        return {"memory_ids": ranked, "warmed": False}

    async def answer(tasks: list[TaskSubmitted]) -> dict[str, Any]:
        return {"answers": len(tasks)}

    return {QUERY: query, MEM_UPDATE: mem_update, ANSWER: answer}
