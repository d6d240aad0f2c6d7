"""Scale-out benchmark: fast-mode ingest with one `memos worker` process against two, on the Kafka-protocol log.

    python -m bench.scale [--kafka kafka://127.0.0.1:19092] [--turns 800] [--cubes 8] [--workers 1,2]
                          [--engine runner|faust] [--assignments] [--chart docs/bench/scale.png]

For each worker count, in a fresh data directory shared by the workers: ``--cubes`` cubes spread evenly
over the log's partitions get one synthetic two-person conversation each, of ``--turns / --cubes`` turns
(``bench.ingest.conversations``, one ``ConversationRecorded`` per session, fast mode, async, sessions
interleaved across cubes), published straight to the log; the workers (``memos worker --stages
deriver,projector``, each ``OMP_NUM_THREADS=1 MEMOS_EMBED_THREADS=1`` and pinned to a CPU of its own
(``--no-pin``: not pinned): one core each; one consumer group per stage, so the partitions split between them) derive and project them. The clock runs from the first publish
until the projector group has committed past every memory record the deriver wrote. A warm-up round
(one conversation per cube) first waits until every worker has loaded its models and holds partitions.

Besides turns/s, each worker count reports the CPU-seconds each worker process used while the clock ran
(``/proc``: meaningful on a busy machine, where the wall clock is not) and, with ``--assignments``, the
partitions each worker held in each consumer group (from the broker's group coordinator) before and after.
``--repeat`` runs several rounds, alternating the worker counts, and keeps each count's best (load spikes
from other processes then hit one round, not the figure).

Consumer groups get a fresh prefix per run (``log.group_prefix``, runner and faust alike), so the
bench never joins, or is disturbed by, groups of anything else using the same broker. The last
line printed is one JSON object with ``turns_per_s_<n>_workers`` and ``speedup_2_workers`` (target
>= 1.6 on a quiet 2-core machine); ``--chart`` gets a PNG of throughput against workers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.charts import line_chart
from bench.ingest import conversations
from bench.scale_probe import CpuMeter, group_assignments
from memos.runtime import Runtime
from schemas.events import ConversationRecorded, Event
from schemas.topics import CONVERSATIONS, MEMORIES
from streams.log.base import EventLog, partition_for
from streams.settings import AppSettings, LogSettings

__all__ = ["main", "measure_workers", "spread_cubes", "workload"]

logger = logging.getLogger(__name__)

STAGES = {"deriver": (CONVERSATIONS,), "projector": (MEMORIES,)}
"""Stages the workers host, with the topics whose progress says they are done."""

GROUPS = ("deriver", "deriver-large", "projector")
"""The consumer groups the workers join (naming the deriver hosts both its lanes)."""


def spread_cubes(count: int, partitions: int) -> list[str]:
    """``count`` cube ids whose keys fall on the partitions round-robin (so every worker gets work)."""
    cubes: list[str] = []
    n = 0
    while len(cubes) < count:
        cube = f"scale_cube_{n}"
        if partition_for(cube.encode(), partitions) == len(cubes) % partitions:
            cubes.append(cube)
        n += 1
    return cubes


def workload(cubes: Sequence[str], turns: int, *, session_turns: int = 20) -> list[tuple[str, list[dict[str, Any]]]]:
    """(cube, session) pairs: one conversation per cube, each of ``turns // len(cubes)`` turns, their sessions
    interleaved across cubes, so every partition (and so every worker) gets the same work from the start."""
    per_cube = [
        [s for conv in conversations(turns // len(cubes), session_turns=session_turns, sessions=10**6, seed=7 + i)
         for s in conv]
        for i in range(len(cubes))
    ]  # fmt: skip
    rounds = max((len(c) for c in per_cube), default=0)
    return [(cube, sessions[r]) for r in range(rounds) for cube, sessions in zip(cubes, per_cube, strict=True)
            if r < len(sessions)]  # fmt: skip


def _recorded(cube: str, messages: list[dict[str, Any]]) -> ConversationRecorded:
    return ConversationRecorded(
        event_id=uuid.uuid4(), occurred_at=datetime.now(UTC), key=cube, user_id="bench", cube_id=cube,
        messages=messages, mode="fast", async_mode="async", task_id=uuid.uuid4().hex,
    )  # fmt: skip


async def _start_groups_at_end(log: EventLog, prefix: str) -> None:
    """Commit the current end offsets for the new groups: they skip whatever the shared topics hold."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    servers = getattr(log, "servers", "")
    for stage, topics in STAGES.items():
        ends = {
            TopicPartition(topic, partition): end
            for topic in topics
            for partition, end in (await log.end_offsets(topic)).items()
        }
        consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=prefix + stage, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign(list(ends))
            await consumer.commit(ends)
        finally:
            await consumer.stop()


