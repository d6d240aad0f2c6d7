"""Events <-> Avro single-object encoding (fastavro), with schema fingerprints, history and upcasters."""

from __future__ import annotations

import io
import json
import logging
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form
from pydantic import ValidationError

from schemas.avro_fast import Reader, compile_reader
from schemas.avro_gen import AVRO_DIR, F32_PROP, JSON_PROP, avro_schema
from schemas.errors import EventDecodeError, SchemaError
from schemas.events import EVENT_TYPES, AnyEvent, Event, any_event_adapter

__all__ = [
    "HISTORY_DIR",
    "MAGIC",
    "UPCASTERS",
    "decode",
    "Float32List",
    "Float32Tuple",
    "Float32Vector",
    "decode_dict",
    "decode_raw",
    "encode",
    "float32_blob",
    "float32_tuple",
    "fingerprint_of",
    "known_fingerprints",
]

logger = logging.getLogger(__name__)

MAGIC = b"\xc3\x01"
"""Avro single-object encoding marker."""
HISTORY_DIR = AVRO_DIR / "history"
"""Every schema version ever released, named ``<EventType>.v<N>.avsc``; used to read old payloads."""

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}
"""(event_type, from_version) -> pure function lifting a decoded dict one version up."""

_BY_NAME: dict[str, type[Event]] = {cls.__name__: cls for cls in EVENT_TYPES}


def _fp(schema: dict[str, Any]) -> bytes:
    parsed = parse_schema(schema, _write_hint=False, _force=True)
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


class Float32List(list[float]):
    """A decoded float32 field: the floats, plus the little-endian float32 bytes they came from (``blob``).

    Equal to (and usable as) a plain list; stores and the encoder use ``blob`` instead of converting the
    floats back (a replay otherwise spends much of its time turning 384 floats into bytes again).
    """

    __slots__ = ("blob",)

    def __init__(self, values: list[float], blob: bytes) -> None:
        super().__init__(values)
        self.blob = blob


class Float32Tuple(tuple[float, ...]):
    """The tuple form of a ``Float32List`` (record and op fields are tuples), keeping ``blob``."""

    blob: bytes


class Float32Vector(Sequence[float]):
    """Float32 bytes read as a sequence of floats only when asked (a replay's stores use the bytes alone).

    Equal to the tuple of its floats; ``blob`` holds the little-endian float32 bytes.
    """

    __slots__ = ("_values", "blob")

    def __init__(self, blob: bytes) -> None:
        if len(blob) % 4:
            raise ValueError(f"float32 field of {len(blob)} bytes")
        self.blob = blob
        self._values: tuple[float, ...] | None = None

    def _floats(self) -> tuple[float, ...]:
        if self._values is None:
            self._values = tuple(np.frombuffer(self.blob, dtype="<f4").tolist())
        return self._values

    def __len__(self) -> int:
        return len(self.blob) // 4

    def __getitem__(self, index: Any) -> Any:
        return self._floats()[index]

    def __iter__(self) -> Iterator[float]:
        return iter(self._floats())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Float32Vector):
            return self.blob == other.blob
        if isinstance(other, (tuple, list)):
            return self._floats() == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Float32Vector({len(self)} floats)"


def float32_tuple(values: Any) -> tuple[float, ...]:
    """``tuple(values)``, keeping the float32 bytes of a ``Float32List``, ``Float32Tuple`` or ``Float32Vector``
    (a ``Float32Vector`` is passed through as it is)."""
    blob = getattr(values, "blob", None)
    if blob is None:
        return tuple(values)
    if type(values) is Float32Tuple or type(values) is Float32Vector:
        return values  # type: ignore[return-value]
    out = Float32Tuple(values)
    out.blob = blob
    return out


def float32_blob(values: Any) -> bytes | None:
    """The float32 bytes a decoded embedding came from, or None for any other sequence of floats."""
    if type(values) is Float32Vector:
        return values.blob
    blob = getattr(values, "blob", None)
    return blob if isinstance(blob, bytes) and len(blob) == 4 * len(values) else None


