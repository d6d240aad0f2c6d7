"""Positions on the log and the envelopes that carry records and decoded events between stages."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Envelope", "Header", "Position", "Record"]

logger = logging.getLogger(__name__)

E = TypeVar("E")
Header = tuple[str, bytes]


@dataclass(frozen=True, order=True, slots=True)
class Position:
    """Where a record sits on the log; identical for the Kafka and the embedded log."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}@{self.offset}"


@dataclass(frozen=True, slots=True)
class Record:
    """A raw record as stored on the log: key, value bytes, headers and append time."""

    position: Position
    key: bytes | None
    value: bytes
    headers: tuple[Header, ...] = ()
    timestamp_ms: int = 0

    def header(self, name: str) -> bytes | None:
        """Return the last header value with that name, or None."""
        for key, value in reversed(self.headers):
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class Envelope(Generic[E]):
    """A decoded event together with the position it was read from."""

    position: Position
    event: E
    headers: tuple[Header, ...] = field(default=())
