"""The KV-cache warmer stage ("kv-warmer" consumer group): keeps each cube's most important memories warm.

Consumes ``memos.tasks.v1`` (``TaskSubmitted`` with label ``mem_update``: its content is a query),
``memos.memories.v1`` (changes of the cubes it keeps warm) and ``memos.registry.v1`` (``CubeForgotten``).

Per cube it keeps the recent ``mem_update`` queries (embedded by the Runtime's embedder) and how often
each memory was retrieved for them (the ``retrieval_k`` memories most similar to each query), reads the
cube's current memories from the Runtime's GraphStore, and lets the pure planner
(``processors.kv_warmer``: 0.5 relevance + 0.3 frequency + 0.2 recency, within ``settings.kv.prefix_tokens``)
choose and order what the cache holds. Relevance is the cosine of a query and the embedding already stored
on a memory (``streams.kv.scoring``). Caches are built from the composed memory text by the worker's own
model (``settings.kv.model`` on ``settings.kv.device``: CUDA when present, else CPU) and kept in one
``LocalKVCacheStore`` whose byte budget (``settings.kv.budget_bytes``) all cubes share, least recently used
first out (``streams.kv.keeper``).

- A ``mem_update`` re-plans its cube at once (once per cube per batch); the stage returns the events.
- Memory changes of a warm cube are debounced: the cube is re-planned once no change came for ``quiet_s``
  (200 ms), or ``max_delay_s`` after the first, so a burst gives one rebuild. The stage's background task
  does these and appends their events itself (the runner has committed the changes by then; a worker
  that dies meanwhile re-plans every restored cube on start).
- Before reading the store it waits (bounded) until the projector has applied the memory events it saw.
- The same composition again is a no-op: the cache key is (model id, prefix hash).
- ``memos.activation.v1`` gets ``KVCacheWarmed`` (cache_key, model_id, memory_ids, tokens, bytes, build_ms)
  whenever a cache becomes a cube's current one, and ``KVCacheEvicted`` with ``budget`` (LRU), ``stale``
  (replaced, or no memories left) or ``forgotten`` (``CubeForgotten``, or a check every ``sweep_s`` finds
  the cube gone from the stores: the embedded log deletes a forgotten cube's records, often before the
  stage reads its ``CubeForgotten``).

Handoff to chat: in this process, ``Runtime.warm_cache(cube_id, model_id)`` returns the cube's warm cache
(``memos.chat`` prefers it when the chat model is the cache's model). Every warm cache is also dumped
under ``$MEMOS_HOME/kv/<cube>/<prefix hash>/`` (safetensors + JSON) before its ``KVCacheWarmed`` is
appended, and its dump is deleted when it is evicted: a chat process elsewhere follows
``memos.activation.v1`` and loads the cache named by its cube's latest ``KVCacheWarmed``
(``streams.kv.handoff.load_latest_warm_cache``). On start the stage reloads its dumps and scoring state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from memory_store.base import GraphStore
from memory_store.embedding.base import Embedder
from memory_store.kv.base import KVCacheStore
from memory_store.kv.store import LocalKVCacheStore
from processors.kv_warmer import WarmPolicy
from schemas.envelope import Envelope, Position
from schemas.errors import MemorySystemError
from schemas.events import (
    AnyEvent,
    CubeForgotten,
    Event,
    MemoryAdded,
    MemoryRetired,
    MemoryRevised,
    TaskSubmitted,
)
from schemas.topics import MEMORIES, STAGE_READS
from streams.kv.handoff import WarmHandle
from streams.kv.keeper import WarmCacheKeeper
from streams.kv.scoring import QueryMemory, top_matches
from streams.log.base import EventLog, TopicPartition, partition_for
from streams.pipeline.runner import Stage
from streams.settings import KVSettings

if TYPE_CHECKING:
    from memory_store.llm.huggingface import HuggingFaceChatModel

__all__ = ["MEM_UPDATE_LABEL", "KVWarmerDeps", "KVWarmerStage", "WaitFor"]

logger = logging.getLogger(__name__)

MEM_UPDATE_LABEL = "mem_update"
"""Task label whose content is a query to warm the cube's cache for."""


class WaitFor(Protocol):
    """Waits until a consumer group committed past targets ((topic, partition) -> next offset)."""

    def __call__(self, group: str, targets: Mapping[TopicPartition, int], *, timeout_s: float = ...
                 ) -> Awaitable[None]: ...