Converter = Callable[[Any], Any]


def _f32(value: bytes) -> Float32List:
    if len(value) % 4:
        raise ValueError(f"float32 field of {len(value)} bytes")
    return Float32List(np.frombuffer(value, dtype="<f4").tolist(), bytes(value))


_EMPTY_JSON: dict[str, Callable[[], Any]] = {"{}": dict, "[]": list, "null": lambda: None}


def _json_field(value: str) -> Any:
    """A JSON-string field's value (most are "{}": answered without the parser)."""
    empty = _EMPTY_JSON.get(value)
    return empty() if empty is not None else json.loads(value)


def _optional(convert: Converter) -> Converter:
    return lambda value: None if value is None else convert(value)


def _json_dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _f32_bytes(value: Any) -> bytes:
    blob = float32_blob(value)
    return blob if blob is not None else np.asarray(value, dtype="<f4").tobytes()


Fields = list[tuple[str, Converter | None]]


def _in_place(fields: Fields) -> Converter:
    converted = [(name, convert) for name, convert in fields if convert is not None]

    def record(value: dict[str, Any]) -> dict[str, Any]:
        # fastavro's fresh dict of exactly the writer's fields, in order: converted in place
        for name, convert in converted:
            value[name] = convert(value.get(name))
        return value

    return record


def _fresh(fields: Fields) -> Converter:
    # a model_dump: a new dict of exactly the schema's fields
    return lambda value: {name: value.get(name) if convert is None else convert(value.get(name))
                          for name, convert in fields}


@dataclass(frozen=True, slots=True)
class _Way:
    """What a compiled converter does to JSON and float32 fields and to records: reading or writing."""

    json: Converter
    f32: Converter
    record: Callable[[Fields], Converter]


_READ = _Way(_json_field, _f32, _in_place)
_WRITE = _Way(_json_dump, _f32_bytes, _fresh)


def _compile(schema: Any, way: _Way, names: dict[str, Any] | None) -> Converter | None:
    """A function converting values of ``schema`` the ``way`` given, built once per schema; None: identity.
    ``names`` (reading): the named types met so far, so that a reference by name resolves; None: no resolving."""
    if isinstance(schema, str) and names is not None:
        schema = names.get(schema, schema)
    if not _needs_conversion(schema):
        if names is not None:
            _register_names(schema, names)
        return None
    if isinstance(schema, list):
        branch = _compile(next(s for s in schema if s != "null"), way, names)
        return None if branch is None else _optional(branch)
    kind = schema["type"]
    if schema.get(JSON_PROP):
        return way.json
    if schema.get(F32_PROP):
        return way.f32
    if kind == "record":
        if names is not None:
            names.setdefault(schema["name"], schema)
        return way.record([(f["name"], _compile(f["type"], way, names)) for f in schema["fields"]])
    if kind == "array":
        item = _compile(schema["items"], way, names)
        return None if item is None else (lambda value: [item(v) for v in value])
    if kind == "map":
        each = _compile(schema["values"], way, names)
        return None if each is None else (lambda value: {k: each(v) for k, v in value.items()})
    return None


def _converter(schema: Any, names: dict[str, Any]) -> Converter | None:
    """A function doing what ``_from_avro(schema, ...)`` does, built once per schema; None: identity."""
    return _compile(schema, _READ, names)


def _encoder(schema: Any) -> Converter | None:
    """A function turning a ``model_dump`` value into what fastavro writes for ``schema`` (JSON fields to
    strings, float32 fields to bytes, records to exactly their fields), built once per schema; None: identity."""
    return _compile(schema, _WRITE, None)


class _Entry:
    __slots__ = ("convert", "name", "parsed", "raw", "to_avro", "version")

    def __init__(self, name: str, raw: dict[str, Any], version: int) -> None:
        self.name = name
        self.raw = raw
        self.version = version
        self.parsed = parse_schema(raw, _force=True)
        self.convert = _converter(raw, {})
        self.to_avro = _encoder(raw)


