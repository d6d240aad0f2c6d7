"""Avro binary record readers compiled per schema: in C where ``schemas._avroc`` is built, else Python source.

``compile_reader(schema)`` returns ``read(buf, pos) -> (value, pos)`` for a record schema built from
records, strings, bytes, longs/ints, doubles, booleans, nulls, unions and arrays (uuids read as strings,
``timestamp-micros`` as UTC datetimes, as fastavro returns them), or None for anything else. A
malformed body raises (IndexError, ValueError, UnicodeDecodeError, OverflowError, struct.error); callers
fall back to fastavro then. The Python reader (generated source, about twice fastavro's speed on our
events) is the reference; the C one (``schemas/_avroc.c``, built by ``pip install`` where a compiler is
found, about four times faster again) walks a tuple program of the same schema (``program``) and is tested
equal to it, and to fastavro, on random and on mangled events. Used by ``schemas.codec.decode_raw``.
"""

from __future__ import annotations

import functools
import logging
import struct
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

try:
    from schemas import _avroc
except ImportError:  # built by `pip install` where a C compiler is found; the Python reader runs otherwise
    _avroc = None  # type: ignore[assignment]

__all__ = ["NATIVE", "Reader", "compile_reader", "program"]

logger = logging.getLogger(__name__)

NATIVE = _avroc is not None
"""Whether ``compile_reader`` gives C readers (``schemas._avroc`` was built)."""

Reader = Callable[[bytes, int], tuple[Any, int]]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")


class _Unsupported(Exception):
    """A schema feature the compiler leaves to fastavro."""


def _long(buf: bytes, pos: int) -> tuple[int, int]:
    """Zigzag varint at ``pos``: (value, next position)."""
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


class _Compiler:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, Any] = {}
        self.counter = 0

    def var(self) -> str:
        self.counter += 1
        return f"v{self.counter}"

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def long(self, indent: int, target: str) -> None:
        """Inline zigzag varint (one byte in the common case) into ``target``."""
        self.emit(indent, "b = buf[pos]")
        self.emit(indent, "if b < 128:")
        self.emit(indent + 1, f"{target} = (b >> 1) ^ -(b & 1); pos += 1")
        self.emit(indent, "else:")
        self.emit(indent + 1, f"{target}, pos = _long(buf, pos)")

    def value(self, schema: Any, indent: int, target: str) -> None:
        """Code reading one value of ``schema`` into ``target``."""
        if isinstance(schema, list):
            return self.union(schema, indent, target)
        if isinstance(schema, dict):
            kind, logical = schema["type"], schema.get("logicalType")
            if isinstance(kind, (dict, list)):
                return self.value(kind, indent, target)
        else:
            kind, logical = schema, None
        if kind in ("string", "bytes"):
            n = self.var()
            self.long(indent, n)
            self.emit(indent, f"end = pos + {n}")
            self.emit(indent, f"if {n} < 0 or end > len(buf): raise ValueError('truncated')")
            read = "buf[pos:end].decode()" if kind == "string" else "buf[pos:end]"
            self.emit(indent, f"{target} = {read}; pos = end")
        elif kind in ("long", "int"):
            if logical == "timestamp-micros":
                raw = self.var()
                self.long(indent, raw)
                self.emit(indent, f"{target} = _micros({raw})")
            elif logical is None:
                self.long(indent, target)
            else:
                raise _Unsupported(f"logical type {logical}")
        elif kind == "double":
            self.emit(indent, f"{target} = _DOUBLE.unpack_from(buf, pos)[0]; pos += 8")
        elif kind == "float":
            self.emit(indent, f"{target} = _FLOAT.unpack_from(buf, pos)[0]; pos += 4")
        elif kind == "boolean":
            self.emit(indent, f"{target} = buf[pos] == 1; pos += 1")
        elif kind == "null":
            self.emit(indent, f"{target} = None")
        elif kind == "array":
            self.array(schema["items"], indent, target)
        elif kind == "record":
            self.record(schema, indent, target)
        else:
            raise _Unsupported(f"type {kind}")
        if logical not in (None, "uuid", "timestamp-micros"):
            raise _Unsupported(f"logical type {logical}")
        return None

    def union(self, branches: list[Any], indent: int, target: str) -> None:
        index = self.var()
        self.long(indent, index)
        for i, branch in enumerate(branches):
            self.emit(indent, f"{'if' if i == 0 else 'elif'} {index} == {i}:")
            self.value(branch, indent + 1, target)
        self.emit(indent, "else:")
        self.emit(indent + 1, f"raise ValueError('union index ' + str({index}))")

    def array(self, items: Any, indent: int, target: str) -> None:
        count, item, out = self.var(), self.var(), self.var()
        self.emit(indent, f"{out} = []")
        self.emit(indent, "while True:")
        self.long(indent + 1, count)
        self.emit(indent + 1, f"if {count} == 0: break")
        self.emit(indent + 1, f"if {count} < 0:")  # a block with its size in bytes: the size is skipped
        self.emit(indent + 2, f"{count} = -{count}; _, pos = _long(buf, pos)")
        self.emit(indent + 1, f"for _ in range({count}):")
        self.value(items, indent + 2, item)
        self.emit(indent + 2, f"{out}.append({item})")
        self.emit(indent, f"{target} = {out}")

    def record(self, schema: dict[str, Any], indent: int, target: str) -> None:
        fields = [(f["name"], self.var()) for f in schema["fields"]]
        for (_, var), field in zip(fields, schema["fields"], strict=True):
            self.value(field["type"], indent, var)
        pairs = ", ".join(f"{name!r}: {var}" for name, var in fields)
        self.emit(indent, f"{target} = {{{pairs}}}")


