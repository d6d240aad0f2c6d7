"""Composition root: builds the log, stores, models and stages from settings, and runs them (the Runtime).

Nothing below the front ends imports this module. Stages and services get typed dependencies from it
(stores, the log, models, callables such as ``publish`` and ``wait_for``), never the Runtime itself; the
application layer sees it only through its own ports (``memos.application.ports``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from memory_store.base import GraphStore, KeywordIndex, Projection, VectorStore
from memory_store.control.base import ControlStore, cube_key, registry_key_of, user_key
from memory_store.embedding.base import Embedder
from memory_store.llm.base import ChatModel
from memory_store.registry import (
    control_store_from_url,
    graph_store_from_url,
    keyword_index_from_url,
    vector_store_from_url,
)
from memos.application.limits import DoorLimits
from memos.followers import CommittedFollower, GroupProgress, first_done
from memos.runtime_models import Models, build_models
from schemas.envelope import Position
from schemas.errors import ConfigError
from schemas.events import Event
from schemas.ops import DropCube
from schemas.topics import ACTIVATION, ALL_TOPICS, CONVERSATIONS, MEMORIES, REGISTRY, TASKS
from streams.log.base import EventLog, OutgoingRecord, TopicPartition
from streams.log.registry import event_log_from_url
from streams.pipeline.derivation import Deriver
from streams.pipeline.lanes import background_context, install_lanes
from streams.pipeline.runner import Runner, Stage, event_record
from streams.pipeline.stages import (
    ControlStage,
    DerivationStage,
    DispatchStage,
    LargeAddsBehind,
    ProjectionStage,
    TaskHandler,
    any_large_add,
    apply_planned,
)
from streams.replay import catch_up_control, replay_cube
from streams.replay_helper import ReplayHelper
from streams.settings import AppSettings

if TYPE_CHECKING:
    from memory_store.kv.base import KVCacheStore
    from memos.application.search import SearchService
    from streams.kv.handoff import WarmHandle
    from streams.kv.worker import KVWarmerStage
    from streams.replay import Progress

__all__ = ["Runtime"]

logger = logging.getLogger(__name__)

STOP_DEADLINE_S = 20.0
"""How long closing waits for the stages' batches in flight before cancelling them (uncommitted: redelivered)."""
_CUBE_TOPICS = (CONVERSATIONS, MEMORIES, TASKS, ACTIVATION)
"""Topics keyed by cube id (the registry is keyed by kind: ``user:<id>`` / ``cube:<id>``)."""
_KINDS = (user_key(""), cube_key(""))
"""Prefixes of typed registry keys: a bare key that starts with one is never a legacy key."""


