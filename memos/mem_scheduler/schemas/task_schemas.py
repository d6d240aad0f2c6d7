"""Scheduler task labels, priorities and running-task records (MemOS ``task_schemas``).

Labels and values follow MemOS ``src/memos/mem_scheduler/schemas/task_schemas.py`` (MemTensor/MemOS
as found in the wustzdy/MemOS and saraphine001/MemOS forks; not in the indexed MemTensor tree). Handlers may register other labels too; these are the built-in ones.
"""

from __future__ import annotations

import logging
from datetime import datetime
from enum import Enum
from typing import Any, Final

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, computed_field

from memos.mem_scheduler.utils.db_utils import get_utc_now

__all__ = [
    "ADD_TASK_LABEL",
    "ANSWER_TASK_LABEL",
    "API_MIX_SEARCH_TASK_LABEL",
    "BUILTIN_TASK_LABELS",
    "DEFAULT_MAX_QUERY_KEY_WORDS",
    "LONG_TERM_MEMORY_TYPE",
    "MEM_ARCHIVE_TASK_LABEL",
    "MEM_FEEDBACK_TASK_LABEL",
    "MEM_ORGANIZE_TASK_LABEL",
    "MEM_READ_TASK_LABEL",
    "MEM_UPDATE_TASK_LABEL",
    "NOT_APPLICABLE_TYPE",
    "PREF_ADD_TASK_LABEL",
    "QUERY_TASK_LABEL",
    "USER_INPUT_TYPE",
    "RunningTaskItem",
    "TaskPriorityLevel",
]

logger = logging.getLogger(__name__)


class TaskPriorityLevel(Enum):
    """Task priority; LEVEL_1 is the highest."""

    LEVEL_1 = 1
    LEVEL_2 = 2
    LEVEL_3 = 3


QUERY_TASK_LABEL: Final = "query"
ANSWER_TASK_LABEL: Final = "answer"
ADD_TASK_LABEL: Final = "add"
MEM_READ_TASK_LABEL: Final = "mem_read"
MEM_ORGANIZE_TASK_LABEL: Final = "mem_organize"
MEM_UPDATE_TASK_LABEL: Final = "mem_update"
MEM_ARCHIVE_TASK_LABEL: Final = "mem_archive"
API_MIX_SEARCH_TASK_LABEL: Final = "api_mix_search"
PREF_ADD_TASK_LABEL: Final = "pref_add"
MEM_FEEDBACK_TASK_LABEL: Final = "mem_feedback"

BUILTIN_TASK_LABELS: Final = (
    QUERY_TASK_LABEL,
    ANSWER_TASK_LABEL,
    ADD_TASK_LABEL,
    MEM_READ_TASK_LABEL,
    MEM_ORGANIZE_TASK_LABEL,
    MEM_UPDATE_TASK_LABEL,
    MEM_ARCHIVE_TASK_LABEL,
    API_MIX_SEARCH_TASK_LABEL,
    PREF_ADD_TASK_LABEL,
    MEM_FEEDBACK_TASK_LABEL,
)
"""Every label above, in MemOS's order."""

DEFAULT_MAX_QUERY_KEY_WORDS: Final = 1000
LONG_TERM_MEMORY_TYPE: Final = "LongTermMemory"
USER_INPUT_TYPE: Final = "UserInput"
NOT_APPLICABLE_TYPE: Final = "NotApplicable"


class RunningTaskItem(BaseModel):
    """A task a dispatcher is running (MemOS ``RunningTaskItem``)."""

    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(..., min_length=1, description="Id of the schedule message being handled.")
    user_id: str = Field(..., min_length=1, description="User of the task.")
    mem_cube_id: str = Field(..., min_length=1, description="Cube of the task.")
    task_info: str = Field(..., description="What the task does.")
    task_name: str = Field(..., description="Handler name / label.")
    start_time: AwareDatetime = Field(default_factory=get_utc_now, description="When it started.")
    end_time: AwareDatetime | None = Field(default=None, description="When it finished.")
    status: str = Field(default="running", description="running, completed or failed.")
    result: Any | None = Field(default=None, description="Handler result.")
    error_message: str | None = Field(default=None, description="Why it failed.")
    messages: list[Any] | None = Field(default=None, description="Messages handled by this task.")

    def mark_completed(self, result: Any | None = None, *, at: datetime | None = None) -> None:
        """Record success (``at`` defaults to now)."""
        self.end_time = at or get_utc_now()
        self.status = "completed"
        self.result = result

    def mark_failed(self, error_message: str, *, at: datetime | None = None) -> None:
        """Record failure (``at`` defaults to now)."""
        self.end_time = at or get_utc_now()
        self.status = "failed"
        self.error_message = error_message

    @computed_field  # type: ignore[prop-decorator]
    @property
    def duration_seconds(self) -> float | None:
        """Seconds from start to end, or None while running."""
        if self.end_time is None:
            return None
        return (self.end_time - self.start_time).total_seconds()
