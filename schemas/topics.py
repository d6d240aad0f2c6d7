"""Topic names of the log, which topic each event type is written to, and which topics each stage reads."""

from __future__ import annotations

import logging
from typing import Final

from schemas.events import EVENT_TYPES

__all__ = [
    "ACTIVATION",
    "ALL_TOPICS",
    "CONVERSATIONS",
    "DLQ",
    "MEMORIES",
    "REGISTRY",
    "STAGE_READS",
    "TASKS",
    "topic_for",
]

logger = logging.getLogger(__name__)

CONVERSATIONS: Final = "memos.conversations.v1"
MEMORIES: Final = "memos.memories.v1"
TASKS: Final = "memos.tasks.v1"
ACTIVATION: Final = "memos.activation.v1"
REGISTRY: Final = "memos.registry.v1"
DLQ: Final = "memos.dlq.v1"
ALL_TOPICS: Final = (CONVERSATIONS, MEMORIES, TASKS, ACTIVATION, REGISTRY, DLQ)

STAGE_READS: Final[dict[str, tuple[str, ...]]] = {
    "deriver": (CONVERSATIONS,),
    "deriver-large": (CONVERSATIONS,),
    "refiner": (CONVERSATIONS,),
    "refiner-large": (CONVERSATIONS,),
    "projector": (MEMORIES, REGISTRY),
    "control": (REGISTRY, TASKS),
    "scheduler": (TASKS,),
    "kv-warmer": (TASKS, MEMORIES, REGISTRY),
}
"""Stage name (its consumer group, without the deployment's prefix) -> the topics it reads. The stages take their
``topics`` from here, and a stage that never committed on one of its topics has consumed nothing of it."""

_TOPIC_OF: dict[str, str] = {cls.model_fields["event_type"].default: cls.topic for cls in EVENT_TYPES}


def topic_for(event_type: str) -> str:
    """Return the topic an event type is written to; KeyError for unknown types."""
    return _TOPIC_OF[event_type]
