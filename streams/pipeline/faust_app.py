"""The faust-streaming worker: the runner's stages as faust agents over Kafka, one app (consumer group) each.

Each stage gets its own faust app whose id is the stage's consumer group (``deriver``, ``refiner``,
``projector``, ``control``, optionally prefixed), so committed offsets mean the same as with our runner
and ``Runtime.wait_for`` in API processes works against either engine. The apps share one
:class:`StageSource` (the composition root's ``Runtime(run_stages=False)``: log, stores, deriver, control
store) that a ``StageHost`` service opens before any app consumes and closes after every app has
stopped. An agent body is short: record -> ``delivery.deliver`` (decode, ``stage.handle``, retries,
dead-lettering: the same code as our runner) -> append the produced events (acks=all) -> ack; faust
commits acked offsets only (at-least-once; the stores are idempotent by position). A failure that
survives the retries stops the worker without acking, so nothing after it is committed. A record that killed
the process is found on restart: each attempt is counted in an ``AttemptStore`` (``<home>/faust/attempts-
<worker id>.db``) before the record is processed and forgotten once it is acked, and after
``delivery.MAX_ATTEMPTS`` deaths on it the record is dead-lettered with the reason instead of run again.
This module fails fast without the ``kafka``
extra; ``memos worker --engine faust`` imports it only when asked.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

from schemas.envelope import Position, Record
from schemas.errors import ConfigError, PayloadTooLarge, ProcessingError, StageStalled
from streams.log.base import EventLog, OutgoingRecord, record_size
from streams.pipeline.delivery import (
    MAX_ATTEMPTS,
    AttemptStore,
    dead_letter_record,
    deliver,
    event_record,
    fitted,
    poison_records,
    retrying,
)
from streams.pipeline.runner import Stage
from streams.pipeline.stages import ControlStage, DerivationStage, ProjectionStage
from streams.settings import AppSettings

INSTALL_HINT = 'the faust worker needs faust-streaming: pip install "memos-stream[kafka]"'

try:
    import faust
    from mode import Service
except ImportError as exc:  # pragma: no cover - only without the kafka extra
    raise ImportError(INSTALL_HINT) from exc

__all__ = [
    "INSTALL_HINT",
    "STAGE_TOPICS",
    "StageHost",
    "StageSource",
    "build_faust_app",
    "faust_brokers",
    "run_faust_worker",
]

logger = logging.getLogger(__name__)


class StageSource(Protocol):
    """What hosts the stages: the log and the stages with their dependencies (the composition root's
    ``Runtime(run_stages=False)``)."""

    log: EventLog

    async def start(self) -> None:
        """Open the log, stores and models (creates the topics)."""
        ...

    async def aclose(self) -> None:
        """Close everything."""
        ...

    def stages(self) -> list[Stage]:
        """Every stage it can host."""
        ...


SourceFactory = Callable[[], StageSource]

STAGE_TOPICS: dict[str, tuple[str, ...]] = {
    "control": ControlStage.topics,
    "projector": ProjectionStage.topics,
    "deriver": DerivationStage.topics,
    "deriver-large": DerivationStage.topics,
    "refiner": DerivationStage.topics,
    "refiner-large": DerivationStage.topics,
}
"""Stage name (= consumer group without prefix) -> topics it reads. DispatchStage is not hosted here:
its handlers are registered in-process by the embedding application. Naming a derivation stage hosts its
lane of large adds too (``deriver`` -> ``deriver-large``)."""


def faust_brokers(url: str) -> list[str]:
    """``kafka://h1:p1,h2:p2`` -> ``["kafka://h1:p1", "kafka://h2:p2"]``; ConfigError for other schemes."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "kafka" or not parts.netloc:
        raise ConfigError(f"the faust worker needs a kafka://host:port log URL, got {url!r}")
    return [f"kafka://{server.strip()}" for server in parts.netloc.split(",") if server.strip()]


def message_record(message: Any) -> Record:
    """A faust (aiokafka) consumer message as our Record."""
    headers = tuple((str(name), bytes(value)) for name, value in (message.headers or ()))
    timestamp_ms = int((message.timestamp or 0) * 1000)
    position = Position(message.topic, message.partition, message.offset)
    return Record(position, message.key, bytes(message.value or b""), headers, timestamp_ms)


