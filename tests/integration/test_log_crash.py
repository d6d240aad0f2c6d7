"""Crash tests of the embedded log: kill -9 producers and consumers at random points, lose nothing."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from schemas.envelope import Record
from streams.log.base import OutgoingRecord
from streams.log.local.log import LocalEventLog
from tests.integration import _log_worker
from tests.integration._log_worker import BATCH, TOPIC

ROUNDS = 20
SEED = int(os.environ.get("MEMOS_CRASH_SEED", str(random.randrange(1 << 30))))
_FORKSERVER = multiprocessing.get_context("forkserver")
_FORKSERVER.set_forkserver_preload(["tests.integration._log_worker"])


class Worker:
    """A ``_log_worker`` process (forked from a preloaded forkserver) writing its lines to a file."""

    count = 0

    def __init__(self, tmp: Path, *args: str) -> None:
        Worker.count += 1
        self.out = tmp / f"worker-{Worker.count}.out"
        self.proc = _FORKSERVER.Process(target=_log_worker.run, args=(str(self.out), list(args)), daemon=True)
        self.proc.start()

    def lines(self) -> list[str]:
        """Complete lines so far (a line cut by the kill was never acknowledged)."""
        if not self.out.exists():
            return []
        text = self.out.read_text()
        return text.split("\n")[:-1]

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while "ready" not in self.lines():
            if not self.proc.is_alive() or time.monotonic() > deadline:
                pytest.fail(
                    f"worker did not get ready (exitcode={self.proc.exitcode}, lines={self.lines()[:5]})"
                )
            time.sleep(0.01)

    def kill(self) -> list[str]:
        """SIGKILL the worker; return every complete line it wrote."""
        assert self.proc.is_alive(), f"worker died on its own (exitcode={self.proc.exitcode})"
        self.proc.kill()
        self.proc.join(timeout=30)
        assert self.proc.exitcode == -signal.SIGKILL
        return self.lines()


async def read_all(db: Path) -> list[Record]:
    async with LocalEventLog(db) as log:
        out: list[Record] = []
        for partition in range(await log.partitions(TOPIC)):
            offset = 0
            while records := await log.read(TOPIC, partition, offset, limit=1000):
                out += records
                offset = records[-1].position.offset + 1
        return out


async def test_acknowledged_appends_survive_kill_9(tmp_path: Path) -> None:
    """Two producer processes append to one file at once; both are killed at a random point each round."""
    rng = random.Random(SEED)
    db = tmp_path / "log.db"
    acked: dict[int, tuple[int, int]] = {}
    for round_no in range(ROUNDS):
        workers = [Worker(tmp_path, "produce", str(db), str(2 * round_no + i)) for i in range(2)]
        for worker in workers:
            worker.wait_ready()
        time.sleep(rng.uniform(0.01, 0.25))  # a random kill point, not synchronisation
        for worker in workers:
            for line in worker.kill():
                if line.startswith("ack "):
                    _, part, off, seq = line.split()
                    assert int(seq) not in acked
                    acked[int(seq)] = (int(part), int(off))
    assert len(acked) > ROUNDS, f"too few acknowledged appends to mean anything (seed={SEED})"
    assert len(set(acked.values())) == len(acked), f"two records acknowledged at one position (seed={SEED})"

    records = await read_all(db)
    stored = Counter(json.loads(r.value)["seq"] for r in records)
    assert [seq for seq, n in stored.items() if n > 1] == [], f"duplicated records (seed={SEED})"
    where = {json.loads(r.value)["seq"]: (r.position.partition, r.position.offset) for r in records}
    lost = sorted(seq for seq in acked if seq not in where)
    assert lost == [], f"acknowledged records lost (seed={SEED})"
    assert all(where[seq] == position for seq, position in acked.items())
    async with LocalEventLog(db) as log:
        ends = await log.end_offsets(TOPIC)
    for partition, end in ends.items():  # no holes: every offset below the watermark holds a record
        assert sorted(o for p, o in where.values() if p == partition) == list(range(end))
    batches = Counter(b for r in records if (b := json.loads(r.value)["batch"]) is not None)
    assert all(n == BATCH for n in batches.values()), f"a batch was half written (seed={SEED})"


def _applied(store: Path) -> Counter[int]:
    if not store.exists():
        return Counter()
    with sqlite3.connect(store, timeout=30) as conn:
        try:
            return Counter(seq for (seq,) in conn.execute("SELECT seq FROM applied"))
        except sqlite3.OperationalError:
            return Counter()


async def test_consumer_applies_each_record_once_across_kill_9(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    db, store, group = tmp_path / "log.db", tmp_path / "store.db", "crash-consumer"
    seqs: list[int] = []

    async def append(n: int) -> None:
        async with LocalEventLog(db, partitions=4) as log:
            await log.create_topic(TOPIC, partitions=4)
            start = len(seqs)
            batch = [
                OutgoingRecord(TOPIC, f"k{s % 11}".encode(), json.dumps({"seq": s}).encode())
                for s in range(start, start + n)
            ]
            await log.append_batch(batch)
            seqs.extend(range(start, start + n))

    await append(300)
    skipped = 0
    for _ in range(ROUNDS):
        worker = Worker(tmp_path, "consume", str(db), str(store), group)
        worker.wait_ready()
        await append(25)
        time.sleep(rng.uniform(0.02, 0.4))  # a random kill point, not synchronisation
        skipped += sum(int(line.split()[1]) for line in worker.kill() if line.startswith("skipped "))

    worker = Worker(tmp_path, "consume", str(db), str(store), group)
    worker.wait_ready()
    deadline = time.monotonic() + 30
    while sum(_applied(store).values()) < len(seqs) and time.monotonic() < deadline:
        time.sleep(0.05)
    skipped += sum(int(line.split()[1]) for line in worker.kill() if line.startswith("skipped "))

    applied = _applied(store)
    assert sorted(s for s, n in applied.items() if n > 1) == [], f"applied twice (seed={SEED})"
    assert sorted(set(seqs) - set(applied)) == [], f"never applied (seed={SEED})"
    assert set(applied) == set(seqs)
    assert skipped > 0, f"no redelivery happened, so the crash window was never hit (seed={SEED})"


async def test_a_dead_process_hands_its_partitions_over(tmp_path: Path) -> None:
    db, store, group = tmp_path / "log.db", tmp_path / "store.db", "cross-process"
    everything = {(TOPIC, p) for p in range(4)}
    async with LocalEventLog(db, partitions=4, heartbeat_interval_s=0.2, session_timeout_s=60) as log:
        await log.create_topic(TOPIC, partitions=4)
        worker = Worker(tmp_path, "consume", str(db), str(store), group)
        worker.wait_ready()
        async with log.consumer([TOPIC], group_id=group) as mine:
            deadline = time.monotonic() + 30
            while not (mine.assignment() and mine.assignment() != everything):
                assert time.monotonic() < deadline, f"never shared the group: {mine.assignment()}"
                await mine.poll(timeout_s=0.1)
            worker.kill()
            killed_at = time.monotonic()
            while mine.assignment() != everything:
                assert time.monotonic() - killed_at < 10, "a dead member kept its partitions"
                await mine.poll(timeout_s=0.1)
