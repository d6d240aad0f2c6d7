"""insert_rows: the same table as executemany, in few statements, within SQLite's parameter limit."""

from __future__ import annotations

import random
import sqlite3

import pytest

from memory_store.embedded.bulk import MAX_ROWS, _sizes, insert_rows

_SCHEMA = "CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER, b BLOB, s TEXT NOT NULL)"
_HEAD = "INSERT OR REPLACE INTO t (k, n, b, s)"
_UPSERT_HEAD = "INSERT INTO t (k, n, b, s)"
_UPSERT_TAIL = " ON CONFLICT (k) DO UPDATE SET n = t.n + excluded.n WHERE excluded.n % 3 <> 0"


def _rows(count: int, seed: int) -> list[tuple[str, int, bytes | None, str]]:
    rng = random.Random(seed)  # few keys: many rows replace (or update) an earlier one of the same statement
    return [(f"k{rng.randrange(max(count // 3, 1))}", rng.randrange(100),
             rng.randbytes(rng.randrange(8)) or None, "x")
            for _ in range(count)]  # fmt: skip


def _table(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
    return conn.execute("SELECT * FROM t ORDER BY k").fetchall()


def _connection() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute(_SCHEMA)
    return conn


@pytest.mark.parametrize("count", [0, 1, 7, MAX_ROWS - 1, MAX_ROWS, MAX_ROWS + 1, 1000, 5003])
@pytest.mark.parametrize(("head", "row", "tail"), [
    (_HEAD, "(?,?,?,?)", ""),
    (_UPSERT_HEAD, "(?,?,?,'x')", _UPSERT_TAIL),  # a constant in the row, an upsert clause after it
])  # fmt: skip
def test_same_table_as_executemany(count: int, head: str, row: str, tail: str) -> None:
    rows = _rows(count, seed=count)
    if "'x'" in row:
        rows = [r[:3] for r in rows]  # type: ignore[misc]
    expected, got = _connection(), _connection()
    expected.executemany(f"{head} VALUES {row}{tail}", rows)
    insert_rows(got, head, row, rows, tail)
    assert _table(got) == _table(expected)
    assert len(_table(got)) == len({r[0] for r in rows})


def test_few_statements() -> None:
    rows = _rows(5000, seed=1)
    conn = _connection()
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    insert_rows(conn, _HEAD, "(?,?,?,?)", rows)
    conn.set_trace_callback(None)
    inserts = [s for s in statements if s.startswith("INSERT")]
    assert len(inserts) == len(_sizes(5000, MAX_ROWS)) <= 5000 // MAX_ROWS + 8
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == len({r[0] for r in rows})


def test_within_the_parameter_limit() -> None:
    conn, expected = _connection(), _connection()
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 10)  # two rows of four parameters per statement
    rows = _rows(301, seed=2)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    insert_rows(conn, _HEAD, "(?,?,?,?)", rows)
    conn.set_trace_callback(None)
    expected.executemany(f"{_HEAD} VALUES (?,?,?,?)", rows)
    assert _table(conn) == _table(expected)
    assert len([s for s in statements if s.startswith("INSERT")]) == 151


@pytest.mark.parametrize(("total", "most"), [(0, 256), (1, 256), (255, 256), (256, 256), (5000, 256), (301, 2)])
def test_sizes_cover_every_row(total: int, most: int) -> None:
    sizes = _sizes(total, most)
    assert sum(sizes) == total
    assert all(0 < size <= most for size in sizes)
    assert len(set(sizes)) <= most.bit_length() + 1  # few distinct statements to prepare