class StageHost(Service):
    """Owns the Runtime the stage agents share: started before any app consumes, stopped after all stop.

    ``process`` is the whole per-record path; it raises only for failures that outlived the retries.
    """

    def __init__(
        self, settings: AppSettings, source: SourceFactory, *, group_prefix: str = "", max_retries: int = 5,
        max_attempts: int = MAX_ATTEMPTS, worker_id: str | None = None, **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.source_factory = source
        self.group_prefix = group_prefix
        self.max_retries = max_retries
        self.max_attempts = max_attempts
        self.worker_id = worker_id or os.environ.get("MEMOS_WORKER_ID") or socket.gethostname()
        self.attempts: AttemptStore | None = None
        self.runtime: StageSource | None = None
        self.stages: dict[str, Stage] = {}
        self.failure: BaseException | None = None
        self.processed = 0
        self.dead_lettered = 0

    async def on_start(self) -> None:
        """Open the source (creates the topics, so faust never sees them missing) and take its stages."""
        self.attempts = AttemptStore(self.settings.home / "faust" / f"attempts-{self.worker_id}.db")
        suspects = self.attempts.in_flight()
        if suspects:
            logger.warning("faust stage host resumes with records in flight when it stopped: %s", suspects)
        runtime = self.source_factory()
        await runtime.start()
        self.runtime = runtime
        self.stages = {stage.name: stage for stage in runtime.stages() if stage.name in STAGE_TOPICS}
        missing = sorted(set(STAGE_TOPICS) - set(self.stages))
        if missing:  # the group names must match the runner's, or watermarks break
            raise ConfigError(f"the stage source has no stages named {missing!r}")
        for stage in self.stages.values():
            await stage.start()
        logger.info("faust stage host ready log=%s home=%s", self.settings.log_url(), self.settings.home)

    async def on_stop(self) -> None:
        """Close the stages and the Runtime (stores flushed, log producer flushed)."""
        runtime, self.runtime = self.runtime, None
        for stage in self.stages.values():
            await stage.aclose()
        if runtime is not None:
            await runtime.aclose()
        attempts, self.attempts = self.attempts, None
        if attempts is not None:
            attempts.close()
        logger.info(
            "faust stage host stopped processed=%d dead_lettered=%d", self.processed, self.dead_lettered
        )

    def group(self, stage_name: str) -> str:
        """The consumer group (faust app id) of a stage."""
        return f"{self.group_prefix}{stage_name}"

    def _where(self, stage_name: str, record: Record) -> str:
        p = record.position
        return f"group={self.group(stage_name)} topic={p.topic} partition={p.partition} offset={p.offset}"

    async def process(self, stage_name: str, record: Record) -> None:
        """decode -> stage.handle -> append produced events; poison and failing records go to the DLQ.

        Retryable errors are retried with backoff; raises only when they outlive ``max_retries``.
        """
        stage, where, group = self.stages[stage_name], self._where(stage_name, record), self.group(stage_name)
        attempts = self.attempts.begin(group, record.position) if self.attempts is not None else 1
        if self.max_attempts and attempts > self.max_attempts:
            logger.error("poison record sent to DLQ %s attempts=%d", where, attempts - 1)
            dead, failed = poison_records(record, attempts - 1, group=group)
            await self._append([dead, *failed], where)
            self.dead_lettered += 1
            return
        if attempts > 1:
            logger.warning("record was in flight when the worker stopped %s attempt=%d", where, attempts)
        stall_s = self.settings.derivation.stall_after_s
        try:
            delivered = await asyncio.wait_for(
                deliver(stage.handle, [record], group=group, max_retries=self.max_retries), stall_s or None)
        except TimeoutError:
            raise StageStalled(f"{where} not done in {stall_s:g} s (derivation.stall_after_s): stopping, so that "
                               "the restarted worker tries it again (dead-lettered after its tries)") from None
        produced = [event_record(event) for event in delivered.produced]
        limit = self.runtime.log.max_record_bytes if self.runtime is not None else 0
        if limit and (sizes := [size for r in produced if (size := record_size(r)) > limit]):
            produced = []  # never appendable: the record is dead-lettered, not retried until the worker dies
            delivered.dead.append(dead_letter_record(record, PayloadTooLarge(
                f"an event derived from this record would be {max(sizes)} bytes, over the log's record limit "
                f"({limit}); the input stays on the log"), group=group))
        if produced:
            await self._append(produced, where)
        if delivered.dead:
            logger.warning("record sent to DLQ %s", where)
            await self._append([fitted(dead, limit) for dead in delivered.dead], where)
            self.dead_lettered += len(delivered.dead)
        else:
            self.processed += 1

    def settle(self, stage_name: str, record: Record) -> None:
        """Forget the record's attempts: it was acked, or it did not kill the process (a graceful stop)."""
        if self.attempts is not None:
            self.attempts.clear(self.group(stage_name), record.position)

    async def _append(self, records: Sequence[OutgoingRecord], where: str) -> None:
        if self.runtime is None:
            raise ProcessingError("the faust stage host is not started")
        log = self.runtime.log
        await retrying(lambda: log.append_batch(records), max_retries=self.max_retries, where=where)

    async def fail(self, stage_name: str, record: Record, exc: BaseException) -> None:
        """Stop the worker after an unrecoverable failure; the record stays unacked (never committed)."""
        logger.error(
            "stage failed, stopping the worker %s error=%r",
            self._where(stage_name, record),
            exc,
            exc_info=exc,
        )
        if not isinstance(exc, StageStalled):  # a failure the worker survived is not a death on the record;
            self.settle(stage_name, record)  # a record that hangs is (it is counted towards the DLQ)
        if self.failure is None:
            self.failure = exc
            signal.raise_signal(signal.SIGTERM)  # the faust worker's own graceful shutdown
        await self.wait_until_stopped()


def _stage_app(settings: AppSettings, host: StageHost, stage_name: str) -> faust.App:
    app = faust.App(
        host.group(stage_name),
        broker=faust_brokers(settings.log_url()),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.log.partitions,
        topic_disable_leader=True,
        web_enabled=False,
        datadir=str(settings.home / "faust"),
        consumer_auto_offset_reset="earliest",  # like the runner: a new group reads from the start
        broker_commit_interval=0.5,
        # An agent never leaves an event unacked except after a failure that stops the worker; waiting
        # for it would hang the shutdown. Redelivery after a rebalance is harmless (idempotent stores).
        stream_wait_empty=False,
    )
    channel = app.topic(*STAGE_TOPICS[stage_name], key_serializer="raw", value_serializer="raw")

    async def agent(stream: faust.StreamT[bytes]) -> None:
        manual = cast(faust.Stream[bytes], stream).noack()  # acked below, only once processed
        async for event in manual.events():
            record = message_record(event.message)
            try:
                await host.process(stage_name, record)
            except asyncio.CancelledError:  # the worker is stopping: the record did not kill it
                host.settle(stage_name, record)
                raise
            except Exception as exc:  # noqa: BLE001 - stop before acking: nothing after it may commit
                await host.fail(stage_name, record, exc)
                return
            await manual.ack(event)
            host.settle(stage_name, record)

    app.agent(channel, name=f"memos.{stage_name}", concurrency=1)(agent)

    async def pace_fetches() -> None:
        _pace_faust_consumer(app, PACED_FETCH_MS)

    app.timer(1.0, name=f"memos.{stage_name}.pace")(pace_fetches)
    return app


PACED_FETCH_MS = 50
"""Least time an empty fetch of a faust consumer takes (as ``KafkaEventLog.empty_fetch_wait_ms``)."""


def _pace_faust_consumer(app: faust.App, wait_ms: int) -> bool:
    """Pace the empty fetches of the app's aiokafka consumer once it exists (``pace_empty_fetches``): on a
    broker that answers empty fetches at once, an idle faust worker otherwise spins (measured: 0.8 CPU-s/s)."""
    thread = getattr(getattr(app, "consumer", None), "_thread", None)
    consumer = getattr(thread, "_consumer", None)
    if consumer is None or getattr(consumer, "_memos_paced", False):
        return False
    from streams.log.kafka.consumer import pace_empty_fetches

    consumer._memos_paced = pace_empty_fetches(consumer, wait_ms / 1000)
    return bool(consumer._memos_paced)


def build_faust_app(
    settings: AppSettings, source: SourceFactory, *, stage_names: Sequence[str] | None = None,
    group_prefix: str | None = None,
) -> faust.App:
    """The worker's faust app: one app per stage (app id = consumer group), nested under the first.

    The returned app starts, in order, the StageHost (the shared Runtime), the other stage apps, then
    itself; it stops in the reverse order. ``group_prefix`` (default: ``settings.log.group_prefix``)
    isolates consumer groups (tests, canaries).
    """
    return _build(settings, source, stage_names=stage_names, group_prefix=group_prefix)[0]


def _build(
    settings: AppSettings, source: SourceFactory, *, stage_names: Sequence[str] | None, group_prefix: str | None
) -> tuple[faust.App, StageHost]:
    names = list(STAGE_TOPICS) if stage_names is None else list(dict.fromkeys(stage_names))
    names += [f"{n}-large" for n in names if f"{n}-large" in STAGE_TOPICS and f"{n}-large" not in names]
    unknown = sorted(set(names) - set(STAGE_TOPICS))
    if unknown or not names:
        raise ConfigError(f"unknown or no faust stages {unknown or names!r}; known: {sorted(STAGE_TOPICS)}")
    prefix = settings.log.group_prefix if group_prefix is None else group_prefix
    host = StageHost(settings, source, group_prefix=prefix)
    apps = [_stage_app(settings, host, name) for name in names]
    main = apps[0]
    main.add_dependency(host)
    for other in apps[1:]:
        main.add_dependency(other)
    return main, host


def run_faust_worker(
    settings: AppSettings,
    source: SourceFactory,
    *,
    stage_names: Sequence[str] | None = None,
    group_prefix: str | None = None,
    loglevel: str = "INFO",
) -> None:
    """Run the faust worker until SIGTERM/SIGINT; ProcessingError when a stage failed and stopped it."""
    app, host = _build(settings, source, stage_names=stage_names, group_prefix=group_prefix)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    worker = faust.Worker(app, loop=loop, loglevel=loglevel)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    if host.failure is not None:
        raise ProcessingError(
            f"faust worker stopped after a stage failure: {host.failure!r}"
        ) from host.failure
