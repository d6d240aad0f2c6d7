"""What the application layer needs from the system below it, as typed ports (the Runtime provides them).

The application never imports the composition root (``memos.runtime``): a front end builds the
Runtime and hands it to :class:`memos.application.service.MemoryService`, which only sees it through
:class:`Platform`. Reads of users, keys, cubes, shares and tasks go through the control store port;
every change to them is an event on the log, which the control stage projects (one writer).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from memory_store.base import GraphStore
from memory_store.control.base import ControlStore
from memory_store.embedding.base import Embedder
from memos.application.limits import DoorLimits
from schemas.envelope import Position
from schemas.events import Event, TaskSubmitted
from streams.log.base import EventLog, OutgoingRecord, TopicPartition
from streams.replay import Progress
from streams.settings import AppSettings

__all__ = ["Platform", "SearchPort", "TaskHandler"]

logger = logging.getLogger(__name__)

TaskHandler = Callable[[list[TaskSubmitted]], Awaitable[dict[str, Any] | None]]
"""Runs a group of submitted tasks of one label (same user and cube); its dict is the tasks' result."""


class SearchPort(Protocol):
    """Multi-cube search (``memos.application.search.SearchService``)."""

    async def search(self, query: Any) -> dict[str, Any]:
        """MemOS's ``data`` dict for a ``processors.retrieval.SearchQuery``."""
        ...


class Platform(Protocol):
    """The running system as the use cases see it: the log, the projections' read side, the models."""

    settings: AppSettings
    control: ControlStore
    graph: GraphStore
    log: EventLog
    """Feeds and operator views read it."""

    @property
    def embedder(self) -> Embedder:
        """Imports embed drafts without an embedding."""
        ...

    @property
    def search_service(self) -> SearchPort:
        """Multi-cube search."""
        ...

    run_stages: bool

    @property
    def door_limits(self) -> DoorLimits:
        """The application layer's limits as configured (the ``door`` settings section)."""
        ...

    @property
    def registry_version(self) -> int | None:
        """A counter the control projection bumps after applying registry records in this process; None
        when no control stage runs here (access answers are then never remembered)."""
        ...

    def now(self) -> datetime:
        """The clock of new events."""
        ...

    async def publish(self, events: Sequence[Event]) -> list[Position]:
        """Append events durably; positions in input order."""
        ...

    async def publish_records(self, records: Sequence[OutgoingRecord]) -> list[Position]:
        """Append log records already made from events (``event_record``) durably; positions in input order."""
        ...

    async def settle(self, positions: Sequence[Position], *, timeout_s: float = 300.0,
                     large: bool | None = None, tasks: Sequence[str] = ()) -> None:
        """Read-your-writes: wait until the effects of ``positions`` are in every projection (``large``: whether
        any add among them goes to the lane of large adds, when the caller knows; None: look it up; ``tasks``:
        the adds' task ids, so an add is waited for until its own status is final, not its lane's commit)."""
        ...

    def failed_stages(self) -> list[str]:
        """Stages hosted in this process that stopped on an error, with their errors."""
        ...

    async def stage_failure(self) -> list[str]:
        """Until a stage hosted in this process stops on an error: ``failed_stages``."""
        ...

    async def settle_control(self, positions: Sequence[Position], *, timeout_s: float = 60.0) -> None:
        """Read-your-writes for the control projection only (registry and task records)."""
        ...

    def group(self, stage_name: str) -> str:
        """The consumer group of a stage (its name with the deployment's group prefix)."""
        ...

    async def wait_for(self, group: str, targets: Mapping[TopicPartition, int], *, timeout_s: float = 120.0) -> None:
        """Wait until a stage (by name) has committed past every (topic, partition) -> offset; TimeoutError."""
        ...

    async def derivation_backlog(self) -> int:
        """Conversation records on the log that derivation has not passed yet."""
        ...

    async def forget_records(self, cube_id: str | None = None, *, registry_key: str | None = None) -> None:
        """Delete a cube's records from every topic and projection (or one registry key's records)."""
        ...

    async def forget_user_writes(self, user_id: str, cube_ids: Sequence[str]) -> int:
        """Delete what a user wrote into cubes others keep from the log and the projections."""
        ...

    async def replay_cube(self, cube_id: str, *, progress: Progress | None = None) -> int:
        """Rebuild one cube in every projection from the log (``progress``: done, total); returns the events
        applied."""
        ...

    def register_task_handler(self, label: str, handler: TaskHandler | None) -> None:
        """Install (None: remove) the handler the dispatch stage runs for a task label."""
        ...

    def task_handler(self, label: str) -> TaskHandler | None:
        """The handler installed for a task label, if any."""
        ...
