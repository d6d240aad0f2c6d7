"""The chat use case's door: the memories a chat answer may use, and recording the answered turn.

The answer itself comes from a chat model (``memos.chat``, or the HTTP server's ``ChatFn``); what the
model may see and what is written back go through the same checks as search and add.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

from memos.application.ids import check_ids
from memos.application.models import AddRequest, SearchRequest, build
from memos.application.ports import Platform

__all__ = ["ChatUseCases"]

logger = logging.getLogger(__name__)

_CONTEXT_BUCKETS = ("text_mem", "pref_mem")


class ChatUseCases:
    """Chat context and turn recording; mixed into :class:`memos.application.service.MemoryService`."""

    rt: Platform

    async def check_chat(self, user_id: str, readable: Sequence[str], writable: Sequence[str] = (), *,
                         record: bool = False, create: bool = True) -> None:
        """Check a chat before any model runs: read access to ``readable``, write access to ``writable``
        when the turn is to be ``record``-ed (unknown cubes are created for the user, as an add does, unless
        ``create`` is False: a chat that will not run, where only existing cubes are checked)."""
        for cube in check_ids(list(readable), "readable_cube_ids") if readable else []:
            await self.authorize(user_id, cube, "read")  # type: ignore[attr-defined]
        if record:
            for cube in check_ids(list(writable), "writable_cube_ids") if writable else []:
                if create or await self.cube_exists(cube):  # type: ignore[attr-defined]
                    await self.check_write(user_id, cube, auto_create=None if create else False)  # type: ignore[attr-defined]

    async def chat_context(self, user_id: str, cube_ids: Sequence[str], query: str, **options: Any) -> list[str]:
        """The memory texts (text, then preference memories) of the readable cubes for a chat prompt."""
        if not cube_ids:
            return []
        counts = {k: options.pop(k) for k in ("top_k", "pref_top_k") if options.get(k) is not None}
        request = build(SearchRequest, user_id=user_id, cube_ids=tuple(cube_ids), query=query,
                        options={k: v for k, v in options.items() if v is not None}, **counts)
        data: dict[str, Any] = await self.search_memories(request)  # type: ignore[attr-defined]
        return [_attributed(m, user_id) for bucket in _CONTEXT_BUCKETS for entry in data.get(bucket, [])
                for m in entry.get("memories", [])]

    async def record_turn(self, user_id: str, cube_ids: Sequence[str], query: str, answer: str, *,
                          session_id: str = "default_session", origin: Literal["remote", "local"] = "remote"
                          ) -> list[str]:
        """Add the answered turn (user query, assistant answer) to the cubes, asynchronously; its task ids."""
        if not cube_ids:
            return []
        request = build(AddRequest, user_id=user_id, cube_ids=tuple(cube_ids), session_id=session_id,
                        messages=[{"role": "user", "content": query}, {"role": "assistant", "content": answer}],
                        mode="fine", async_mode="async", origin=origin)
        added = await self.add_memories(request)  # type: ignore[attr-defined]
        return [a.task_id for a in added]


def _attributed(memory: dict[str, Any], user_id: str) -> str:
    """A memory's text for a chat prompt, marked with its writer when another user wrote it into a shared cube
    ("The user prefers quiet rooms" there is about its writer, not about the one chatting)."""
    writer = str(memory.get("metadata", {}).get("user_id") or "")
    text = str(memory["memory"])
    return f"[memory of user {writer}, not of this user] {text}" if writer and writer != user_id else text
