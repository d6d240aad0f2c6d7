"""Background WAL checkpoints of the embedded SQLite files: writers commit, one thread per file copies the log back."""

from __future__ import annotations

import logging
import sqlite3
import threading

__all__ = ["SAFETY_PAGES", "WalCheckpointer", "checkpointer_for", "release_checkpointer"]

logger = logging.getLogger(__name__)

SAFETY_PAGES = 16_384
"""``wal_autocheckpoint`` of the writer connections: SQLite checkpoints inside a commit only once the log
holds this many pages (256 MB at 16 KB pages), should the background thread fall that far behind."""


class WalCheckpointer:
    """A thread that runs a PASSIVE checkpoint of one database file after commits, at most every ``interval_s``.

    SQLite's automatic checkpoint runs inside the COMMIT that crosses its threshold (1,000 pages), in the
    committing thread: a replay's store thread copied its log back into the database file batch after
    batch while holding everything behind it. Here the writers' own threshold is a safety net
    (``SAFETY_PAGES``) and this thread does the copying with its own connection, the interpreter lock
    released for the whole statement, beside whatever the process runs next. A PASSIVE checkpoint never
    waits for readers or writers (it copies what no reader still needs), so it never blocks a commit.
    """

    def __init__(self, path: str, *, interval_s: float = 0.25) -> None:
        self.path = path
        self.interval_s = interval_s
        self.checkpoints = 0
        """Checkpoints run so far (finished, failed ones included)."""
        self._wanted = 0  # pokes so far; a checkpoint started after poke n serves every poke up to n
        self._served = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"memos-wal:{path}", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """A transaction committed: checkpoint soon (within ``interval_s`` of the last one)."""
        with self._cond:
            self._wanted += 1
            self._cond.notify_all()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until a checkpoint that started after this call has finished; False on timeout or when stopped."""
        with self._cond:
            self._wanted += 1
            target = self._wanted
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._served >= target or self._stop.is_set(), timeout_s) and (
                self._served >= target
            )

    def close(self) -> None:
        """Stop the thread (SQLite checkpoints the log itself when the last connection to the file closes)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._wanted > self._served or self._stop.is_set())
                    if self._stop.is_set():
                        return
                    target = self._wanted
                try:
                    if conn is None:
                        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # the writers' safety net still holds the log's size
                    logger.warning("wal checkpoint failed path=%s error=%s", self.path, exc)
                with self._cond:
                    self.checkpoints += 1
                    self._served = target
                    self._cond.notify_all()
                if self._stop.wait(self.interval_s):  # at most one checkpoint per interval
                    return
        finally:  # stopped, or died: either way nobody waits on it any longer
            if conn is not None:
                conn.close()
            self._stop.set()
            with self._cond:
                self._cond.notify_all()


_registry: dict[str, tuple[WalCheckpointer, int]] = {}
_registry_lock = threading.Lock()


def checkpointer_for(path: str) -> WalCheckpointer:
    """The file's checkpointer, shared by every connection of this process to it (``release_checkpointer``
    once per call)."""
    with _registry_lock:
        found = _registry.get(path)
        if found is None:
            found = (WalCheckpointer(path), 0)
        _registry[path] = (found[0], found[1] + 1)
        return found[0]


def release_checkpointer(path: str) -> None:
    """One user of the file's checkpointer is done; the last one stops its thread."""
    with _registry_lock:
        found = _registry.get(path)
        if found is None:
            return
        if found[1] > 1:
            _registry[path] = (found[0], found[1] - 1)
            return
        del _registry[path]
    found[0].close()
