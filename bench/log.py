"""Event log benchmark: append ack latency, batched append throughput and read rate, embedded and Kafka.

    python -m bench.log [--kafka kafka://127.0.0.1:19092] [--acks 2000] [--total 20000] [--batch 500]
                        [--replay 20000] [--replay-phases] [--chart docs/bench/replay.png]

Values are ~300-byte Avro-encoded MemoryAdded events (schemas.codec.encode). Kafka runs when --kafka or
MEMOS_TEST_KAFKA_URL is given and reachable; otherwise its figures are null. The last line printed is
one JSON object of headline figures; ``--chart`` gets a PNG of the replay figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.charts import replay_chart
from schemas.codec import encode
from schemas.errors import MemorySystemError
from schemas.events import MemoryAdded
from streams.log.base import EventLog, OutgoingRecord
from streams.log.local.log import LocalEventLog
from streams.log.registry import event_log_from_url

__all__ = ["LogFigures", "main", "measure_log", "memory_values"]

logger = logging.getLogger(__name__)

Figures = dict[str, float | None]
Measurement = Callable[[argparse.Namespace, Table], Awaitable[Figures]]


@dataclass(frozen=True, slots=True)
class LogFigures:
    """What one log adapter achieved."""

    ack_p50_ms: float
    ack_p95_ms: float
    append_eps: float
    read_eps: float


def memory_values(n: int, *, cubes: int = 32) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs: Avro-encoded MemoryAdded events of about 300 bytes over ``cubes`` keys."""
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        cube = f"cube-{i % cubes}"
        event = MemoryAdded(
            event_id=uuid.uuid4(),
            occurred_at=now,
            key=cube,
            memory_id=str(uuid.uuid4()),
            cube_id=cube,
            user_id="bench-user",
            memory=f"memory {i}: the user prefers window seats and vegetarian meals on long-haul flights."[
                :110
            ],
            tags=["bench", "preference"],
        )
        out.append((cube.encode(), encode(event)))
    return out


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure_log(
    log: EventLog, topic: str, *, acks: int, total: int, batch: int, partitions: int = 4
) -> LogFigures:
    """Ack latency of single appends, throughput of batched appends, then read everything back."""
    await log.create_topic(topic, partitions=partitions)
    values = memory_values(max(acks, batch))
    for key, value in values[:20]:  # warm-up: connections, statement caches
        await log.append(topic, key, value)
    latencies = []
    for i in range(acks):
        key, value = values[i % len(values)]
        started = time.perf_counter()
        await log.append(topic, key, value)
        latencies.append(time.perf_counter() - started)
    batches = [
        [OutgoingRecord(topic, k, v) for k, v in values[:batch]] for _ in range(max(1, total // batch))
    ]
    started = time.perf_counter()
    for records in batches:
        await log.append_batch(records)
    append_eps = sum(map(len, batches)) / (time.perf_counter() - started)
    read_eps = await _read_rate(log, topic)
    return LogFigures(_pct(latencies, 0.5) * 1e3, _pct(latencies, 0.95) * 1e3, append_eps, read_eps)


async def _read_rate(log: EventLog, topic: str) -> float:
    ends = await log.end_offsets(topic)
    started, count = time.perf_counter(), 0
    for partition, end in ends.items():
        offset = 0
        while offset < end:
            records = await log.read(topic, partition, offset, limit=1000)
            if not records:
                break
            count += len(records)
            offset = records[-1].position.offset + 1
    return count / (time.perf_counter() - started)


def _topic() -> str:
    return f"bench.log.{uuid.uuid4().hex[:8]}"


async def _delete_topic(servers: str, topic: str) -> None:
    """Drop the bench topic again: test brokers such as noida-db keep every byte (as JSON)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    try:
        await admin.start()
        await admin.delete_topics([topic])
    except Exception as exc:  # cleanup only: the figures are already measured
        logger.warning("could not delete bench topic=%s error=%r", topic, exc)
    finally:
        await admin.close()


def _row(table: Table, label: str, figures: LogFigures | None, note: str = "") -> None:
    if figures is None:
        table.add_row(label, "-", "-", "-", "-", note or "skipped")
        return
    table.add_row(
        label,
        f"{figures.ack_p50_ms:.2f}",
        f"{figures.ack_p95_ms:.2f}",
        f"{figures.append_eps:,.0f}",
        f"{figures.read_eps:,.0f}",
        note,
    )


async def embedded_figures(args: argparse.Namespace, table: Table) -> Figures:
    """The embedded log with the default (NORMAL: survives kill -9) and the FULL (power-loss) sync policy."""
    out: Figures = {}
    with tempfile.TemporaryDirectory(prefix="bench-log-", dir=args.dir) as tmp:
        for policy in ("NORMAL", "FULL"):
            async with LocalEventLog(Path(tmp) / f"log-{policy}.db", synchronous=policy) as log:
                figures = await measure_log(log, _topic(), acks=args.acks, total=args.total, batch=args.batch)
            default = policy == "NORMAL"
            _row(table, f"embedded sqlite ({policy}{', default' if default else ''})", figures)
            suffix = "" if default else "_full"
            out[f"embedded_ack_p50_ms{suffix}"] = round(figures.ack_p50_ms, 3)
            out[f"embedded_ack_p95_ms{suffix}"] = round(figures.ack_p95_ms, 3)
            out[f"embedded_append_eps{suffix}"] = round(figures.append_eps)
            out[f"log_read_eps{suffix}"] = round(figures.read_eps)
    return out


async def kafka_figures(args: argparse.Namespace, table: Table) -> Figures:
    """The Kafka log (whatever broker the URL names), or nulls when none is reachable."""
    empty: Figures = {
        "kafka_ack_p50_ms": None,
        "kafka_ack_p95_ms": None,
        "kafka_append_eps": None,
        "kafka_read_eps": None,
    }
    url = args.kafka or os.environ.get("MEMOS_TEST_KAFKA_URL", "")
    if not url:
        _row(table, "kafka", None, "skipped: no --kafka and no MEMOS_TEST_KAFKA_URL")
        return empty
    log = event_log_from_url(url, request_timeout_ms=5_000)
    try:
        await log.start()
    except MemorySystemError as exc:
        _row(table, f"kafka {url}", None, f"skipped: unreachable ({exc})")
        return empty
    topic = _topic()
    try:
        figures = await measure_log(
            log, topic, acks=args.kafka_acks, total=args.kafka_total, batch=args.batch
        )
    finally:
        await log.aclose()
        await _delete_topic(url.removeprefix("kafka://"), topic)
    _row(table, f"kafka {url}", figures, "acks=all, idempotent")
    return {
        "kafka_ack_p50_ms": round(figures.ack_p50_ms, 3),
        "kafka_ack_p95_ms": round(figures.ack_p95_ms, 3),
        "kafka_append_eps": round(figures.append_eps),
        "kafka_read_eps": round(figures.read_eps),
    }


def _replay(args: argparse.Namespace, table: Table) -> Awaitable[Figures]:
    from bench.replay import replay_figures

    return replay_figures(args, table)


MEASUREMENTS: list[Measurement] = [embedded_figures, kafka_figures, _replay]
"""Each adds rows to the table and returns its headline figures."""


async def run(args: argparse.Namespace) -> Figures:
    """Run every measurement; print the table, return the merged figures."""
    table = Table(title="event log", show_lines=False)
    for column in ("log", "ack p50 ms", "ack p95 ms", "batched append ev/s", "read ev/s", "note"):
        table.add_column(column, justify="left" if column in ("log", "note") else "right")
    figures: Figures = {}
    for measurement in MEASUREMENTS:
        figures.update(await measurement(args, table))
    Console(width=120).print(table)
    return figures


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.log", description=__doc__.splitlines()[0])
    parser.add_argument("--kafka", default="", help="kafka://host:port (default: $MEMOS_TEST_KAFKA_URL)")
    parser.add_argument("--acks", type=int, default=2000, help="single appends timed on the embedded log")
    parser.add_argument("--total", type=int, default=20000, help="records appended in batches (embedded)")
    parser.add_argument("--batch", type=int, default=500, help="records per batch")
    parser.add_argument("--kafka-acks", type=int, default=1000, help="single appends timed on Kafka")
    parser.add_argument("--kafka-total", type=int, default=10000, help="records appended in batches (Kafka)")
    parser.add_argument("--replay", type=int, default=20000, help="memory events replayed into the projections")
    parser.add_argument("--replay-phases", action="store_true",
                        help="after the replay, time its parts one by one (CPU-us per event each)")
    parser.add_argument("--dir", default=None, help="folder for the embedded log files (default: temp)")
    parser.add_argument("--chart", default="docs/bench/replay.png", help="PNG of the replay figures ('' for none)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    figures = asyncio.run(run(args))
    size = statistics.mean(len(v) for _, v in memory_values(50))
    Console().print(f"value size: {size:.0f} bytes (Avro MemoryAdded)")
    if args.chart and figures.get("replay_eps") is not None:
        replay_chart(figures, Path(args.chart))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