async def _wait_done(log: EventLog, prefix: str, *, timeout_s: float) -> None:
    """Until the deriver group is past every conversation record, then the projector past every memory."""
    deadline = time.monotonic() + timeout_s
    for stage, topics in STAGES.items():
        for topic in topics:
            ends = await log.end_offsets(topic)  # memories: read after the deriver finished
            while True:
                done = await log.committed(prefix + stage, topic)
                if all(done.get(p, 0) >= end for p, end in ends.items()):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{prefix + stage} did not reach {ends} on {topic} in {timeout_s:.0f}s")
                await asyncio.sleep(0.1)


def _worker_command(engine: str) -> list[str]:
    """The worker command line; its consumer groups carry the run's prefix (``MEMOS_LOG__GROUP_PREFIX``)."""
    memos = shutil.which("memos", path=str(Path(sys.executable).parent)) or "memos"
    return [memos, "worker", "--engine", engine, "--stages", ",".join(STAGES)]


def _start_workers(n: int, *, engine: str, prefix: str, env: dict[str, str], logs: Path,
                   pin: bool = False) -> list[subprocess.Popen[bytes]]:
    """``n`` worker processes; with ``pin``, worker ``i`` may run on CPU ``i`` only (``taskset``), so each
    has one core, as a worker with a one-CPU quota would (one worker alone cannot spill onto a second core)."""
    taskset = shutil.which("taskset") if pin else None
    cpus = sorted(os.sched_getaffinity(0)) if taskset else []
    workers = []
    for i in range(n):
        out = (logs / f"worker-{n}-{i}.log").open("wb")
        command = _worker_command(engine)
        if taskset:
            command = [taskset, "-c", str(cpus[i % len(cpus)]), *command]
        workers.append(subprocess.Popen(  # noqa: S603 - our own CLI
            command, env={**env, "MEMOS_WORKER_ID": f"{prefix}w{i}"}, stdout=out, stderr=subprocess.STDOUT,
        ))  # fmt: skip
    return workers