def program(schema: Any) -> tuple[Any, ...]:
    """The tuple program ``schemas._avroc.read`` walks for ``schema`` (types as ``_Compiler.value`` reads them;
    call only for a schema ``compile_reader`` compiles, where the C reader is built)."""
    c = _avroc
    if c is None:
        raise ImportError("schemas._avroc is not built (pip install -e . builds it where a C compiler is found)")
    if isinstance(schema, list):
        return (c.UNION, tuple(program(branch) for branch in schema))
    kind, logical = (schema["type"], schema.get("logicalType")) if isinstance(schema, dict) else (schema, None)
    if isinstance(kind, (dict, list)):
        return program(kind)
    if kind in ("long", "int"):
        return (c.MICROS, _EPOCH) if logical == "timestamp-micros" else (c.LONG,)
    if kind == "array":
        return (c.ARRAY, program(schema["items"]))
    if kind == "record":
        fields = schema["fields"]
        return (c.RECORD, tuple(sys.intern(f["name"]) for f in fields), tuple(program(f["type"]) for f in fields))
    simple = {"string": c.STRING, "bytes": c.BYTES, "double": c.DOUBLE, "float": c.FLOAT, "boolean": c.BOOLEAN,
              "null": c.NULL}  # fmt: skip
    return (simple[kind],)


def compile_reader(schema: dict[str, Any], *, native: bool = True) -> Reader | None:
    """A reader of ``schema``'s binary encoding (a record), or None when it uses a type left to fastavro: in C
    when ``native`` and the C reader is built, else the generated Python reader."""
    compiler = _Compiler()
    try:
        if schema.get("type") != "record":
            raise _Unsupported("not a record")
        compiler.record(schema, 1, "out")
    except (_Unsupported, KeyError, TypeError) as exc:
        logger.debug("no compiled Avro reader for %s: %s", schema.get("name"), exc)
        return None
    source = "def read(buf, pos):\n" + "\n".join(compiler.lines) + "\n    return out, pos\n"
    namespace: dict[str, Any] = {"_long": _long, "_micros": _micros, "_DOUBLE": _DOUBLE, "_FLOAT": _FLOAT}
    exec(compile(source, f"<avro reader {schema.get('name')}>", "exec"), namespace)  # noqa: S102
    reader: Reader = namespace["read"]
    if native and _avroc is not None:
        return functools.partial(_avroc.read, program(schema))
    return reader
