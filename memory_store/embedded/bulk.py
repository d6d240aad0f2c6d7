"""Many rows in few multi-row INSERT statements: one release of the interpreter lock per statement, not per row."""

from __future__ import annotations

import functools
import itertools
import sqlite3
from collections.abc import Sequence
from typing import Any

__all__ = ["MAX_ROWS", "insert_rows"]

MAX_ROWS = 256
"""Rows in one statement at most (fewer where the row is wide: SQLite bounds the parameters of one)."""


@functools.lru_cache(maxsize=256)
def _statement(head: str, row: str, tail: str, count: int) -> str:
    return f"{head} VALUES {','.join([row] * count)}{tail}"


def _sizes(total: int, most: int) -> list[int]:
    """``total`` split into statements of ``most`` rows, then powers of two (few distinct statements, each
    prepared once and then reused from the connection's statement cache)."""
    sizes = [most] * (total // most)
    rest = total % most
    bit = 1 << max(rest.bit_length() - 1, 0)
    while rest:
        if rest >= bit:
            sizes.append(bit)
            rest -= bit
        bit >>= 1
    return sizes


def insert_rows(conn: sqlite3.Connection, head: str, row: str, rows: Sequence[Sequence[Any]], tail: str = "") -> None:
    """``conn.executemany(f"{head} VALUES {row}{tail}", rows)`` with the same effect, in multi-row statements.

    ``head`` is ``INSERT [OR ...] INTO table (columns)``, ``row`` the template of one row (``(?,?,...)``,
    constants allowed), ``tail`` an optional upsert clause. Rows are inserted in order, so a later row
    still replaces (or updates) an earlier one on the same key. Why: ``executemany`` steps SQLite once per
    row and lets go of the interpreter lock for each step; with another thread running Python (a replay
    decoding its next batch) each step then waits for the lock for up to a switch interval (5 ms), and the
    apply makes no progress beside it. One step per statement of up to ``MAX_ROWS`` rows removes the wait.
    """
    if not rows:
        return
    width = row.count("?")
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    most = max(1, min(MAX_ROWS, limit // max(width, 1)))
    start = 0
    for size in _sizes(len(rows), most):
        chunk = rows[start:start + size]
        conn.execute(_statement(head, row, tail, size), list(itertools.chain.from_iterable(chunk)))
        start += size
