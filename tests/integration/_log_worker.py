"""Subprocess for the crash tests: appends to, or consumes from, a LocalEventLog until it is killed.

    python -m tests.integration._log_worker produce LOG_DB ROUND
    python -m tests.integration._log_worker consume LOG_DB APPLY_DB GROUP
    python -m tests.integration._log_worker poison LOG_DB GROUP

``poison`` hosts a real Runner whose stage completes every ``TaskSubmitted`` of the tasks topic and
SIGKILLs its own process on the one whose content is ``poison``.

Each line goes out with one unbuffered write: ``ready``, ``ack <partition> <offset> <seq>`` (after the
append was acknowledged), ``skipped <n>``. The tests run ``run()`` in forkserver children (started in
milliseconds, modules preloaded) and give it a file to write to instead of stdout.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from pathlib import Path

from streams.log.base import OutgoingRecord
from streams.log.local.log import LocalEventLog

__all__ = ["BATCH", "TOPIC", "main", "run"]

TOPIC = "crash.test"
BATCH = 5
_COMMIT_EVERY = 3


_OUT = [1]


def say(line: str) -> None:
    os.write(_OUT[0], (line + "\n").encode())


async def produce(db: Path, round_no: int) -> None:
    """Append forever; odd rounds append batches of BATCH records (all or nothing); rounds 2, 3 (mod 4)
    use the NORMAL sync policy, the others FULL: both must keep acknowledged records across kill -9."""
    async with LocalEventLog(db, partitions=4, synchronous="NORMAL" if round_no % 4 >= 2 else "FULL") as log:
        await log.create_topic(TOPIC, partitions=4)
        say("ready")
        seq = round_no * 1_000_000
        while seq < round_no * 1_000_000 + 500_000:
            if round_no % 2:
                seqs = list(range(seq, seq + BATCH))
                records = [
                    OutgoingRecord(TOPIC, f"k{s % 7}".encode(), json.dumps({"seq": s, "batch": seq}).encode())
                    for s in seqs
                ]
                positions = await log.append_batch(records)
            else:
                seqs = [seq]
                value = json.dumps({"seq": seq, "batch": None}).encode()
                positions = [await log.append(TOPIC, f"k{seq % 7}".encode(), value)]
            for s, p in zip(seqs, positions, strict=True):
                say(f"ack {p.partition} {p.offset} {s}")
            seq += len(seqs)


def _open_store(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS applied (topic TEXT, partition INTEGER, offset INTEGER, seq INTEGER)"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS checkpoint (topic TEXT, partition INTEGER, offset INTEGER, "
        "PRIMARY KEY (topic, partition))"
    )
    return conn


def _apply(conn: sqlite3.Connection, topic: str, partition: int, offset: int, seq: int) -> bool:
    """Apply one record and its checkpoint in one transaction; False when already applied."""
    conn.execute("BEGIN IMMEDIATE")
    row = conn.execute(
        "SELECT offset FROM checkpoint WHERE topic = ? AND partition = ?", (topic, partition)
    ).fetchone()
    if row is not None and offset <= row[0]:
        conn.execute("ROLLBACK")
        return False
    conn.execute("INSERT INTO applied VALUES (?, ?, ?, ?)", (topic, partition, offset, seq))
    conn.execute("INSERT OR REPLACE INTO checkpoint VALUES (?, ?, ?)", (topic, partition, offset))
    conn.execute("COMMIT")
    return True


POISON = "poison"


async def poison(db: Path, group: str) -> None:
    """A runner over the tasks topic whose stage kills the process on the poison task (see the module doc)."""
    import signal
    from collections.abc import Sequence

    from schemas.envelope import Envelope
    from schemas.events import AnyEvent, Event, TaskStatusChanged, TaskSubmitted, derive_id
    from schemas.topics import TASKS
    from streams.pipeline.runner import Runner, Stage

    class KillOnPoison(Stage):
        name = group
        topics = (TASKS,)

        async def handle(self, batch: Sequence[Envelope[AnyEvent]]) -> list[Event]:
            out: list[Event] = []
            for envelope in batch:
                event = envelope.event
                if not isinstance(event, TaskSubmitted):
                    continue
                if event.content == POISON:
                    os.kill(os.getpid(), signal.SIGKILL)
                out.append(TaskStatusChanged(
                    event_id=derive_id(event.event_id, "done"), occurred_at=event.occurred_at, key=event.key,
                    producer=group, task_id=event.task_id, cube_id=event.cube_id, status="completed",
                    label=event.label))
            return out

    async with LocalEventLog(db, partitions=2, heartbeat_interval_s=0.2) as log:
        say("ready")
        await Runner(log, KillOnPoison(), max_batch=8, max_attempts=3).run()


async def consume(db: Path, store: Path, group: str) -> None:
    """Apply records idempotently, committing the group offset only every few batches (a wide crash window)."""
    conn = _open_store(store)
    async with LocalEventLog(db, partitions=4, heartbeat_interval_s=0.2) as log:
        consumer = log.consumer([TOPIC], group_id=group)
        say("ready")
        batches = 0
        while True:
            records = await consumer.poll(max_records=20, timeout_s=0.2)
            skipped = 0
            for record in records:
                seq = json.loads(record.value)["seq"]
                p = record.position
                if not _apply(conn, p.topic, p.partition, p.offset, seq):
                    skipped += 1
            if skipped:
                say(f"skipped {skipped}")
            if records:
                batches += 1
                if batches % _COMMIT_EVERY == 0:
                    await consumer.commit()


def run(out: str, argv: list[str]) -> None:
    """Run a mode (see the module docstring), writing lines to the file ``out`` ("-": stdout)."""
    if out != "-":
        _OUT[0] = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    mode = argv[0]
    if mode == "produce":
        asyncio.run(produce(Path(argv[1]), int(argv[2])))
    elif mode == "poison":
        asyncio.run(poison(Path(argv[1]), argv[2]))
    elif mode == "consume":
        asyncio.run(consume(Path(argv[1]), Path(argv[2]), argv[3]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


def main(argv: list[str]) -> None:
    """Command-line entry point: lines go to stdout."""
    run("-", argv)


if __name__ == "__main__":
    main(sys.argv[1:])
