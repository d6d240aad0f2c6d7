"""Bottom layer: events, envelopes, the Avro codec, projection ops and the error tree."""

from __future__ import annotations

from schemas.codec import decode, encode
from schemas.envelope import Envelope, Position, Record
from schemas.errors import MemorySystemError
from schemas.events import AnyEvent, Event, derive_id

__all__ = [
    "AnyEvent",
    "Envelope",
    "Event",
    "MemorySystemError",
    "Position",
    "Record",
    "decode",
    "derive_id",
    "encode",
]