@dataclass(frozen=True, slots=True)
class KVWarmerDeps:
    """What the KV warmer needs from the system (the composition root provides it)."""

    settings: KVSettings
    home: Path
    """Data directory: warm caches are dumped under ``home/kv``."""
    graph: GraphStore
    embedder: Embedder
    log: EventLog
    cube_exists: Callable[[str], Awaitable[bool]]
    publish: Callable[[Sequence[Event]], Awaitable[list[Position]]]
    wait_for: WaitFor
    """Waits for the projector group; follows commits wherever the projector runs."""
    now: Callable[[], datetime]


class KVWarmerStage(Stage):
    """Keeps a KV cache of each cube's most important memories warm (see the module doc)."""

    name = "kv-warmer"
    topics = STAGE_READS[name]

    def __init__(
        self,
        deps: KVWarmerDeps,
        *,
        quiet_s: float = 0.2,
        max_delay_s: float = 2.0,
        sweep_s: float = 1.0,
        max_queries: int = 16,
        retrieval_k: int = 5,
        projector_group: str = "projector",
        projector_timeout_s: float = 10.0,
    ) -> None:
        kv = deps.settings
        self.deps = deps
        self.quiet_s, self.max_delay_s, self.sweep_s = quiet_s, max_delay_s, sweep_s
        self.retrieval_k = retrieval_k
        self.projector_group, self.projector_timeout_s = projector_group, projector_timeout_s
        self.store: KVCacheStore = LocalKVCacheStore(kv.budget_bytes)
        self.keeper = WarmCacheKeeper(
            self.store,
            WarmPolicy(token_budget=kv.prefix_tokens),
            home=deps.home,
            now=deps.now,
            max_queries=max_queries,
            producer=self.name,
        )
        self.ready = asyncio.Event()
        """Set once ``start`` finished, or failed (``failure`` then holds the error)."""
        self.failure: BaseException | None = None
        self._lock = asyncio.Lock()
        self._poke = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    @property
    def llm(self) -> HuggingFaceChatModel | None:
        """The worker's model, once loaded."""
        return self.keeper.llm

    @property
    def model_id(self) -> str:
        """Id of the model caches are built for (the configured ``kv.model``)."""
        return self.deps.settings.model if self.keeper.llm is None else self.keeper.llm.model_id

    @property
    def builds(self) -> int:
        """Caches this stage built (a no-op warm builds nothing)."""
        return self.keeper.builds

    def warm_cache(self, cube_id: str, model_id: str | None = None) -> WarmHandle | None:
        """The cube's current warm cache for ``model_id`` (default: the worker's model), or None.
        Marks it used (LRU). Safe from any thread."""
        return self.keeper.warm_cache(cube_id, model_id)

    # --- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the model (offline), restore dumped caches and state, start the debounce loop. Idempotent.

        Raises ConfigError when the model is not available locally.
        """
        if self._loop_task is not None:
            return
        try:
            if self.keeper.llm is None:
                from memory_store.llm.huggingface import HuggingFaceChatModel

                kv = self.deps.settings
                self.keeper.llm = await asyncio.to_thread(
                    HuggingFaceChatModel, kv.model, device=kv.device or None
                )
            restored = await self.keeper.restore(asyncio.get_running_loop().time())
            if restored:
                await self.deps.publish(restored)
        except BaseException as exc:
            self.failure = exc
            self.ready.set()
            raise
        self._loop_task = asyncio.create_task(self._debounce_loop(), name="kv-warmer:debounce")
        self.ready.set()
        logger.info(
            "kv_warmer_started model=%s device=%s budget_bytes=%d prefix_tokens=%d cubes=%d",
            self.model_id, self.keeper.model.device, self.store.max_bytes, self.keeper.policy.token_budget,
            len(self.keeper.cubes),
        )  # fmt: skip

    async def aclose(self) -> None:
        """Stop the debounce loop and release the model. Idempotent. Pending debounced rebuilds are not
        lost: a restarted worker re-plans every cube it restores."""
        task, self._loop_task = self._loop_task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        llm, self.keeper.llm = self.keeper.llm, None
        if llm is not None:
            await llm.aclose()

    # --- consuming ------------------------------------------------------------------------------------

    async def handle(self, batch: Sequence[Envelope[AnyEvent]]) -> list[Event]:
        queries: dict[str, list[TaskSubmitted]] = {}
        out: list[Event] = []
        for envelope in batch:
            event = envelope.event
            match event:
                case TaskSubmitted() if event.label == MEM_UPDATE_LABEL and event.content.strip():
                    queries.setdefault(event.cube_id, []).append(event)
                case MemoryAdded() | MemoryRevised() | MemoryRetired():
                    self._changed(event, envelope.position)
                case CubeForgotten():
                    queries.pop(event.cube_id, None)
                    async with self._lock:
                        out += await self.keeper.forget(event.cube_id, event)
                case _:
                    pass
        for cube_id, tasks in queries.items():
            out += await self._on_queries(cube_id, tasks)
        return out

    def _changed(self, event: MemoryAdded | MemoryRevised | MemoryRetired, position: Position) -> None:
        state = self.keeper.cubes.get(event.cube_id)
        if state is None:  # not a cube this worker keeps warm
            return
        at = asyncio.get_running_loop().time()
        state.dirty_first = at if state.dirty_first is None else state.dirty_first
        state.dirty_last = at
        state.targets[position.partition] = max(state.targets.get(position.partition, 0), position.offset + 1)
        state.saw(event)
        self._poke.set()

    async def _on_queries(self, cube_id: str, tasks: list[TaskSubmitted]) -> list[Event]:
        state = self.keeper.state(cube_id)
        async with self._lock:
            await self._wait_projected(cube_id, None)
            records = await self.deps.graph.list_memories(cube_id)
            embedded = await self.deps.embedder.embed([t.content for t in tasks], kind="query")
            for task, vector in zip(tasks, embedded.vectors, strict=True):
                query = QueryMemory(task.content, task.occurred_at, tuple(vector), embedded.model_id)
                state.queries.append(query)
                state.retrievals.update(top_matches(query, records, self.retrieval_k))
                state.saw(task)
            state.dirty_first = state.dirty_last = None  # the store is past every change seen so far
            state.targets = {}
            return await self.keeper.refresh(cube_id, state, records)

    async def _wait_projected(self, cube_id: str, targets: dict[int, int] | None) -> None:
        """Wait (at most ``projector_timeout_s``) until the projector applied the cube's memory events up
        to ``targets`` (partition -> next offset; None: the memories topic's end on the cube's partition)."""
        if targets is None:
            partition = partition_for(cube_id.encode(), await self.deps.log.partitions(MEMORIES))
            targets = {partition: (await self.deps.log.end_offsets(MEMORIES)).get(partition, 0)}
        wanted = {(MEMORIES, p): o for p, o in targets.items() if o > 0}
        if not wanted:
            return
        group = self.projector_group
        try:
            await self.deps.wait_for(group, wanted, timeout_s=self.projector_timeout_s)
        except TimeoutError:
            logger.warning(
                "kv_warmer_projector_behind cube=%s group=%s targets=%s timeout_s=%.1f",
                cube_id, group, targets, self.projector_timeout_s,
            )  # fmt: skip

    # --- debounced rebuilds and the forget sweep ------------------------------------------------------

    def _due(self, cube_id: str) -> float | None:
        state = self.keeper.cubes.get(cube_id)
        if state is None or state.dirty_first is None or state.dirty_last is None:
            return None
        return min(state.dirty_last + self.quiet_s, state.dirty_first + self.max_delay_s)

    async def _debounce_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + self.sweep_s
        while True:
            self._poke.clear()
            for cube_id in list(self.keeper.cubes):
                due = self._due(cube_id)
                if due is not None and loop.time() >= due:
                    await self._guarded(self._flush(cube_id))
            if loop.time() >= next_sweep:
                await self._guarded(self._sweep())
                next_sweep = loop.time() + self.sweep_s
            dues = [d for d in map(self._due, list(self.keeper.cubes)) if d is not None]
            try:
                await asyncio.wait_for(
                    self._poke.wait(), timeout=max(0.0, min([next_sweep, *dues]) - loop.time())
                )
            except TimeoutError:
                pass

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except MemorySystemError as exc:  # a store or the model failing must not stop the other cubes
            logger.warning("kv_warmer_background_error error=%r", exc)
        except Exception:  # noqa: BLE001 - same, for a bug: logged in full, the loop goes on
            logger.exception("kv_warmer_background_bug")

    async def _flush(self, cube_id: str) -> None:
        state = self.keeper.cubes.get(cube_id)
        if state is None or state.dirty_first is None:
            return
        targets, state.targets = state.targets, {}
        state.dirty_first = state.dirty_last = None
        async with self._lock:
            await self._wait_projected(cube_id, targets)
            records = await self.deps.graph.list_memories(cube_id)
            events = await self.keeper.refresh(cube_id, state, records)
        if events:
            await self.deps.publish(events)

    async def _sweep(self) -> None:
        """Forget kept cubes that are gone from the graph store and the registry."""
        events: list[Event] = []
        for cube_id in list(self.keeper.cubes):
            if await self.deps.graph.count(cube_id, include_retired=True):
                continue
            if not await self.deps.cube_exists(cube_id):
                async with self._lock:
                    events += await self.keeper.forget(cube_id)
        if events:
            await self.deps.publish(events)
