"""SQLite statements of the embedded log that meet a busy or locked file are tried again until a deadline,
also where SQLite gives up at once without its busy handler (two processes switching a new file to WAL)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from streams.log.local.sqlite import execute_when_free


class _ReleasingAfterFirstRefusal:
    """A connection without a busy handler; the first refusal makes the lock holder commit."""

    def __init__(self, conn: sqlite3.Connection, holder: sqlite3.Connection) -> None:
        self.conn, self.holder, self.refusals = conn, holder, 0

    def execute(self, sql: str) -> sqlite3.Cursor:
        try:
            return self.conn.execute(sql)
        except sqlite3.OperationalError:
            self.refusals += 1
            if self.holder.in_transaction:
                self.holder.execute("COMMIT")
            raise


def _locked_file(tmp_path: Path) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    """A rollback-journal file held by an exclusive transaction, and a second connection that never waits."""
    path = tmp_path / "log.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    return holder, sqlite3.connect(path, isolation_level=None, timeout=0)


def test_a_refused_statement_is_tried_again_once_the_lock_is_free(tmp_path: Path) -> None:
    holder, conn = _locked_file(tmp_path)
    wrapped = _ReleasingAfterFirstRefusal(conn, holder)
    execute_when_free(wrapped, "PRAGMA journal_mode=WAL", time.monotonic() + 30)  # type: ignore[arg-type]
    assert wrapped.refusals == 1
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_deadline_is_kept_and_other_errors_are_not_retried(tmp_path: Path) -> None:
    holder, conn = _locked_file(tmp_path)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        execute_when_free(conn, "PRAGMA journal_mode=WAL", time.monotonic())  # past: one try
    assert holder.in_transaction
    with pytest.raises(sqlite3.OperationalError, match="syntax"):
        execute_when_free(conn, "NOT SQL", time.monotonic() + 30)
