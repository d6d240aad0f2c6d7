"""The faust-streaming worker: the runner's stages as faust agents over Kafka, one app (consumer group) each.

Each stage gets its own faust app whose id is the stage's consumer group (``deriver``, ``refiner``,
``projector``, ``control``, optionally prefixed), so committed offsets mean the same as with our runner
and ``Runtime.wait_for`` in API processes works against either engine. The apps share one
``Runtime(run_stages=False)`` (log, stores, deriver, control store) that a ``StageHost`` service opens
before any app consumes and closes after every app has stopped. An agent body is short: record ->
decode -> ``stage.handle`` -> append the produced events (``partition_for``, acks=all) -> ack; faust
commits acked offsets only (at-least-once; the stores are idempotent by position). Poison records and
records a stage cannot process go to ``memos.dlq.v1``; a failure that survives the retries stops the
worker without acking, so nothing after it is committed. This module fails fast without the ``kafka``
extra; ``memos worker --engine faust`` imports it only when asked.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from memos.runtime import Runtime
from schemas.codec import decode
from schemas.envelope import Envelope, Position, Record
from schemas.errors import ConfigError, EventDecodeError, ProcessingError, is_retryable
from schemas.events import AnyEvent, Event
from streams.log.base import OutgoingRecord
from streams.pipeline.runner import Stage, dead_letter_record, event_record
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
    "build_faust_app",
    "faust_brokers",
    "run_faust_worker",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

STAGE_TOPICS: dict[str, tuple[str, ...]] = {
    "control": ControlStage.topics,
    "projector": ProjectionStage.topics,
    "deriver": DerivationStage.topics,
    "refiner": DerivationStage.topics,
}
"""Stage name (= consumer group without prefix) -> topics it reads. DispatchStage is not hosted here:
its handlers are registered in-process by the embedding application."""


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
        self, settings: AppSettings, *, group_prefix: str = "", max_retries: int = 5, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.group_prefix = group_prefix
        self.max_retries = max_retries
        self.runtime: Runtime | None = None
        self.stages: dict[str, Stage] = {}
        self.failure: BaseException | None = None
        self.processed = 0
        self.dead_lettered = 0

    async def on_start(self) -> None:
        """Open the Runtime (creates the topics, so faust never sees them missing) and build the stages."""
        runtime = Runtime(self.settings, run_stages=False)
        await runtime.start()
        self.runtime = runtime
        self.stages = {
            "control": ControlStage(runtime.control),
            "projector": runtime.projection_stage,
            "deriver": DerivationStage(runtime.deriver, phase="first"),
            "refiner": DerivationStage(runtime.deriver, phase="refine"),
        }
        for name, stage in self.stages.items():
            if stage.name != name:  # the group names must match the runner's, or watermarks break
                raise ConfigError(f"stage {type(stage).__name__} is named {stage.name!r}, expected {name!r}")
            await stage.start()
        logger.info("faust stage host ready log=%s home=%s", self.settings.log_url(), self.settings.home)

    async def on_stop(self) -> None:
        """Close the stages and the Runtime (stores flushed, log producer flushed)."""
        runtime, self.runtime = self.runtime, None
        for stage in self.stages.values():
            await stage.aclose()
        if runtime is not None:
            await runtime.aclose()
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
        stage, where = self.stages[stage_name], self._where(stage_name, record)
        try:
            envelope: Envelope[AnyEvent] = Envelope(record.position, decode(record.value), record.headers)
        except EventDecodeError as exc:
            await self._dead_letter(stage_name, record, exc)
            return
        try:
            produced: list[Event] = await self._retrying(lambda: stage.handle([envelope]), where)
        except Exception as exc:  # noqa: BLE001 - a record the stage cannot process must not stop the partition
            if is_retryable(exc):
                raise
            await self._dead_letter(stage_name, record, exc)
            return
        if produced:
            await self._append([event_record(event) for event in produced], where)
        self.processed += 1

    async def _dead_letter(self, stage_name: str, record: Record, exc: BaseException) -> None:
        where = self._where(stage_name, record)
        logger.warning("record sent to DLQ %s error=%r", where, exc)
        await self._append([dead_letter_record(record, exc, group=self.group(stage_name))], where)
        self.dead_lettered += 1

    async def _append(self, records: Sequence[OutgoingRecord], where: str) -> None:
        if self.runtime is None:
            raise ProcessingError("the faust stage host is not started")
        log = self.runtime.log
        await self._retrying(lambda: log.append_batch(records), where)

    async def _retrying(self, call: Callable[[], Awaitable[T]], where: str) -> T:
        delay = 0.05
        for attempt in range(self.max_retries + 1):
            try:
                return await call()
            except Exception as exc:
                if not is_retryable(exc) or attempt == self.max_retries:
                    raise
                wait = float(getattr(exc, "retry_after", None) or delay)
                logger.warning(
                    "retryable error %s attempt=%d wait_s=%.2f error=%r", where, attempt + 1, wait, exc
                )
                await asyncio.sleep(wait)
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    async def fail(self, stage_name: str, record: Record, exc: BaseException) -> None:
        """Stop the worker after an unrecoverable failure; the record stays unacked (never committed)."""
        logger.error(
            "stage failed, stopping the worker %s error=%r",
            self._where(stage_name, record),
            exc,
            exc_info=exc,
        )
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
            except Exception as exc:  # noqa: BLE001 - stop before acking: nothing after it may commit
                await host.fail(stage_name, record, exc)
                return
            await manual.ack(event)

    app.agent(channel, name=f"memos.{stage_name}", concurrency=1)(agent)
    return app


def build_faust_app(
    settings: AppSettings, *, stage_names: Sequence[str] | None = None, group_prefix: str = ""
) -> faust.App:
    """The worker's faust app: one app per stage (app id = consumer group), nested under the first.

    The returned app starts, in order, the StageHost (the shared Runtime), the other stage apps, then
    itself; it stops in the reverse order. ``group_prefix`` isolates consumer groups (tests, canaries).
    """
    return _build(settings, stage_names=stage_names, group_prefix=group_prefix)[0]


def _build(
    settings: AppSettings, *, stage_names: Sequence[str] | None, group_prefix: str
) -> tuple[faust.App, StageHost]:
    names = list(STAGE_TOPICS) if stage_names is None else list(dict.fromkeys(stage_names))
    unknown = sorted(set(names) - set(STAGE_TOPICS))
    if unknown or not names:
        raise ConfigError(f"unknown or no faust stages {unknown or names!r}; known: {sorted(STAGE_TOPICS)}")
    host = StageHost(settings, group_prefix=group_prefix)
    apps = [_stage_app(settings, host, name) for name in names]
    main = apps[0]
    main.add_dependency(host)
    for other in apps[1:]:
        main.add_dependency(other)
    return main, host


def run_faust_worker(
    settings: AppSettings,
    *,
    stage_names: Sequence[str] | None = None,
    group_prefix: str = "",
    loglevel: str = "INFO",
) -> None:
    """Run the faust worker until SIGTERM/SIGINT; ProcessingError when a stage failed and stopped it."""
    app, host = _build(settings, stage_names=stage_names, group_prefix=group_prefix)
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
