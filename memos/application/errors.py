"""The one map from the error tree to HTTP-like status codes, used by every front end (HTTP, MCP, router)."""

from __future__ import annotations

import logging
import math
from typing import Any

from schemas.errors import (
    BrokerUnavailable,
    FetchFailed,
    MemorySystemError,
    ModelUnavailable,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    SchemaError,
    StoreBackpressure,
    StoreUnavailable,
    ValidationFailed,
)

__all__ = ["AddFailed", "AddTimedOut", "BacklogFull", "CubeBusy", "FeedsBusy", "ForgetUnsupported", "KeyChecksBusy", "ProjectorElsewhere", "ReplaysBusy", "SearchesBusy",
           "describe", "retry_after", "status_of"]

logger = logging.getLogger(__name__)


class BacklogFull(StoreBackpressure):
    """The derivation backlog is full: a sync add is refused (HTTP 429) and may be retried later."""


class SearchesBusy(StoreBackpressure):
    """Too many searches are running or waiting (for everyone, or for this user): HTTP 429, retry later."""


class KeyChecksBusy(StoreBackpressure):
    """API-key checks are bounded (per process, and per key id after a failure): HTTP 429, retry later."""


class CubeBusy(StoreBackpressure):
    """A cube is being forgotten (writes to it are refused meanwhile), or its forget could not start yet because
    its adds are still being derived: HTTP 409, retry later."""


class ReplaysBusy(StoreBackpressure):
    """A new replay would exceed the user's or the process's share of replays: HTTP 429, retry later."""


class FeedsBusy(StoreBackpressure):
    """The user has as many feeds open as ``door.feeds_per_user`` allows: HTTP 429, retry later."""


class ProjectorElsewhere(MemorySystemError):
    """A replay or forget asked of a process while another process projects the same data: it could pause only
    its own projector and race the other one (HTTP 409); ask the process that hosts the projector."""


class ForgetUnsupported(MemorySystemError):
    """This deployment's log cannot delete records (Kafka): a forget is refused, with nothing changed (HTTP 501)."""


class AddTimedOut(MemorySystemError):
    """A sync add was recorded on the log but not derived in time (HTTP 504).

    The add will still complete: its conversation is on the log and its tasks (``task_ids``) can be
    followed with the task-status use case.
    """

    def __init__(self, message: str, *, task_ids: list[str], will_complete: bool = True) -> None:
        super().__init__(message)
        self.task_ids = task_ids
        self.will_complete = will_complete

    @property
    def data(self) -> dict[str, Any]:
        """What a front end reports beside the message."""
        return {"task_ids": self.task_ids, "will_complete": self.will_complete}


class AddFailed(MemorySystemError):
    """A sync add was recorded on the log but deriving its memories failed for good (HTTP 500): the record is on
    the dead-letter topic with the reason, its tasks (``task_ids``) say ``failed``, and a replay after a fix
    derives it again."""

    def __init__(self, message: str, *, task_ids: list[str]) -> None:
        super().__init__(message)
        self.task_ids = task_ids

    @property
    def data(self) -> dict[str, Any]:
        """What a front end reports beside the message."""
        return {"task_ids": self.task_ids, "will_complete": False}


_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (NotFound, 404),
    (PermissionDenied, 403),
    (PayloadTooLarge, 413),
    (ValidationFailed, 422),
    (SchemaError, 422),
    (FetchFailed, 422),
    (BacklogFull, 429),
    (SearchesBusy, 429),
    (KeyChecksBusy, 429),
    (ReplaysBusy, 429),
    (FeedsBusy, 429),
    (CubeBusy, 409),
    (ProjectorElsewhere, 409),
    (ForgetUnsupported, 501),
    (AddTimedOut, 504),
    (StoreBackpressure, 503),
    (StoreUnavailable, 503),
    (BrokerUnavailable, 503),
    (ModelUnavailable, 503),
    (TimeoutError, 504),
)


def status_of(exc: BaseException) -> int:
    """HTTP-like status of an error: 4xx for what the caller got wrong, 429/503/504 for load, else 500."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def retry_after(exc: BaseException) -> int | None:
    """Seconds a caller should wait before retrying (the Retry-After header), when the error says."""
    if isinstance(exc, StoreBackpressure):
        return max(1, math.ceil(exc.retry_after))  # never earlier than the error said
    return None


def describe(exc: BaseException) -> str:
    """The message of an error, prefixed with the field it names when the message does not say it."""
    message = str(exc) or type(exc).__name__
    field = getattr(exc, "field", None)
    if field and field not in message:
        message = f"{field}: {message}"
    return message
