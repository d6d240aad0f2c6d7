"""Composition root: builds the log, stores, models and stages from settings, and runs them (the Runtime)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

from memory_store.base import GraphStore, KeywordIndex, Projection, VectorStore
from memory_store.control import ControlStore
from memory_store.registry import graph_store_from_url, keyword_index_from_url, vector_store_from_url
from schemas.envelope import Position
from schemas.events import Event
from schemas.topics import ALL_TOPICS, CONVERSATIONS, MEMORIES, REGISTRY, TASKS
from streams.log.base import EventLog, TopicPartition
from streams.log.registry import event_log_from_url
from streams.pipeline.runner import Runner, Stage, event_record
from streams.pipeline.stages import ControlStage, DerivationStage, DispatchStage, ProjectionStage, TaskHandler
from streams.settings import AppSettings

__all__ = ["Runtime"]

logger = logging.getLogger(__name__)


class Runtime:
    """One process's view of the system: publishes events, hosts stages, waits on watermarks.

    Embedded: every stage runs here. Scaled: API processes run with ``run_stages=False`` and publish,
    while workers (``memos worker``) host the stages over Kafka.
    """

    def __init__(self, settings: AppSettings, *, run_stages: bool = True,
                 stage_names: set[str] | None = None) -> None:
        self.settings = settings
        self.run_stages = run_stages
        self.stage_names = stage_names
        self.log: EventLog = event_log_from_url(settings.log_url(), **self._log_options())
        self.graph: GraphStore = graph_store_from_url(settings.store_url("graph"), namespace=settings.stores.namespace)
        self.vector: VectorStore = vector_store_from_url(settings.store_url("vector"))
        self.keyword: KeywordIndex = keyword_index_from_url(settings.store_url("keyword"))
        self.control = ControlStore(settings.home / "control.db")
        self.embedder: Any = None
        self.llm: Any = None
        self.deriver: Any = None
        self.search_service: Any = None
        self.task_handlers: dict[str, TaskHandler] = {}
        self.projection_stage = ProjectionStage(self.stores)
        self.kv_warmer: Any = None
        """The KV warmer stage (``streams.kv.worker.KVWarmerStage``) when this runtime hosts it."""
        self._runners: list[Runner] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._progress: dict[str, dict[TopicPartition, int]] = {}
        self._changed = asyncio.Condition()
        self._started = False

    def _log_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"partitions": self.settings.log.partitions}
        if self.settings.log_url().startswith(("sqlite:", "local:")):
            options["synchronous"] = self.settings.log.synchronous
        return options

    @property
    def stores(self) -> list[Projection]:
        """The memory projections, in the order they are written."""
        unique: list[Projection] = []
        for store in (self.graph, self.vector, self.keyword):
            if all(store is not s for s in unique):
                unique.append(store)
        return unique

    # --- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open everything and start the stages. Idempotent."""
        if self._started:
            return
        self.settings.home.mkdir(parents=True, exist_ok=True)
        await self.log.start()
        for topic in ALL_TOPICS:
            await self.log.create_topic(topic, partitions=self.settings.log.partitions)
        for store in self.stores:
            await store.start()
        self.control.start()
        await self._build_models()
        self._started = True
        if self.run_stages:
            for stage in self._stages():
                if self.stage_names is not None and stage.name not in self.stage_names:
                    continue
                await self._load_progress(stage)
                runner = Runner(self.log, stage, on_commit=self._on_commit)
                self._runners.append(runner)
                self._tasks.append(asyncio.create_task(runner.run(), name=f"runner:{stage.name}"))

    async def _build_models(self) -> None:
        from memory_store.embedding import embedder_from_url
        from memory_store.fetch import HttpxFetcher
        from memos.application.search import SearchService
        from streams.pipeline.derivation import Deriver, DeriverSettings

        d = self.settings.derivation
        self.embedder = embedder_from_url(d.embedder_url)
        if d.llm_url:
            from memory_store.llm import chat_model_from_url

            self.llm = chat_model_from_url(d.llm_url, api_key=d.llm_api_key.get_secret_value() or None)
        fetcher = HttpxFetcher(max_bytes=d.fetch_max_bytes, timeout_s=d.fetch_timeout_s)
        self.deriver = Deriver(
            self.embedder, chat_model=self.llm, fetcher=fetcher, settings=DeriverSettings.from_config(d),
            similar=self._similar if d.dedup else None,
        )
        self.search_service = SearchService(self.graph, self.vector, self.keyword, self.embedder)

    async def _similar(self, cube_id: str, vector: Sequence[float], k: int) -> list[tuple[Any, float]]:
        hits = await self.vector.search(cube_id, vector, k=k)
        records = {r.id: r for r in await self.graph.get([h.memory_id for h in hits], cube_id=cube_id)}
        return [(records[h.memory_id], h.score) for h in hits if h.memory_id in records]

    def _stages(self) -> list[Stage]:
        stages: list[Stage] = [
            ControlStage(self.control),
            self.projection_stage,
            DerivationStage(self.deriver, phase="first"),
            DerivationStage(self.deriver, phase="refine"),
            DispatchStage(self.task_handlers, self.publish),
        ]
        if self.settings.kv.enabled and (self.stage_names is None or "kv-warmer" in self.stage_names):
            from streams.kv.worker import KVWarmerStage  # imports torch: only when KV caches are on

            self.kv_warmer = KVWarmerStage(self)
            stages.append(self.kv_warmer)
        return stages

    @property
    def kv_caches(self) -> Any:
        """The shared store of warm KV caches (``LocalKVCacheStore``) when this runtime warms them, else None."""
        return self.kv_warmer.store if self.kv_warmer is not None else None

    def warm_cache(self, cube_id: str, model_id: str | None = None) -> Any:
        """The cube's warm KV cache for ``model_id`` (``streams.kv.handoff.WarmHandle``), or None when this
        runtime keeps none. Safe from any thread."""
        return self.kv_warmer.warm_cache(cube_id, model_id) if self.kv_warmer is not None else None

    async def _load_progress(self, stage: Stage) -> None:
        progress = self._progress.setdefault(stage.name, {})
        for topic in stage.topics:
            for partition, offset in (await self.log.committed(stage.name, topic)).items():
                progress[(topic, partition)] = offset

    async def aclose(self) -> None:
        """Stop the stages (finishing their batches and committing), then close stores and the log."""
        for runner in self._runners:
            runner.stop()
        for task in self._tasks:
            with suppress(asyncio.CancelledError):
                await task
        self._runners.clear()
        self._tasks.clear()
        for closer in (getattr(self.embedder, "aclose", None), getattr(self.llm, "aclose", None)):
            if closer is not None:
                await closer()
        for store in self.stores:
            await store.aclose()
        self.control.close()
        await self.log.aclose()
        self._started = False

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- publishing and watermarks --------------------------------------------------------------------

    async def publish(self, events: Sequence[Event]) -> list[Position]:
        """Append events (durable on return); positions in input order."""
        if not events:
            return []
        return await self.log.append_batch([event_record(e) for e in events])

    async def _on_commit(self, group: str, offsets: dict[TopicPartition, int]) -> None:
        progress = self._progress.setdefault(group, {})
        for tp, offset in offsets.items():
            progress[tp] = max(progress.get(tp, 0), offset)
        async with self._changed:
            self._changed.notify_all()

    def _reached(self, group: str, targets: dict[TopicPartition, int]) -> bool:
        progress = self._progress.get(group, {})
        return all(progress.get(tp, 0) >= offset for tp, offset in targets.items())

    async def wait_for(self, group: str, targets: dict[TopicPartition, int], *, timeout_s: float = 120.0) -> None:
        """Wait until a stage has committed past every (topic, partition) -> offset target."""
        if not self.run_stages:
            await self._wait_external(group, targets, timeout_s=timeout_s)
            return
        async with asyncio.timeout(timeout_s):
            async with self._changed:
                await self._changed.wait_for(lambda: self._reached(group, targets))

    async def _wait_external(self, group: str, targets: dict[TopicPartition, int], *, timeout_s: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        topics = {tp[0] for tp in targets}
        while True:
            progress = self._progress.setdefault(group, {})
            for topic in topics:
                for partition, offset in (await self.log.committed(group, topic)).items():
                    progress[(topic, partition)] = offset
            if self._reached(group, targets):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"stage {group!r} did not reach {targets!r} in {timeout_s}s")
            await asyncio.sleep(0.05)

    async def settle(self, positions: Sequence[Position], *, timeout_s: float = 300.0) -> None:
        """Read-your-writes: wait until the effects of ``positions`` are in every projection."""
        conv = {(p.topic, p.partition): p.offset + 1 for p in positions if p.topic == CONVERSATIONS}
        if conv:
            await self.wait_for("deriver", conv, timeout_s=timeout_s)
        for group, topics in (("projector", (MEMORIES, REGISTRY)), ("control", (REGISTRY, TASKS))):
            targets: dict[TopicPartition, int] = {}
            for topic in topics:
                for partition, end in (await self.log.end_offsets(topic)).items():
                    if end > 0:
                        targets[(topic, partition)] = end
            await self.wait_for(group, targets, timeout_s=timeout_s)

    def now(self) -> datetime:
        """Current time for new events (the shell's clock; processors never read it)."""
        return datetime.now(UTC)
