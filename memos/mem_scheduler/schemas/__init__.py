"""Scheduler schemas: schedule messages (``message_schemas``) and task labels (``task_schemas``)."""

from __future__ import annotations

import logging

from memos.mem_scheduler.schemas.message_schemas import ScheduleMessageItem
from memos.mem_scheduler.schemas.task_schemas import (
    ADD_TASK_LABEL,
    ANSWER_TASK_LABEL,
    API_MIX_SEARCH_TASK_LABEL,
    BUILTIN_TASK_LABELS,
    MEM_ARCHIVE_TASK_LABEL,
    MEM_FEEDBACK_TASK_LABEL,
    MEM_ORGANIZE_TASK_LABEL,
    MEM_READ_TASK_LABEL,
    MEM_UPDATE_TASK_LABEL,
    PREF_ADD_TASK_LABEL,
    QUERY_TASK_LABEL,
    RunningTaskItem,
    TaskPriorityLevel,
)

__all__ = [
    "ADD_TASK_LABEL",
    "ANSWER_TASK_LABEL",
    "API_MIX_SEARCH_TASK_LABEL",
    "BUILTIN_TASK_LABELS",
    "MEM_ARCHIVE_TASK_LABEL",
    "MEM_FEEDBACK_TASK_LABEL",
    "MEM_ORGANIZE_TASK_LABEL",
    "MEM_READ_TASK_LABEL",
    "MEM_UPDATE_TASK_LABEL",
    "PREF_ADD_TASK_LABEL",
    "QUERY_TASK_LABEL",
    "RunningTaskItem",
    "ScheduleMessageItem",
    "TaskPriorityLevel",
]

logger = logging.getLogger(__name__)
