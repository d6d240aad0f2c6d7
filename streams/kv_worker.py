"""The KV-cache warmer stage ("kv-warmer" consumer group): keeps each cube's most important memories warm.

Consumes ``memos.tasks.v1`` (``TaskSubmitted`` with label ``mem_update``: its content is a query),
``memos.memories.v1`` (changes of the cubes it keeps warm) and ``memos.registry.v1`` (``CubeForgotten``).

Per cube it keeps the recent ``mem_update`` queries (their embeddings, from the Runtime's embedder) and
how often each memory was retrieved for them (the ``retrieval_k`` most similar memories of each query),
reads the cube's current memories from the GraphStore, and lets the pure planner
(``processors.kv_warmer.plan_warm_cache``: 0.5 relevance + 0.3 frequency + 0.2 recency, within
``settings.kv.prefix_tokens``) choose and order what the cache holds. Relevance is the cosine of a query
and the embedding already stored on a memory. The cache is built from the composed memory text by the
worker's own model (``settings.kv.model``, on ``settings.kv.device``: CUDA when present, else CPU) and
kept in one ``LocalKVCacheStore`` whose byte budget (``settings.kv.budget_bytes``) all cubes share (LRU).

- A ``mem_update`` rebuilds at once (once per cube per batch); the events are returned to the runner.
- Memory changes of a warm cube are debounced: the cube is re-planned once no change came for
  ``quiet_s`` (200 ms), or ``max_delay_s`` after the first one, so a burst gives one rebuild. These
  rebuilds run in the stage's background task, which appends their events itself.
- Before reading the store the stage waits (bounded) until the projector has applied the memory events
  it saw, so a plan never misses a memory the log already holds.
- Warming the same composition again is a no-op: the cache key is (model id, prefix hash).
- Events on ``memos.activation.v1``: ``KVCacheWarmed`` for every cache that became a cube's current one,
  and ``KVCacheEvicted`` with ``budget`` (LRU), ``stale`` (replaced, or the cube has no memories left) or
  ``forgotten`` (a ``CubeForgotten``, or a periodic check finds the cube dropped from the stores).

Every warm cache is dumped under ``$MEMOS_HOME/kv/<cube>/<prefix hash>/`` before its event is appended,
and its dump is removed when it is evicted; see ``streams.kv_handoff`` for how a chat process in another
process loads it. In this process, ``Runtime.warm_cache(cube_id, model_id)`` hands the cache to chat. On
start the stage reloads its dumps and scoring state, so a restarted worker is warm at once (each restored
cube is re-planned after ``quiet_s``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from memory_store.kv.store import CacheKey, Eviction, LocalKVCacheStore, WarmCache
from processors.kv_warmer import (
    MemoryCandidate,
    WarmComposition,
    WarmPolicy,
    compose_memory_text,
    plan_warm_cache,
)
from schemas.envelope import Envelope, Position
from schemas.errors import MemorySystemError, StoreError
from schemas.events import (
    AnyEvent,
    CubeForgotten,
    Event,
    KVCacheEvicted,
    KVCacheWarmed,
    MemoryAdded,
    MemoryRetired,
    MemoryRevised,
    TaskSubmitted,
    derive_id,
)
from schemas.memory import MemoryRecord
from schemas.topics import MEMORIES, REGISTRY, TASKS
from streams.base import partition_for
from streams.kv_handoff import (
    WarmHandle,
    dump_warm_cache,
    load_warm_cache,
    remove_dump,
    write_cube_state,
)
from streams.kv_scoring import (
    QueryMemory,
    cube_state_from_json,
    cube_state_to_json,
    query_signals,
    saved_cube_states,
    top_matches,
)
from streams.runner import Stage

if TYPE_CHECKING:
    from memory_store.llm.huggingface import HuggingFaceChatModel
    from streams.app import Runtime

__all__ = ["MEM_UPDATE_LABEL", "KVWarmerStage"]

logger = logging.getLogger(__name__)

MEM_UPDATE_LABEL = "mem_update"
"""Task label whose content is a query to warm a cube's cache for."""