class Runtime:
    """One process's view of the system: publishes events, hosts stages, waits on watermarks.

    Embedded: every stage runs here. Scaled: API processes run with ``run_stages=False`` and publish,
    while workers (``memos worker``) host the stages over Kafka. ``task_handlers`` are the dispatch
    stage's handlers per task label (the application layer's; more can be registered later).
    """

    def __init__(self, settings: AppSettings, *, run_stages: bool = True, stage_names: set[str] | None = None,
                 task_handlers: Mapping[str, TaskHandler] | None = None) -> None:
        self.settings = settings
        self.run_stages = run_stages
        self.stage_names = stage_names
        self.log: EventLog = event_log_from_url(settings.log_url(), **self._log_options())
        self.graph: GraphStore = graph_store_from_url(settings.store_url("graph"), **settings.graph_store_options())
        self.vector: VectorStore = vector_store_from_url(settings.store_url("vector"))
        self.keyword: KeywordIndex = keyword_index_from_url(settings.store_url("keyword"))
        self.control: ControlStore = control_store_from_url(settings.control_url(),
                                                            namespace=settings.stores.namespace)
        from memos.application.handlers import default_task_handlers

        self.task_handlers: dict[str, TaskHandler] = {**default_task_handlers(lambda: self),
                                                       **(task_handlers or {})}
        self.projection_stage = ProjectionStage(self.stores)
        self.control_stage = ControlStage(self.control)
        self._control_rebuilds = 0
        self.kv_warmer: KVWarmerStage | None = None
        """The KV warmer stage when this runtime hosts it."""
        self._models: Models | None = None
        self._runners: list[Runner] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._hosted: set[str] = set()
        self._stages = GroupProgress()
        """Committed offsets of the stages hosted here, and the waits on them."""
        self._backlog_reading: asyncio.Future[int] | None = None
        self._ends_pending: asyncio.Future[dict[str, dict[int, int]]] | None = None
        self.replay_helper: ReplayHelper | None = None  # started by the first replay (stores.replay_helper)
        self.followers = CommittedFollower(self.log)
        """Waits on stages hosted by other processes (one poll of the log per group, however many wait)."""
        self._started = False

    def _log_options(self) -> dict[str, object]:
        embedded = self.settings.log_url().startswith(("sqlite:", "local:"))
        return {"partitions": self.settings.log.partitions, **({"synchronous": self.settings.log.synchronous}
                                                               if embedded else {})}

    @property
    def stores(self) -> list[Projection]:
        """The memory projections, in the order they are written."""
        return list({id(store): store for store in (self.graph, self.vector, self.keyword)}.values())  # one each

    def _built(self, value: Any, what: str) -> Any:
        if value is None:
            raise ConfigError(f"the runtime's {what} exists once the runtime is started (await start())")
        return value

    @property
    def embedder(self) -> Embedder:
        """The embedding model (after ``start``)."""
        return cast(Models, self._built(self._models, "embedder")).embedder

    @property
    def llm(self) -> ChatModel | None:
        """The chat model of fine extraction and chat, or None when none is configured."""
        return self._models.llm if self._models is not None else None

    @property
    def deriver(self) -> Deriver:
        """The derivation shell the derivation stages run (after ``start``)."""
        return cast(Models, self._built(self._models, "deriver")).deriver

    @property
    def search_service(self) -> SearchService:
        """Multi-cube search over the projections (after ``start``)."""
        return cast(Models, self._built(self._models, "search service")).search

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
        await self.control.start()
        self._models = build_models(self.settings.derivation, self.graph, self.vector, self.keyword)
        self._started = True
        if self.run_stages:
            install_lanes(asyncio.get_running_loop())
            for stage in self.stages():
                if self.stage_names is not None and stage.name.removesuffix("-large") not in self.stage_names:
                    continue  # naming a derivation stage hosts both its lanes
                if isinstance(stage, ControlStage):
                    # the control projection is rebuilt from the log wherever it is behind its own
                    # checkpoints (a new or deleted store), whatever the group has committed
                    await catch_up_control(self.log, self.control)
                await self._load_progress(stage)
                runner = Runner(self.log, stage, on_commit=self._on_commit, group_id=self.group(stage.name),
                                stall_after_s=self.settings.derivation.stall_after_s)
                self._runners.append(runner)
                self._hosted.add(stage.name)
                # every stage but control runs in the background lane: niced threads of its own, so serving
                # (search, access checks) neither queues behind it nor loses the CPU to it
                lane = None if isinstance(stage, ControlStage) else background_context()
                self._tasks.append(asyncio.create_task(runner.run(), name=f"runner:{stage.name}", context=lane))

    def failed_stages(self) -> list[str]:
        """Stages hosted here that stopped on an error (each logged why), with their errors."""
        return [f"{t.get_name()}: {t.exception()!r}" for t in self._tasks if t.done() and not t.cancelled()
                and t.exception() is not None]

    async def stage_failure(self) -> list[str]:
        """Until a stage hosted here stops on an error: ``failed_stages``."""
        await asyncio.wait(self._tasks or [asyncio.ensure_future(asyncio.Event().wait())],
                           return_when=asyncio.FIRST_EXCEPTION)
        return self.failed_stages()

    def stages(self) -> list[Stage]:
        """The stages this runtime can host (each with typed dependencies), in start order."""
        large, d = self.settings.derivation.large_add_chars, self.settings.derivation
        stages: list[Stage] = [
            self.control_stage,
            self.projection_stage,
            *(DerivationStage(self.deriver, phase=phase, emit=self.publish, lane=lane, wait_for=self._wait_long,
                              large_chars=large, pending_large=LargeAddsBehind(self.log, self.group, large),
                              overlap=d.small_lane_batches if lane == "small" else d.large_lane_batches)
              for phase in ("first", "refine") for lane in ("small", "large")),
            DispatchStage(self.task_handlers, self.publish),
        ]
        if self.settings.kv.enabled and (self.stage_names is None or "kv-warmer" in self.stage_names):
            from streams.kv.worker import KVWarmerDeps, KVWarmerStage  # imports torch: only when KV is on

            self.kv_warmer = KVWarmerStage(KVWarmerDeps(
                settings=self.settings.kv, home=self.settings.home, graph=self.graph, embedder=self.embedder,
                log=self.log, cube_exists=self.control.cube_exists, publish=self.publish,
                wait_for=self.wait_for, now=self.now,
            ))
            stages.append(self.kv_warmer)
        return stages

    def register_task_handler(self, label: str, handler: TaskHandler | None) -> None:
        """Install (None: remove) the handler the dispatch stage runs for a task label."""
        if handler is None:
            self.task_handlers.pop(label, None)
        else:
            self.task_handlers[label] = handler

    def task_handler(self, label: str) -> TaskHandler | None:
        """The handler installed for a task label, if any."""
        return self.task_handlers.get(label)

    @property
    def door_limits(self) -> DoorLimits:
        """The application layer's limits, from the ``door`` settings section."""
        return DoorLimits(**self.settings.door.model_dump())

    @property
    def kv_caches(self) -> KVCacheStore | None:
        """The shared store of warm KV caches when this runtime warms them, else None."""
        return self.kv_warmer.store if self.kv_warmer is not None else None

    def warm_cache(self, cube_id: str, model_id: str | None = None) -> WarmHandle | None:
        """The cube's warm KV cache for ``model_id``, or None when this runtime keeps none. Safe from any thread."""
        return self.kv_warmer.warm_cache(cube_id, model_id) if self.kv_warmer is not None else None

    def group(self, stage_name: str) -> str:
        """The consumer group of a stage here: its name with the deployment's ``log.group_prefix``."""
        return f"{self.settings.log.group_prefix}{stage_name}"

    async def _load_progress(self, stage: Stage) -> None:
        group = self.group(stage.name)
        for topic in stage.topics:
            committed = await self.log.committed(group, topic)
            self._stages.advance(group, {(topic, partition): offset for partition, offset in committed.items()})

    async def aclose(self) -> None:
        """Stop the stages (finishing their batches and committing), then close stores and the log."""
        for runner in self._runners:
            runner.stop()
        if self._tasks:  # batches in flight finish and commit; past the deadline they are redelivered after
            _, late = await asyncio.wait(self._tasks, timeout=STOP_DEADLINE_S)
            for task in late:
                logger.warning("stage %s did not stop in %.0f s: cancelled", task.get_name(), STOP_DEADLINE_S)
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)  # a stage that failed logged why
        self._runners.clear()
        self._tasks.clear()
        self._hosted.clear()
        if self._models is not None:
            await self._models.aclose()
        if self.replay_helper is not None:
            await self.replay_helper.aclose()
        for store in self.stores:
            await store.aclose()
        await self.control.aclose()
        await self.followers.aclose()
        await self.log.aclose()
        self._started = False

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- publishing and watermarks --------------------------------------------------------------------

    async def publish(self, events: Sequence[Event]) -> list[Position]:
        """Append events (durable on return); positions in input order. Registry events are keyed by kind here,
        whatever key the caller gave (``user:<id>``, ``cube:<id>``: ``memory_store.control.base.registry_key_of``),
        so a cube and a user of one id never share records."""
        if not events:
            return []
        return await self.log.append_batch([event_record(_keyed(e)) for e in events])

    async def publish_records(self, records: Sequence[OutgoingRecord]) -> list[Position]:
        """Append records made from events (``event_record``: an add sizes them, encoding once); positions in order."""
        return await self.log.append_batch(records) if records else []

    async def _on_commit(self, group: str, offsets: dict[TopicPartition, int]) -> None:
        self._stages.advance(group, offsets)

    async def _wait_long(self, group: str, targets: Mapping[TopicPartition, int]) -> None:
        """A derivation lane waiting for another (a small add behind its cube's large one): as long as it takes."""
        await self.wait_for(group, targets, timeout_s=7 * 24 * 3600.0)

    async def wait_for(self, group: str, targets: Mapping[TopicPartition, int], *, timeout_s: float = 120.0) -> None:
        """Wait until a stage has committed past every (topic, partition) -> offset target.

        A stage hosted here is followed through its commits; one hosted elsewhere through the log's
        committed offsets. ``group`` is the stage's name (the deployment's group prefix is added here).
        Raises TimeoutError after ``timeout_s``.
        """
        hosted = group in self._hosted
        group = self.group(group)
        if hosted:
            await self._stages.wait(group, targets, timeout_s=timeout_s)
        else:
            await self.followers.wait(group, targets, timeout_s=timeout_s)

    async def settle(self, positions: Sequence[Position], *, timeout_s: float = 300.0,
                     large: bool | None = None, tasks: Sequence[str] = ()) -> None:
        """Read-your-writes: wait until the effects of ``positions`` are in every projection. ``large``: whether
        an add goes to the large lane, if the caller knows (None: read the log). ``tasks``: the adds' task ids;
        with the control stage here, the adds are derived once their final statuses are applied (appended with
        the memories when their batch is done; a lane commits only after earlier batches, maybe other tenants'),
        or once the lanes commit past them, whichever is first."""
        if any(p.topic == CONVERSATIONS for p in positions):
            sooner = [self.control_stage.finished(tasks)] if tasks and "control" in self._hosted else []
            await first_done(self._lanes_passed(positions, large, timeout_s), *sooner)
        pending = self._ends_pending  # a reading not started yet reads past this caller's derivation: share it
        if pending is None or pending.done():  # (done before it started: cancelled)
            pending = self._ends_pending = asyncio.ensure_future(self._read_ends())
        ends = await asyncio.shield(pending)
        for group, waited in (("projector", (MEMORIES, REGISTRY)), ("control", (REGISTRY, TASKS))):
            targets = {(t, partition): end for t in waited for partition, end in ends[t].items() if end > 0}
            await self.wait_for(group, targets, timeout_s=timeout_s)

    async def _lanes_passed(self, positions: Sequence[Position], large: bool | None, timeout_s: float) -> None:
        """Until the derivation lanes that take these adds have committed past them."""
        conv = {(p.topic, p.partition): p.offset + 1 for p in positions if p.topic == CONVERSATIONS}
        await self.wait_for("deriver", conv, timeout_s=timeout_s)
        if large if large is not None else await any_large_add(
                self.log, positions, self.settings.derivation.large_add_chars):
            await self.wait_for("deriver-large", conv, timeout_s=timeout_s)

    async def _read_ends(self) -> dict[str, dict[int, int]]:
        """End offsets of the topics derivation writes to, for ``settle`` (the callers that arrived before this
        started share it: a derivation batch completing 50 sync adds reads them once, not 150 times)."""
        self._ends_pending = None  # started: a later caller's derived records may be past what this reads
        topics = (MEMORIES, REGISTRY, TASKS)
        return dict(zip(topics, await asyncio.gather(*(self.log.end_offsets(t) for t in topics)), strict=True))

    async def settle_control(self, positions: Sequence[Position], *, timeout_s: float = 60.0) -> None:
        """Read-your-writes for the control projection: wait until it applied these registry/task records."""
        targets: dict[TopicPartition, int] = {}
        for p in positions:
            if p.topic in (REGISTRY, TASKS):
                targets[(p.topic, p.partition)] = max(targets.get((p.topic, p.partition), 0), p.offset + 1)
        if not targets:
            return
        if "control" not in self._hosted and self.settings.log_url().startswith(("sqlite:", "local:")):
            # embedded, no control stage here (a CLI command): apply the log to the projection now, through
            # the same idempotent, checkpointed path the stage uses (a running server's stage skips them)
            await catch_up_control(self.log, self.control)
            return
        await self.wait_for("control", targets, timeout_s=timeout_s)

    async def derivation_backlog(self) -> int:
        """Conversation records on the log that the first derivation phase has not committed yet: per partition,
        past the lane (small or large adds) that is further behind. Callers that ask while a reading is under
        way share it (a burst of sync adds, each checking the backlog, reads it once)."""
        reading = self._backlog_reading
        if reading is None or reading.done():
            reading = self._backlog_reading = asyncio.ensure_future(self._read_backlog())
        return await asyncio.shield(reading)

    async def _read_backlog(self) -> int:
        ends, small, large = await asyncio.gather(self.log.end_offsets(CONVERSATIONS), *(
            self.log.committed(self.group(g), CONVERSATIONS) for g in ("deriver", "deriver-large")))
        return sum(max(0, end - min(small.get(p, 0), large.get(p, 0))) for p, end in ends.items())

    # --- forget and replay ----------------------------------------------------------------------------

    async def forget_records(self, cube_id: str | None = None, *, registry_key: str | None = None) -> None:
        """Delete a cube's records from every cube-keyed topic, its registry records (``cube:<id>``) and
        its memories from every projection; and/or every registry record under ``registry_key``
        (``user:<id>`` or ``cube:<id>``; a bare id is a user's). Registry records of the other kind are
        never touched, whatever the ids.

        Stages hosted here first consume what is on the log (a consumer commits only records it saw, so
        deleting unconsumed records at a partition's tail would stall later settles).
        """
        registry: list[str] = []
        if cube_id is not None:
            registry.append(cube_key(cube_id))
            # records of logs written before keys carried their kind; an id that reads as a typed key
            # ("user:bob", "cube:x") names another tenant's records, never a legacy one of this cube
            if not cube_id.startswith(_KINDS) and not await self.control.user_exists(cube_id):
                registry.append(cube_id)
        if registry_key is not None:
            if not registry_key.startswith(_KINDS):  # a bare id names a user
                if not await self.control.cube_exists(registry_key):
                    registry.append(registry_key)
                registry_key = user_key(registry_key)
            registry.append(registry_key)
        if self.run_stages:
            await self.settle([])
        async with self.projection_stage.lock:
            if cube_id is not None:
                key = cube_id.encode()
                for topic in _CUBE_TOPICS:
                    await self.log.forget_key(topic, key)
                await self._drop_cube(cube_id)
            for name in registry:
                await self.log.forget_key(REGISTRY, name.encode())
        if self.run_stages and cube_id is not None:
            await self.settle([])
            async with self.projection_stage.lock:  # a record applied while we deleted is dropped too
                await self._drop_cube(cube_id)

    async def _drop_cube(self, cube_id: str) -> None:
        await apply_planned(self.stores, [([DropCube(cube_id=cube_id)], Position(MEMORIES, -1, -1))], replay=True)

    async def forget_user_writes(self, user_id: str, cube_ids: Sequence[str]) -> int:
        """Remove what ``user_id`` wrote into cubes that others keep (shared with the user) from the log
        and the projections; returns the records removed. Stages hosted here catch up first."""
        from streams.forget import forget_user_writes

        if self.run_stages:
            await self.settle([])
        removed = 0
        for cube_id in cube_ids:
            removed += await forget_user_writes(self.log, self.stores, self.projection_stage.lock, user_id, cube_id)
        return removed

    async def replay_cube(self, cube_id: str, *, progress: Progress | None = None) -> int:
        """Rebuild one cube in every projection from the memories topic (live projection paused), with the
        replay helper (started now if it is not running: it takes its stores over once it is ready)."""
        return await replay_cube(self.log, self.stores, self.projection_stage.lock, cube_id, progress=progress,
                                 helper=self.start_replay_helper())

    def start_replay_helper(self) -> ReplayHelper | None:
        """The replay helper, started if not running; None when turned off or no store can be lent."""
        if self.replay_helper is None:
            modules = sorted({type(s).__module__ for s in self.stores if s.lending() is not None})
            if not self.settings.stores.replay_helper or not modules:
                return None
            self.replay_helper = ReplayHelper(modules)
        try:
            self.replay_helper.start()
        except OSError as exc:  # the replay runs here alone
            logger.warning("replay helper could not start: %s", exc)
            return None
        return self.replay_helper

    async def rebuild_control(self) -> int:
        """Empty the control projection and rebuild it from the registry and tasks topics."""
        try:
            await self.control.reset()
            return await catch_up_control(self.log, self.control)
        finally:
            self._control_rebuilds += 1

    @property
    def registry_version(self) -> int | None:
        """Bumped whenever this process's control stage applied registry records or the projection was
        rebuilt; None when no control stage runs here (another process applies them: nothing is cached)."""
        return self.control_stage.registry_version + self._control_rebuilds if "control" in self._hosted else None

    def now(self) -> datetime:
        """Current time for new events (the shell's clock; processors never read it)."""
        return datetime.now(UTC)


def _keyed(event: Event) -> Event:
    key = registry_key_of(event)
    return event if key is None or key == event.key else event.model_copy(update={"key": key})
