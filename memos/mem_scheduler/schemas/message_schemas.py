"""Schedule messages: the unit of work handed to scheduler handlers (MemOS ``ScheduleMessageItem``).

Fields and defaults follow MemOS ``src/memos/mem_scheduler/schemas/message_schemas.py`` (MemTensor/MemOS
commit 9ed747e2, and the later revision with ``task_id``/``trace_id``/``user_name`` seen in the
wustzdy/MemOS fork, commit 04b10071). Differences: ``mem_cube`` is optional and never serialised (MemOS rendered it as
``"<GeneralMemCube:id>"``); ``timestamp`` must be timezone-aware; unknown fields are errors.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Self
from uuid import uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from memos.mem_scheduler.utils.db_utils import get_utc_now

__all__ = ["ScheduleMessageItem"]

logger = logging.getLogger(__name__)


def _new_trace_id() -> str:
    return uuid4().hex


class ScheduleMessageItem(BaseModel):
    """One message for the scheduler: a ``label`` (task kind), its ``content``, and who/where it is for.

    ``model_copy(update={"label": ...})`` re-labels a message, as MemOS handlers do; the copy keeps
    ``item_id``, so a scheduler must key work by ``(item_id, label)``.
    """

    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(
        default_factory=lambda: str(uuid4()), min_length=1, description="Message id (uuid4)."
    )
    redis_message_id: str = Field(
        default="", description="Id the queue gave the message (MemOS Redis stream id)."
    )
    stream_key: str = Field(default="", description="Queue the message was read from.")
    user_id: str = Field(..., min_length=1, description="User the work is for.")
    trace_id: str = Field(default_factory=_new_trace_id, description="Trace id for logs.")
    mem_cube_id: str = Field(..., min_length=1, description="Cube the work is on.")
    session_id: str = Field(default="", description="Session, used to weight memories.")
    label: str = Field(..., min_length=1, description="Task label, e.g. 'query', 'answer', 'mem_update'.")
    mem_cube: Any = Field(
        default=None, exclude=True, repr=False, description="The live cube object; never serialised."
    )
    content: str = Field(..., description="Content: query text, answer text, or a JSON payload.")
    timestamp: AwareDatetime = Field(default_factory=get_utc_now, description="When it was submitted (UTC).")
    user_name: str = Field(default="", description="User or display name.")
    info: dict[str, Any] | None = Field(default=None, description="Caller's custom info.")
    task_id: str | None = Field(default=None, description="Business task id; several messages may share it.")

    def to_dict(self) -> dict[str, Any]:
        """Flat dict for a message queue, with MemOS's key names (``cube_id``, ``cube``)."""
        return {
            "item_id": self.item_id,
            "user_id": self.user_id,
            "cube_id": self.mem_cube_id,
            "trace_id": self.trace_id,
            "session_id": self.session_id,
            "label": self.label,
            "cube": "Not Applicable",
            "content": self.content,
            "timestamp": self.timestamp.isoformat(),
            "user_name": self.user_name,
            "task_id": self.task_id if self.task_id is not None else "",
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Inverse of :meth:`to_dict` (the cube object is not restored)."""
        return cls(
            item_id=data.get("item_id") or str(uuid4()),
            user_id=data["user_id"],
            mem_cube_id=data["cube_id"],
            trace_id=data.get("trace_id") or _new_trace_id(),
            session_id=data.get("session_id") or "",
            label=data["label"],
            content=data["content"],
            timestamp=datetime.fromisoformat(data["timestamp"]),
            user_name=data.get("user_name") or "",
            task_id=data.get("task_id") or None,
        )