@lru_cache(maxsize=1)
def _registry() -> tuple[dict[str, tuple[bytes, _Entry]], dict[bytes, _Entry]]:
    current: dict[str, tuple[bytes, _Entry]] = {}
    by_fp: dict[bytes, _Entry] = {}
    for cls in EVENT_TYPES:
        raw = avro_schema(cls)
        version = int(cls.model_fields["schema_version"].default)
        entry = _Entry(cls.__name__, raw, version)
        fp = _fp(raw)
        current[cls.__name__] = (fp, entry)
        by_fp[fp] = entry
    if HISTORY_DIR.is_dir():
        for path in sorted(HISTORY_DIR.glob("*.avsc")):
            name, version_tag = path.stem.split(".", 1)
            raw = json.loads(path.read_text(encoding="utf-8"))
            fp = _fp(raw)
            by_fp.setdefault(fp, _Entry(name, raw, int(version_tag.lstrip("v"))))
    return current, by_fp


def known_fingerprints() -> dict[bytes, str]:
    """Fingerprints this reader can decode, mapped to their event type names."""
    return {fp: entry.name for fp, entry in _registry()[1].items()}


def fingerprint_of(event_type: str) -> bytes:
    """Current 8-byte CRC-64-AVRO fingerprint of an event type's schema."""
    return _registry()[0][event_type][0]


_NEEDS_CONVERSION: dict[int, tuple[Any, bool]] = {}
"""id(subschema) -> (that subschema, answer); holding the subschema keeps its id from being reused."""


def _needs_conversion(schema: Any) -> bool:
    """Whether a (sub)schema holds a JSON or float32 field anywhere; cached per schema object."""
    if isinstance(schema, str):
        return False
    cached = _NEEDS_CONVERSION.get(id(schema))
    if cached is not None and cached[0] is schema:
        return bool(cached[1])
    text = json.dumps(schema)
    found = JSON_PROP in text or F32_PROP in text
    _NEEDS_CONVERSION[id(schema)] = (schema, found)
    return found


def _register_names(schema: Any, names: dict[str, Any]) -> None:
    """Record every named record defined inside ``schema`` so later references resolve."""
    if isinstance(schema, list):
        for branch in schema:
            _register_names(branch, names)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            names.setdefault(schema["name"], schema)
            for f in schema["fields"]:
                _register_names(f["type"], names)
        elif schema.get("type") == "array":
            _register_names(schema["items"], names)
        elif schema.get("type") == "map":
            _register_names(schema["values"], names)


def encode(event: Event) -> bytes:
    """Encode an event as Avro single-object bytes: marker, fingerprint, body."""
    name = type(event).__name__
    try:
        fp, entry = _registry()[0][name]
    except KeyError as exc:
        raise SchemaError(f"no Avro schema for event type {name!r}") from exc
    data = event.model_dump(mode="python")
    if entry.to_avro is not None:
        data = entry.to_avro(data)
    buf = io.BytesIO()
    buf.write(MAGIC)
    buf.write(fp)
    try:
        fastavro.schemaless_writer(buf, entry.parsed, data)
    except (ValueError, TypeError) as exc:
        raise SchemaError(f"cannot encode {name}: {exc}") from exc
    return buf.getvalue()


