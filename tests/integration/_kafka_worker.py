"""Subprocess for the Kafka crash tests: appends to, or consumes from, a KafkaEventLog until it is killed.

    python -m tests.integration._kafka_worker produce SERVERS TOPIC ROUND
    python -m tests.integration._kafka_worker consume SERVERS TOPIC APPLY_DB GROUP
    python -m tests.integration._kafka_worker derive KAFKA_URL HOME GROUP CRASH

``derive`` hosts the real first derivation stage in our runner over Kafka, as consumer group GROUP; it
writes ``derive <task ids>`` each time the model runs, and with CRASH ``before_commit`` it SIGKILLs
itself inside its first transaction (derived events sent, offsets not yet), with ``after_commit`` right
after its first transaction committed (``none``: no crash).

Each line goes out with one unbuffered write: ``ready``, ``ack <partition> <offset> <seq>`` (after the
broker acknowledged the append: acks=all, idempotent producer), ``assigned <n>`` (partitions held after
a poll), ``skipped <n>`` (redelivered records the checkpoint refused). The tests run ``run()`` in
forkserver children and give it a file to write to instead of stdout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

from streams.log.base import OutgoingRecord
from streams.log.kafka.log import KafkaEventLog

__all__ = ["BATCH", "PARTITIONS", "SESSION_TIMEOUT_MS", "main", "run"]

logger = logging.getLogger(__name__)

BATCH = 5
PARTITIONS = 4
SESSION_TIMEOUT_MS = 6_000
"""Short, so the group notices a killed member soon (the broker waits for it before rebalancing)."""
_COMMIT_EVERY = 3

_OUT = [1]


def say(line: str) -> None:
    os.write(_OUT[0], (line + "\n").encode())


async def produce(servers: str, topic: str, round_no: int) -> None:
    """Append forever; odd rounds append batches of BATCH records, even rounds one record at a time."""
    async with KafkaEventLog(servers, partitions=PARTITIONS, client_id=f"crash-producer-{round_no}") as log:
        await log.create_topic(topic, partitions=PARTITIONS)
        say("ready")
        seq = round_no * 1_000_000
        while True:
            if round_no % 2:
                seqs = list(range(seq, seq + BATCH))
                records = [
                    OutgoingRecord(topic, f"k{s % 7}".encode(), json.dumps({"seq": s, "batch": seq}).encode())
                    for s in seqs
                ]
                positions = await log.append_batch(records)
            else:
                seqs = [seq]
                value = json.dumps({"seq": seq, "batch": None}).encode()
                positions = [await log.append(topic, f"k{seq % 7}".encode(), value)]
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


async def consume(servers: str, topic: str, store: Path, group: str) -> None:
    """Apply records idempotently, committing the group offset only every few batches (a wide crash window)."""
    conn = _open_store(store)
    async with KafkaEventLog(
        servers, partitions=PARTITIONS, session_timeout_ms=SESSION_TIMEOUT_MS, heartbeat_interval_ms=200
    ) as log:
        consumer = log.consumer([topic], group_id=group)
        say("ready")
        batches = 0
        held = -1
        while True:
            records = await consumer.poll(max_records=20, timeout_s=0.2)
            if len(consumer.assignment()) != held:
                held = len(consumer.assignment())
                say(f"assigned {held}")
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


async def derive(kafka_url: str, home: str, group: str, crash: str) -> None:
    """The real derivation stage over Kafka, with an optional crash point (see the module doc)."""
    import signal

    import aiokafka

    from memos.runtime import Runtime
    from streams.pipeline.derivation import Deriver
    from streams.pipeline.runner import Runner
    from streams.pipeline.stages import DerivationStage
    from streams.settings import AppSettings, LogSettings

    original_derive = Deriver.derive_many

    async def counted(self: Deriver, events: Any, **kwargs: Any) -> Any:
        say("derive " + ",".join(e.task_id for e in events))
        return await original_derive(self, events, **kwargs)

    Deriver.derive_many = counted  # type: ignore[method-assign]
    producer_cls = aiokafka.AIOKafkaProducer
    if crash == "before_commit":
        original_offsets = producer_cls.send_offsets_to_transaction

        async def die_before(self: Any, *args: Any, **kwargs: Any) -> Any:
            say("crash before_commit")
            os.kill(os.getpid(), signal.SIGKILL)
            return await original_offsets(self, *args, **kwargs)

        producer_cls.send_offsets_to_transaction = die_before  # type: ignore[method-assign]
    elif crash == "after_commit":
        original_commit = producer_cls.commit_transaction

        async def die_after(self: Any) -> Any:
            result = await original_commit(self)
            say("crash after_commit")
            os.kill(os.getpid(), signal.SIGKILL)
            return result

        producer_cls.commit_transaction = die_after  # type: ignore[method-assign]
    settings = AppSettings(home=Path(home), log=LogSettings(url=kafka_url, partitions=PARTITIONS))
    async with Runtime(settings, run_stages=False) as rt:
        stage = DerivationStage(rt.deriver, phase="first")
        stage.name = group  # the real stage, in a group of its own on the shared broker
        say("ready")
        await Runner(rt.log, stage).run()


def run(out: str, argv: list[str]) -> None:
    """Run a mode (see the module docstring), writing lines to the file ``out`` ("-": stdout)."""
    if out != "-":
        _OUT[0] = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    mode = argv[0]
    if mode == "produce":
        asyncio.run(produce(argv[1], argv[2], int(argv[3])))
    elif mode == "derive":
        asyncio.run(derive(argv[1], argv[2], argv[3], argv[4]))
    elif mode == "consume":
        asyncio.run(consume(argv[1], argv[2], Path(argv[3]), argv[4]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


def main(argv: list[str]) -> None:
    """Command-line entry point: lines go to stdout."""
    run("-", argv)


if __name__ == "__main__":
    main(sys.argv[1:])
