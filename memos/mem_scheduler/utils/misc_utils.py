"""YAML loading and message grouping for the scheduler (MemOS ``memos.mem_scheduler.utils.misc_utils``)."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from memos.configs.base import read_yaml_mapping
from memos.mem_scheduler.schemas.message_schemas import ScheduleMessageItem

__all__ = ["group_messages_by_user_and_mem_cube", "parse_yaml"]

logger = logging.getLogger(__name__)


def parse_yaml(yaml_file: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a YAML config file into a dict.

    Raises ``ConfigFileNotFound`` (a ``FileNotFoundError`` and a ``ConfigError``) when the file is
    missing, and ``ConfigError`` when it is not YAML or not a mapping.
    """
    return read_yaml_mapping(yaml_file)


def group_messages_by_user_and_mem_cube(
    messages: Iterable[ScheduleMessageItem],
) -> dict[str, dict[str, list[ScheduleMessageItem]]]:
    """Group messages by ``user_id`` then ``mem_cube_id``, keeping their order within each group."""
    grouped: defaultdict[str, defaultdict[str, list[ScheduleMessageItem]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for message in messages:
        grouped[message.user_id][message.mem_cube_id].append(message)
    return {user_id: dict(cubes) for user_id, cubes in grouped.items()}