def _stop_workers(workers: Sequence[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


async def measure_workers(n: int, args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    """Fast-mode ingest with ``n`` worker processes; turns, seconds, turns/s."""
    home = Path(tempfile.mkdtemp(prefix=f"bench-scale-{n}-", dir=args.dir))
    prefix = f"bench-scale-{uuid.uuid4().hex[:8]}-"
    settings = AppSettings().model_copy(update={  # $MEMOS_HOME / $MEMOS_LOG__* must not win over these
        "home": home, "log": LogSettings(url=args.kafka, partitions=args.partitions)})
    env = {**os.environ, "MEMOS_HOME": str(home), "MEMOS_LOG__URL": args.kafka,
           "MEMOS_LOG__PARTITIONS": str(args.partitions), "MEMOS_LOG__GROUP_PREFIX": prefix,
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MEMOS_EMBED_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    async with Runtime(settings, run_stages=False) as rt:
        servers = getattr(rt.log, "servers", "")
        cubes = spread_cubes(args.cubes, await rt.log.partitions(CONVERSATIONS))
        sessions = workload(cubes, args.turns, session_turns=args.session_turns)
        turns = sum(len(s) for _, s in sessions)
        await _start_groups_at_end(rt.log, prefix)
        workers = _start_workers(n, engine=args.engine, prefix=prefix, env=env, logs=logs, pin=args.pin)
        try:
            warm: list[Event] = [_recorded(c, [{"role": "user", "content": f"Warm-up for {c}."}]) for c in cubes]
            await rt.publish(warm)
            await _wait_done(rt.log, prefix, timeout_s=args.timeout)
            groups = [prefix + g for g in GROUPS]
            before = await group_assignments(servers, groups)
            meter = CpuMeter([w.pid for w in workers])
            meter.start()
            started = time.perf_counter()
            for lo in range(0, len(sessions), 50):
                await rt.publish([_recorded(cube, s) for cube, s in sessions[lo : lo + 50]])
            await _wait_done(rt.log, prefix, timeout_s=args.timeout)
            elapsed = time.perf_counter() - started
            cpu = meter.stop()
            after = await group_assignments(servers, groups)
            alive = sum(w.poll() is None for w in workers)
        finally:
            _stop_workers(workers)
    if alive != n:
        raise RuntimeError(f"{n - alive} of {n} workers exited during the run; see {logs}")
    shutil.rmtree(home, ignore_errors=True)
    return {"turns": turns, "seconds": elapsed, "turns_per_s": turns / elapsed,
            "cpu_s": [cpu[w.pid] for w in workers],
            "assignments": {"warm": _short(before, prefix), "end": _short(after, prefix)}}


def _short(assignments: dict[str, dict[str, list[str]]], prefix: str) -> dict[str, dict[str, list[str]]]:
    """Assignments with the run's prefix taken off group and member names (worker ``w<i>``)."""
    return {
        group.removeprefix(prefix): {member.split(prefix, 1)[-1]: parts for member, parts in members.items()}
        for group, members in assignments.items()
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every worker count; print the table; return the headline figures."""
    table = Table(title=f"scale-out: fast-mode ingest over {args.kafka} ({args.engine} workers)")
    for column in ("workers", "turns", "seconds", "turns/s", "speedup"):
        table.add_column(column, justify="right")
    logs = Path(tempfile.mkdtemp(prefix="bench-scale-logs-", dir=args.dir))
    load = os.getloadavg()[0]
    results: dict[int, dict[str, Any]] = {}
    figures: dict[str, Any] = {}
    for _ in range(max(1, args.repeat)):  # rounds alternate the worker counts; the best round of each counts
        for n in args.workers:
            try:
                result = await measure_workers(n, args, logs)
            except (TimeoutError, RuntimeError) as exc:
                Console().print(f"[red]{n} worker(s) failed:[/red] {exc} (worker logs: {logs})")
                figures[f"turns_per_s_{n}_workers"] = None
                args.keep_logs = True
                continue
            if n not in results or result["turns_per_s"] > results[n]["turns_per_s"]:
                results[n] = result
    if not results:
        figures["speedup_2_workers"] = None
        return figures
    base = results[min(results)]["turns_per_s"]
    for n, r in results.items():
        table.add_row(str(n), str(int(r["turns"])), f"{r['seconds']:.1f}", f"{r['turns_per_s']:.1f}",
                      f"{r['turns_per_s'] / base:.2f}x")  # fmt: skip
        figures[f"turns_per_s_{n}_workers"] = round(r["turns_per_s"], 1)
        figures[f"cpu_s_per_worker_{n}_workers"] = r["cpu_s"]
        figures[f"cpu_ms_per_turn_{n}_workers"] = round(1000 * sum(r["cpu_s"]) / r["turns"], 1)
        figures[f"cores_used_{n}_workers"] = round(sum(r["cpu_s"]) / r["seconds"], 2)  # < n: others had the CPU
        if args.assignments:
            figures[f"assignments_{n}_workers"] = r["assignments"]
    figures["speedup_2_workers"] = (
        round(results[2]["turns_per_s"] / results[1]["turns_per_s"], 2) if 1 in results and 2 in results else None
    )
    if 1 in results and 2 in results:
        # speedup = (cores the two workers got / cores the one got) x this; on a quiet machine the cores are 2 / 1
        figures["cpu_efficiency_2_workers"] = round(
            sum(results[1]["cpu_s"]) / results[1]["turns"] / (sum(results[2]["cpu_s"]) / results[2]["turns"]), 2
        )
    Console(width=120).print(table)
    figures["cpus"] = os.cpu_count()
    figures["load_1m_at_start"] = round(load, 2)
    figures["pinned"] = bool(args.pin and shutil.which("taskset"))
    if args.chart:
        path = line_chart(
            Path(args.chart),
            {"fast-mode ingest": [(float(n), r["turns_per_s"]) for n, r in results.items()],
             "linear": [(float(n), base * n) for n in results]},
            title="Scale-out: ingest throughput against worker processes",
            xlabel="memos worker processes (OMP_NUM_THREADS=1 each)", ylabel="turns / s",
            note=f"{args.turns} turns, {args.cubes} cubes, {args.partitions} partitions, {os.cpu_count()} CPUs",
        )  # fmt: skip
        if path is not None:
            Console().print(f"chart: {path}")
    if not args.keep_logs:
        shutil.rmtree(logs, ignore_errors=True)
    return figures


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--kafka", default=os.environ.get("MEMOS_TEST_KAFKA_URL", ""),
                        help="kafka://host:port (default: $MEMOS_TEST_KAFKA_URL)")  # fmt: skip
    parser.add_argument("--turns", type=int, default=800, help="synthetic turns ingested per worker count (split evenly over the cubes)")
    parser.add_argument("--session-turns", type=int, default=20, help="turns per session (one add each)")
    parser.add_argument("--cubes", type=int, default=8, help="cubes (spread evenly over the partitions)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions per topic")
    parser.add_argument("--workers", default="1,2", help="worker counts to measure, comma-separated")
    parser.add_argument("--engine", default="runner", choices=("runner", "faust"),
                        help="worker engine: runner (ours, the default of memos worker) or faust")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per phase")
    parser.add_argument("--chart", default="docs/bench/scale.png", help="PNG chart path ('' for none)")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                        help="pin worker i to CPU i (taskset): one core per worker (default: on)")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds over the worker counts; each count's best round is reported (load spikes)")
    parser.add_argument("--assignments", action="store_true", help="print each group's partitions per worker")
    parser.add_argument("--dir", default=None, help="folder for data directories (default: temp)")
    args = parser.parse_args(argv)
    args.workers = sorted({int(w) for w in args.workers.split(",") if w.strip()})
    args.keep_logs = False
    if not args.kafka:
        parser.error("no --kafka and no MEMOS_TEST_KAFKA_URL: this bench needs a Kafka-protocol broker")
    logging.basicConfig(level=logging.WARNING)
    figures = asyncio.run(run(args))
    print(json.dumps(figures))  # noqa: T201 - the last line is the JSON of headline figures


if __name__ == "__main__":
    main()
