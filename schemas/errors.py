"""The one error tree of the memory system; every package raises a subclass of MemorySystemError.

    MemorySystemError
    ├── ConfigError                      bad or missing configuration
    ├── ValidationFailed                 bad user input; names the field (HTTP 4xx)
    │   ├── NotFound                     unknown cube, user, memory or task (HTTP 404)
    │   ├── PermissionDenied             the user may not read or write that cube (HTTP 403)
    │   └── PayloadTooLarge              request or file over a size limit (HTTP 413)
    ├── SchemaError                      an event or payload does not fit its schema
    │   └── EventDecodeError             poison bytes on the log: sent to the DLQ, then committed
    ├── TransportError                   the event log failed
    │   └── BrokerUnavailable            retryable: back off and retry
    ├── StoreError                       a projection store failed
    │   ├── StoreUnavailable             retryable: back off and retry
    │   ├── StoreBackpressure            retryable after ``retry_after`` seconds
    │   └── DimensionMismatch            an embedding does not fit the store's dimension
    ├── ModelError                       an LLM, embedder or fetcher failed
    │   ├── ModelUnavailable             retryable: the endpoint did not answer
    │   ├── ModelOutputInvalid           the model answered with something unparsable
    │   └── FetchFailed                  a file or image could not be downloaded or read
    │       └── OverBudget               an input is over a parsing budget (recorded as a memory that says so)
    └── ProcessingError                  a processor could not handle a decoded event (goes to the DLQ)
        └── StageStalled                 a stage finished no batch for too long: it stops, its worker restarts
"""

from __future__ import annotations

import logging

__all__ = [
    "BrokerUnavailable",
    "ConfigError",
    "DimensionMismatch",
    "EventDecodeError",
    "FetchFailed",
    "MemorySystemError",
    "ModelError",
    "ModelOutputInvalid",
    "ModelUnavailable",
    "NotFound",
    "OverBudget",
    "PayloadTooLarge",
    "PermissionDenied",
    "ProcessingError",
    "SchemaError",
    "StageStalled",
    "StoreBackpressure",
    "StoreError",
    "StoreUnavailable",
    "TransportError",
    "ValidationFailed",
    "is_retryable",
]

logger = logging.getLogger(__name__)


class MemorySystemError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(MemorySystemError):
    """Configuration is missing, malformed, or names an unknown adapter."""


class ValidationFailed(MemorySystemError):
    """User input is invalid; ``field`` names the offending field when known."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFound(ValidationFailed):
    """A named cube, user, memory or task does not exist."""


class PermissionDenied(ValidationFailed):
    """The caller may not perform this operation on that cube."""


class PayloadTooLarge(ValidationFailed):
    """A request body, message or file is over a configured size limit."""


class SchemaError(MemorySystemError):
    """An event or payload does not match its schema."""


class EventDecodeError(SchemaError):
    """Bytes on the log could not be decoded into an event (a poison message)."""


class TransportError(MemorySystemError):
    """The event log failed."""


class BrokerUnavailable(TransportError):
    """The broker or log file could not be reached; retryable."""


class StoreError(MemorySystemError):
    """A projection store failed."""


class StoreUnavailable(StoreError):
    """The store could not be reached; retryable."""


class StoreBackpressure(StoreError):
    """The store asks the caller to slow down and retry after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DimensionMismatch(StoreError):
    """An embedding's dimension differs from the dimension the store was built with."""


class ModelError(MemorySystemError):
    """An LLM, embedding model or fetcher failed."""


class ModelUnavailable(ModelError):
    """The model endpoint did not answer; retryable."""


class ModelOutputInvalid(ModelError):
    """The model answered, but its output could not be parsed."""


class FetchFailed(ModelError):
    """A referenced file or image could not be downloaded or read."""


class OverBudget(FetchFailed):
    """An input is over a parsing budget: decompressed size, pages, characters, memory or time."""


class ProcessingError(MemorySystemError):
    """A processor failed on a decoded event; the record goes to the DLQ."""


class StageStalled(ProcessingError):
    """A stage had batches in flight and finished none for too long (a hang raises nothing): the runner stops,
    so its worker exits and is restarted, and the batch is taken record by record (poison detection)."""


def is_retryable(exc: BaseException) -> bool:
    """Return True when the runner should back off and retry rather than dead-letter."""
    return isinstance(exc, BrokerUnavailable | StoreUnavailable | StoreBackpressure | ModelUnavailable)
