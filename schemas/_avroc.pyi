"""Type stub of the C Avro record reader (schemas/_avroc.c)."""

from typing import Any

STRING: int
BYTES: int
LONG: int
MICROS: int
DOUBLE: int
FLOAT: int
BOOLEAN: int
NULL: int
UNION: int
ARRAY: int
RECORD: int

def read(program: tuple[Any, ...], buf: bytes, pos: int, /) -> tuple[Any, int]: ...