@dataclass(slots=True)
class _Cube:
    """What the warmer knows of one cube."""

    queries: deque[QueryMemory]
    retrievals: Counter[str] = field(default_factory=Counter)
    composition: WarmComposition | None = None
    now: datetime | None = None
    trigger_id: uuid.UUID | None = None
    trace_id: str | None = None
    dirty_first: float | None = None
    dirty_last: float | None = None
    targets: dict[int, int] = field(default_factory=dict)


class KVWarmerStage(Stage):
    """Keeps a KV cache of each cube's most important memories warm (see the module doc)."""

    name = "kv-warmer"
    topics = (TASKS, MEMORIES, REGISTRY)

    def __init__(
        self,
        runtime: Runtime,
        *,
        quiet_s: float = 0.2,
        max_delay_s: float = 2.0,
        sweep_s: float = 1.0,
        max_queries: int = 16,
        retrieval_k: int = 5,
        projector_group: str = "projector",
        projector_timeout_s: float = 10.0,
    ) -> None:
        kv = runtime.settings.kv
        self.rt = runtime
        self.quiet_s, self.max_delay_s, self.sweep_s = quiet_s, max_delay_s, sweep_s
        self.max_queries, self.retrieval_k = max_queries, retrieval_k
        self.projector_group, self.projector_timeout_s = projector_group, projector_timeout_s
        self.policy = WarmPolicy(token_budget=kv.prefix_tokens)
        self.store = LocalKVCacheStore(kv.budget_bytes)
        self.llm: HuggingFaceChatModel | None = None
        self.builds = 0
        """Caches built by this stage (a no-op warm builds nothing)."""
        self.ready = asyncio.Event()
        """Set once ``start`` finished (or failed: then ``failure`` holds the error)."""
        self.failure: BaseException | None = None
        self._cubes: dict[str, _Cube] = {}
        self._tokens: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._poke = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        """Id of the model the caches are built for (the configured ``kv.model``)."""
        return self.rt.settings.kv.model if self.llm is None else self.llm.model_id

    async def start(self) -> None:
        """Load the model (offline), restore dumped caches and state, start the debounce loop. Idempotent."""
        if self._loop_task is not None:
            return
        try:
            if self.llm is None:
                from memory_store.llm.huggingface import HuggingFaceChatModel

                kv = self.rt.settings.kv
                self.llm = await asyncio.to_thread(HuggingFaceChatModel, kv.model, device=kv.device or None)
            await self._restore()
        except BaseException as exc:
            self.failure = exc
            self.ready.set()
            raise
        self._loop_task = asyncio.create_task(self._debounce_loop(), name="kv-warmer:debounce")
        self.ready.set()
        logger.info("kv_warmer_started model=%s device=%s budget_bytes=%d prefix_tokens=%d cubes=%d",
                    self.model_id, self.llm.device, self.store.max_bytes, self.policy.token_budget,
                    len(self._cubes))

    async def aclose(self) -> None:
        """Stop the debounce loop (pending debounced rebuilds are redone on restart). Idempotent."""
        task, self._loop_task = self._loop_task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    # --- the handoff to chat --------------------------------------------------------------------------

    def warm_cache(self, cube_id: str, model_id: str | None = None) -> WarmHandle | None:
        """The cube's current warm cache for ``model_id`` (default: the worker's model), or None.

        Marks it used (LRU). Safe from any thread.
        """
        state = self._cubes.get(cube_id)
        composition = state.composition if state is not None else None
        if composition is None or self.llm is None:
            return None
        entry = self.store.current(cube_id, model_id or self.model_id)
        if entry is None or entry.key.prefix_hash != composition.prefix_hash:
            return None
        return WarmHandle(cube_id, entry, composition.memory_ids, composition.texts)

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
                    out += await self._forget(event.cube_id, event.event_id, event.trace_id)
                case _:
                    pass
        for cube_id, tasks in queries.items():
            out += await self._on_queries(cube_id, tasks)
        return out

    def _state(self, cube_id: str) -> _Cube:
        state = self._cubes.get(cube_id)
        if state is None:
            state = self._cubes[cube_id] = _Cube(queries=deque(maxlen=self.max_queries))
        return state

    def _changed(self, event: MemoryAdded | MemoryRevised | MemoryRetired, position: Position) -> None:
        state = self._cubes.get(event.cube_id)
        if state is None:  # not a cube this worker keeps warm
            return
        at = asyncio.get_running_loop().time()
        state.dirty_first = at if state.dirty_first is None else state.dirty_first
        state.dirty_last = at
        state.targets[position.partition] = max(state.targets.get(position.partition, 0), position.offset + 1)
        state.now = max(state.now, event.occurred_at) if state.now is not None else event.occurred_at
        state.trigger_id, state.trace_id = event.event_id, event.trace_id
        self._poke.set()

    async def _on_queries(self, cube_id: str, tasks: list[TaskSubmitted]) -> list[Event]:
        state = self._state(cube_id)
        async with self._lock:
            await self._wait_projected(cube_id, None)
            records = await self.rt.graph.list_memories(cube_id)
            embedded = await self.rt.embedder.embed([t.content for t in tasks], kind="query")
            for task, vector in zip(tasks, embedded.vectors, strict=True):
                query = QueryMemory(task.content, task.occurred_at, tuple(vector), embedded.model_id)
                state.queries.append(query)
                state.retrievals.update(top_matches(query, records, self.retrieval_k))
            last = tasks[-1]
            state.now = max(state.now, last.occurred_at) if state.now is not None else last.occurred_at
            state.trigger_id, state.trace_id = last.event_id, last.trace_id
            state.dirty_first = state.dirty_last = None  # the store is past every change seen so far
            state.targets = {}
            return await self._refresh(cube_id, state, records)

    async def _wait_projected(self, cube_id: str, targets: dict[int, int] | None) -> None:
        """Wait (at most ``projector_timeout_s``) until the projector applied the cube's memory events up
        to ``targets`` (partition -> next offset; None: the memories topic's end for the cube)."""
        if targets is None:
            partition = partition_for(cube_id.encode(), await self.rt.log.partitions(MEMORIES))
            end = (await self.rt.log.end_offsets(MEMORIES)).get(partition, 0)
            targets = {partition: end}
        wanted = {(MEMORIES, p): o for p, o in targets.items() if o > 0}
        if not wanted:
            return
        group = self.projector_group
        try:
            if self.rt.run_stages and (self.rt.stage_names is None or group in self.rt.stage_names):
                await self.rt.wait_for(group, wanted, timeout_s=self.projector_timeout_s)
            else:  # the projector runs elsewhere: read its commits
                async with asyncio.timeout(self.projector_timeout_s):
                    while True:
                        committed = await self.rt.log.committed(group, MEMORIES)
                        if all(committed.get(p, 0) >= o for (_, p), o in wanted.items()):
                            return
                        await asyncio.sleep(0.02)
        except TimeoutError:
            logger.warning("kv_warmer_projector_behind cube=%s group=%s targets=%s timeout_s=%.1f",
                           cube_id, group, targets, self.projector_timeout_s)

    # --- planning and building ------------------------------------------------------------------------

    def _token_count(self, text: str) -> int:
        count = self._tokens.get(text)
        if count is None:
            assert self.llm is not None
            if len(self._tokens) > 100_000:
                self._tokens.clear()
            count = self._tokens[text] = len(self.llm.encode(f"- {' '.join(text.split())}\n"))
        return count

    async def _refresh(self, cube_id: str, state: _Cube, records: Sequence[MemoryRecord]) -> list[Event]:
        """Re-plan a cube; build and store its cache when the composition changed. Returns the events."""
        assert self.llm is not None
        model_id = self.llm.model_id
        live = {r.id for r in records}
        state.retrievals = Counter({k: v for k, v in state.retrievals.items() if k in live})
        candidates = [MemoryCandidate(r.id, r.memory, r.created_at, self._token_count(r.memory)) for r in records]
        current = state.composition
        if current is not None and CacheKey(model_id, current.prefix_hash) not in self.store:
            current = None  # evicted meanwhile: warm it again
        now = state.now or max((r.updated_at for r in records), default=self.rt.now())
        plan = plan_warm_cache(model_id, candidates, query_signals(state.queries, records), state.retrievals,
                               now, current, self.policy)
        if plan.reason == "empty":
            state.composition = None
            evicted = self.store.drop_cube(cube_id, reason="stale")
            await asyncio.to_thread(self._save, cube_id, state, None, evicted)
            return self._evicted_events(evicted, state)
        if not plan.rebuild:
            self.store.current(cube_id, model_id)  # a use, for the LRU
            await asyncio.to_thread(self._save, cube_id, state, None, [])
            return []
        key = CacheKey(model_id, plan.prefix_hash)
        entry = self.store.get(key)
        built = entry is None
        if entry is None:
            entry = await asyncio.to_thread(self._build, key, plan.memory_ids, plan.texts)
            self.builds += 1
        try:
            evicted = self.store.put(entry, cube_id=cube_id)
        except StoreError as exc:
            logger.warning("kv_cache_not_kept cube=%s key=%s error=%s", cube_id, key, exc)
            return []
        state.composition = WarmComposition(plan.memory_ids, plan.texts, plan.prefix_hash)
        stored = self.store.get(key) or entry
        handle = WarmHandle(cube_id, stored, plan.memory_ids, plan.texts)
        await asyncio.to_thread(self._save, cube_id, state, handle, evicted)
        warmed = KVCacheWarmed(
            event_id=derive_id(state.trigger_id or uuid.uuid4(), f"kv-warmed:{cube_id}:{key}"),
            occurred_at=self.rt.now(), key=cube_id, producer=self.name, trace_id=state.trace_id,
            cube_id=cube_id, cache_key=str(key), model_id=model_id, memory_ids=list(plan.memory_ids),
            tokens=stored.tokens, bytes=stored.bytes, build_ms=round(stored.build_ms, 3) if built else 0.0,
        )  # fmt: skip
        logger.info("kv_cache_warmed cube=%s key=%s reason=%s memories=%d tokens=%d bytes=%d build_ms=%.1f "
                    "evicted=%d", cube_id, key, plan.reason, len(plan.memory_ids), stored.tokens, stored.bytes,
                    warmed.build_ms, len(evicted))
        return [*self._evicted_events(evicted, state), warmed]

    def _build(self, key: CacheKey, memory_ids: tuple[str, ...], texts: tuple[str, ...]) -> WarmCache:
        assert self.llm is not None
        prefix = self.llm.build_memory_cache(compose_memory_text(texts))
        return WarmCache(key=key, cache=prefix.cache, prefix_ids=prefix.prefix_ids, memory_ids=memory_ids,
                         prefix_text=prefix.prefix_text, build_ms=prefix.build_ms)

    def _save(self, cube_id: str, state: _Cube, handle: WarmHandle | None, evicted: Sequence[Eviction]) -> None:
        """Files (in a worker thread): the new dump before its event, evicted dumps removed, the state."""
        home = self.rt.settings.home
        for eviction in evicted:
            if eviction.cube_id:
                remove_dump(home, eviction.cube_id, eviction.cache_key)
        if handle is not None:
            dump_warm_cache(home, cube_id, handle.entry, handle.texts, handle.memory_ids)
        write_cube_state(home, cube_id, cube_state_to_json(cube_id, self.model_id, state.queries,
                                                           state.retrievals, state.composition, state.now))

    def _evicted_events(self, evicted: Sequence[Eviction], state: _Cube) -> list[Event]:
        trigger = state.trigger_id or uuid.uuid4()
        return [
            KVCacheEvicted(
                event_id=derive_id(trigger, f"kv-evicted:{e.cube_id}:{e.cache_key}:{e.reason}"),
                occurred_at=self.rt.now(), key=e.cube_id, producer=self.name, trace_id=state.trace_id,
                cube_id=e.cube_id, cache_key=e.cache_key, reason=e.reason,
            )  # fmt: skip
            for e in evicted
            if e.cube_id
        ]

    async def _forget(self, cube_id: str, trigger_id: uuid.UUID | None, trace_id: str | None) -> list[Event]:
        """Drop a forgotten cube: its caches (``forgotten`` evictions), dumps and state."""
        self._cubes.pop(cube_id, None)
        evicted = self.store.drop_cube(cube_id, reason="forgotten")
        await asyncio.to_thread(remove_dump, self.rt.settings.home, cube_id)
        if evicted:
            logger.info("kv_cube_forgotten cube=%s evicted=%d", cube_id, len(evicted))
        return self._evicted_events(evicted, _Cube(queries=deque(), trigger_id=trigger_id, trace_id=trace_id))

    # --- debounced rebuilds, forget sweep, restore ----------------------------------------------------

    async def _debounce_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + self.sweep_s
        while True:
            self._poke.clear()
            now = loop.time()
            for cube_id, state in list(self._cubes.items()):
                if state.dirty_first is not None and now >= min(self._due(state)):
                    await self._guarded(self._flush(cube_id))
            if now >= next_sweep:
                await self._guarded(self._sweep())
                next_sweep = loop.time() + self.sweep_s
            wake = min([next_sweep, *(min(self._due(s)) for s in self._cubes.values() if s.dirty_first is not None)])
            try:
                await asyncio.wait_for(self._poke.wait(), timeout=max(0.0, wake - loop.time()))
            except TimeoutError:
                pass

    def _due(self, state: _Cube) -> tuple[float, float]:
        assert state.dirty_first is not None and state.dirty_last is not None
        return state.dirty_last + self.quiet_s, state.dirty_first + self.max_delay_s

    async def _guarded(self, work: Any) -> None:
        try:
            await work
        except MemorySystemError as exc:  # a store or model failing must not stop the loop
            logger.warning("kv_warmer_background_error error=%r", exc)
        except Exception:  # noqa: BLE001 - keep warming the other cubes; the error is logged in full
            logger.exception("kv_warmer_background_bug")

    async def _flush(self, cube_id: str) -> None:
        state = self._cubes.get(cube_id)
        if state is None or state.dirty_first is None:
            return
        targets, state.targets = state.targets, {}
        state.dirty_first = state.dirty_last = None
        async with self._lock:
            await self._wait_projected(cube_id, targets)
            records = await self.rt.graph.list_memories(cube_id)
            events = await self._refresh(cube_id, state, records)
        if events:
            await self.rt.publish(events)

    async def _sweep(self) -> None:
        """Forget cubes whose memories were dropped from the stores (a ``CubeForgotten`` this worker did
        not see: the embedded log deletes it with the cube's other records)."""
        events: list[Event] = []
        for cube_id in list(self._cubes):
            if await self.rt.graph.count(cube_id, include_retired=True) == 0 and not self.rt.control.cube_exists(
                cube_id
            ):
                events += await self._forget(cube_id, None, None)
        if events:
            await self.rt.publish(events)

    async def _restore(self) -> None:
        """Reload dumped caches and scoring state of this model (each restored cube is re-planned soon)."""
        assert self.llm is not None
        home, at = self.rt.settings.home, asyncio.get_running_loop().time()
        evicted: list[Eviction] = []
        for data in await asyncio.to_thread(saved_cube_states, home, self.model_id):
            cube_id, queries, retrievals, composition, now = cube_state_from_json(data, self.max_queries)
            state = self._state(cube_id)
            state.queries, state.retrievals, state.now = queries, retrievals, now
            state.dirty_first = state.dirty_last = at
            if composition is None:
                continue
            key = CacheKey(self.model_id, composition.prefix_hash)
            try:
                handle = await asyncio.to_thread(load_warm_cache, home, cube_id, key, device=str(self.llm.device))
                if handle is not None:
                    evicted += self.store.put(handle.entry, cube_id=cube_id)
                    state.composition = composition
            except StoreError as exc:
                logger.warning("kv_dump_not_restored cube=%s key=%s error=%s", cube_id, key, exc)
        if evicted:
            await asyncio.to_thread(self._save_evictions, evicted)
            await self.rt.publish(self._evicted_events(evicted, _Cube(queries=deque())))
        self._poke.set()

    def _save_evictions(self, evicted: Sequence[Eviction]) -> None:
        for eviction in evicted:
            if eviction.cube_id:
                remove_dump(self.rt.settings.home, eviction.cube_id, eviction.cache_key)