def decode_dict(payload: bytes) -> dict[str, Any]:
    """Decode single-object bytes into the current version's dict.

    The payload is read with the schema it was written with (its own representation, e.g. v1's
    embedding as doubles, v2's as float32 bytes), lifted by the upcasters one version at a time, and
    trimmed to the current fields; fields added since take the model's defaults on validation.
    """
    if len(payload) < 10 or payload[:2] != MAGIC:
        raise EventDecodeError(f"not an Avro single-object payload (starts with {payload[:2]!r})")
    fp = payload[2:10]
    current, by_fp = _registry()
    writer = by_fp.get(fp)
    if writer is None:
        raise EventDecodeError(f"unknown schema fingerprint {fp.hex()!r}")
    reader = current.get(writer.name)
    if reader is None:
        raise EventDecodeError(f"event type {writer.name!r} is no longer known")
    try:
        stream = io.BytesIO(payload)
        stream.seek(10)
        raw: Any = fastavro.schemaless_reader(stream, writer.parsed, None)
    except (ValueError, TypeError, EOFError, IndexError, struct.error, UnicodeDecodeError) as exc:
        raise EventDecodeError(f"corrupt {writer.name} payload: {exc}") from exc
    try:
        data: dict[str, Any] = raw if writer.convert is None else writer.convert(raw)
    except (ValueError, TypeError) as exc:
        raise EventDecodeError(f"corrupt field in {writer.name}: {exc}") from exc
    version = writer.version
    target = reader[1].version
    while version < target:
        up = UPCASTERS.get((writer.name, version))
        if up is not None:
            data = up(data)
        version += 1
    if writer is not reader[1]:  # fields the current version dropped; new ones take the model's defaults
        known = {f["name"] for f in reader[1].raw["fields"]}
        data = {k: v for k, v in data.items() if k in known}
    data["schema_version"] = target
    return data


def _without_uuid_types(schema: Any) -> Any:
    """A copy of ``schema`` whose uuid fields are plain strings (fastavro builds no ``uuid.UUID`` then)."""
    if isinstance(schema, list):
        return [_without_uuid_types(s) for s in schema]
    if isinstance(schema, dict):
        return {
            k: _without_uuid_types(v) for k, v in schema.items() if not (k == "logicalType" and v == "uuid")
        }
    return schema


@lru_cache(maxsize=1)
def _raw_readers() -> dict[bytes, tuple[str, Any, Reader | None]]:
    """Current fingerprint -> (event type, parsed schema with uuids as strings, compiled reader or None)."""
    out = {}
    for name, (fp, entry) in _registry()[0].items():
        lean = _without_uuid_types(entry.raw)
        out[fp] = (name, parse_schema(lean, _force=True), compile_reader(lean))
    return out


def decode_raw(payload: bytes) -> tuple[str, dict[str, Any]] | None:
    """(event type, Avro values) of a payload written with its type's current schema, read as they are:
    uuids as strings, float32 fields as bytes, JSON fields as their text; nothing validated.

    None for anything else (an older schema version, an unknown fingerprint, a corrupt body): the caller
    then decodes it with ``decode``, which upcasts it or raises EventDecodeError. A fast lane for
    replays (read by ``schemas.avro_fast`` where it compiles the schema, else fastavro); ``decode``
    remains the reference.
    """
    if len(payload) < 10 or payload[:2] != MAGIC:
        return None
    reader = _raw_readers().get(payload[2:10])
    if reader is None:
        return None
    values: dict[str, Any]
    try:
        if reader[2] is not None:
            values, end = reader[2](payload, 10)
            if end != len(payload):
                return None
            return reader[0], values
        stream = io.BytesIO(payload)
        stream.seek(10)
        values = fastavro.schemaless_reader(stream, reader[1], None)  # type: ignore[assignment]
    except (ValueError, TypeError, EOFError, IndexError, OverflowError, struct.error, UnicodeDecodeError):
        return None
    return reader[0], values


def decode(payload: bytes) -> AnyEvent:
    """Decode single-object bytes into an event; EventDecodeError for poison payloads.

    Float32 fields come back as ``Float32List`` (equal to the list of floats): they are validated as
    empty lists and put back after validation, since floats read from float32 bytes are always valid.
    """
    data = decode_dict(payload)
    vectors = {name: value for name, value in data.items() if type(value) is Float32List}
    for name in vectors:
        data[name] = []
    try:
        event = any_event_adapter.validate_python(data)
    except ValidationError as exc:
        raise EventDecodeError(f"payload does not validate: {exc.errors()[:3]}") from exc
    if vectors:  # the event was just built here: filling in its validated-as-empty vectors is construction
        event.__dict__.update(vectors)
    return event


def schema_path(event_type: str) -> Path:
    """Path of the checked-in current schema of an event type."""
    return AVRO_DIR / f"{event_type}.avsc"
