"""The warm caches of the cubes one kv-warmer keeps: plan, build, store, dump, and the events to append.

:class:`WarmCacheKeeper` is the kv-warmer's state and its one step, :meth:`WarmCacheKeeper.refresh`: given a
cube's current memories, it asks the pure planner (``processors.kv_warmer.plan_warm_cache``) what the
cube's cache should hold, builds it with the worker's model unless the shared ``LocalKVCacheStore`` already
holds that (model id, prefix hash) key, stores it (evicting least recently used caches past the byte
budget), dumps it (``streams.kv.handoff``) before its event is returned, removes the dumps of what was
evicted, and saves the cube's scoring state. It never touches the log: callers append the events.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from memory_store.kv.base import CacheKey, Eviction, KVCacheStore, WarmCache
from processors.kv_warmer import (
    MemoryCandidate,
    WarmComposition,
    WarmPolicy,
    compose_memory_text,
    plan_warm_cache,
)
from schemas.errors import StoreError
from schemas.events import Event, KVCacheEvicted, KVCacheWarmed, derive_id
from schemas.memory import MemoryRecord
from streams.kv.handoff import WarmHandle, dump_warm_cache, load_warm_cache, remove_dump, write_cube_state
from streams.kv.scoring import (
    QueryMemory,
    cube_state_from_json,
    cube_state_to_json,
    query_signals,
    saved_cube_states,
)

if TYPE_CHECKING:
    from memory_store.llm.huggingface import HuggingFaceChatModel

__all__ = ["CubeState", "WarmCacheKeeper"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class CubeState:
    """What the warmer knows of one cube: scoring inputs, its warm composition, pending changes."""

    queries: deque[QueryMemory]
    retrievals: Counter[str] = field(default_factory=Counter)
    composition: WarmComposition | None = None
    now: datetime | None = None
    """Time of the latest event seen for the cube (the planner's clock)."""
    trigger_id: uuid.UUID | None = None
    """Event the next produced events derive their ids from."""
    trace_id: str | None = None
    dirty_first: float | None = None
    """Loop time of the first memory change not yet planned (None: nothing pending)."""
    dirty_last: float | None = None
    targets: dict[int, int] = field(default_factory=dict)
    """Memories partition -> offset the projector must pass before the pending change is planned."""

    def saw(self, event: Event) -> None:
        """Advance the planner's clock and the trigger to ``event``."""
        self.now = event.occurred_at if self.now is None else max(self.now, event.occurred_at)
        self.trigger_id, self.trace_id = event.event_id, event.trace_id


class WarmCacheKeeper:
    """Per-cube warm caches over one shared store (see the module doc). Used from one event loop."""

    def __init__(
        self,
        store: KVCacheStore,
        policy: WarmPolicy,
        *,
        home: Path,
        now: Callable[[], datetime],
        max_queries: int = 16,
        producer: str = "kv-warmer",
    ) -> None:
        self.store = store
        self.policy = policy
        self.home = home
        self.now = now
        self.max_queries = max_queries
        self.producer = producer
        self.llm: HuggingFaceChatModel | None = None
        self.cubes: dict[str, CubeState] = {}
        self.builds = 0
        """Caches built (a no-op warm builds nothing)."""
        self._tokens: dict[str, int] = {}

    @property
    def model(self) -> HuggingFaceChatModel:
        """The loaded model. Raises RuntimeError before it is set."""
        if self.llm is None:
            raise RuntimeError("the kv-warmer model is not loaded yet")
        return self.llm

    def state(self, cube_id: str) -> CubeState:
        """The cube's state, created empty on first use."""
        state = self.cubes.get(cube_id)
        if state is None:
            state = self.cubes[cube_id] = CubeState(queries=deque(maxlen=self.max_queries))
        return state

    def warm_cache(self, cube_id: str, model_id: str | None = None) -> WarmHandle | None:
        """The cube's current warm cache for ``model_id`` (default: this model), marked used; or None."""
        state = self.cubes.get(cube_id)
        composition = state.composition if state is not None else None
        if composition is None or self.llm is None:
            return None
        entry = self.store.current(cube_id, model_id or self.llm.model_id)
        if entry is None or entry.key.prefix_hash != composition.prefix_hash:
            return None
        return WarmHandle(cube_id, entry, composition.memory_ids, composition.texts)

    def _token_count(self, text: str) -> int:
        count = self._tokens.get(text)
        if count is None:
            if len(self._tokens) > 100_000:
                self._tokens.clear()
            count = self._tokens[text] = len(self.model.encode(f"- {' '.join(text.split())}\n"))
        return count

    async def refresh(self, cube_id: str, state: CubeState, records: Sequence[MemoryRecord]) -> list[Event]:
        """Re-plan a cube over its current memories; build and store its cache when the composition
        changed (or its cache was evicted). Returns the events to append (evictions, then the warm one)."""
        model_id = self.model.model_id
        live = {r.id for r in records}
        state.retrievals = Counter({k: v for k, v in state.retrievals.items() if k in live})
        shared = len({r.user_id for r in records}) > 1  # "The user ..." means each memory's writer: say whose
        texts = {r.id: f"[memory of user {r.user_id}] {r.memory}" if shared else r.memory for r in records}
        candidates = [
            MemoryCandidate(r.id, texts[r.id], r.created_at, self._token_count(texts[r.id])) for r in records
        ]
        current = state.composition
        if current is not None and CacheKey(model_id, current.prefix_hash) not in self.store:
            current = None  # evicted meanwhile: warm it again
        now = state.now or max((r.updated_at for r in records), default=self.now())
        signals = query_signals(state.queries, records)
        plan = plan_warm_cache(model_id, candidates, signals, state.retrievals, now, current, self.policy)
        if plan.reason == "empty":
            state.composition = None
            evicted = self.store.drop_cube(cube_id, reason="stale")
            await asyncio.to_thread(self._save, cube_id, state, None, evicted)
            return self.evicted_events(evicted, state)
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
            occurred_at=self.now(), key=cube_id, producer=self.producer, trace_id=state.trace_id,
            cube_id=cube_id, cache_key=str(key), model_id=model_id, memory_ids=list(plan.memory_ids),
            tokens=stored.tokens, bytes=stored.bytes, build_ms=round(stored.build_ms, 3) if built else 0.0,
        )  # fmt: skip
        logger.info(
            "kv_cache_warmed cube=%s key=%s reason=%s memories=%d tokens=%d bytes=%d build_ms=%.1f evicted=%d",
            cube_id, key, plan.reason, len(plan.memory_ids), stored.tokens, stored.bytes, warmed.build_ms,
            len(evicted),
        )  # fmt: skip
        return [*self.evicted_events(evicted, state), warmed]

    def _build(self, key: CacheKey, memory_ids: tuple[str, ...], texts: tuple[str, ...]) -> WarmCache:
        prefix = self.model.build_memory_cache(compose_memory_text(texts))
        return WarmCache(
            key=key,
            cache=prefix.cache,
            prefix_ids=prefix.prefix_ids,
            memory_ids=memory_ids,
            prefix_text=prefix.prefix_text,
            build_ms=prefix.build_ms,
        )

    def _save(
        self, cube_id: str, state: CubeState, handle: WarmHandle | None, evicted: Sequence[Eviction]
    ) -> None:
        """Files (run in a worker thread): evicted dumps removed, the new dump, then the cube's state."""
        self.remove_dumps(evicted)
        if handle is not None:
            dump_warm_cache(self.home, cube_id, handle.entry, handle.texts, handle.memory_ids)
        data = cube_state_to_json(
            cube_id, self.model.model_id, state.queries, state.retrievals, state.composition, state.now
        )
        write_cube_state(self.home, cube_id, data)

    def remove_dumps(self, evicted: Sequence[Eviction]) -> None:
        """Delete the dumps of evicted caches."""
        for eviction in evicted:
            if eviction.cube_id:
                remove_dump(self.home, eviction.cube_id, eviction.cache_key)

    def evicted_events(self, evicted: Sequence[Eviction], state: CubeState | None = None) -> list[Event]:
        """``KVCacheEvicted`` events of these evictions (ids derived from the cube's trigger event)."""
        trigger = (state.trigger_id if state is not None else None) or uuid.uuid4()
        trace = state.trace_id if state is not None else None
        return [
            KVCacheEvicted(
                event_id=derive_id(trigger, f"kv-evicted:{e.cube_id}:{e.cache_key}:{e.reason}"),
                occurred_at=self.now(),
                key=e.cube_id,
                producer=self.producer,
                trace_id=trace,
                cube_id=e.cube_id,
                cache_key=e.cache_key,
                reason=e.reason,
            )  # fmt: skip
            for e in evicted
            if e.cube_id
        ]

    async def forget(self, cube_id: str, trigger: Event | None = None) -> list[Event]:
        """Drop a forgotten cube: its caches (``forgotten`` evictions), dumps and state."""
        self.cubes.pop(cube_id, None)
        evicted = self.store.drop_cube(cube_id, reason="forgotten")
        await asyncio.to_thread(remove_dump, self.home, cube_id)
        if evicted:
            logger.info("kv_cube_forgotten cube=%s evicted=%d", cube_id, len(evicted))
        state = CubeState(queries=deque())
        if trigger is not None:
            state.saw(trigger)
        return self.evicted_events(evicted, state)

    async def restore(self, dirty_at: float) -> list[Event]:
        """Reload this model's dumped caches and scoring state; every restored cube is marked changed at
        ``dirty_at`` (so it is re-planned). Returns eviction events of caches that no longer fit."""
        model = self.model
        evicted: list[Eviction] = []
        for data in await asyncio.to_thread(saved_cube_states, self.home, model.model_id):
            cube_id, queries, retrievals, composition, now = cube_state_from_json(data, self.max_queries)
            state = self.state(cube_id)
            state.queries, state.retrievals, state.now = queries, retrievals, now
            state.dirty_first = state.dirty_last = dirty_at
            if composition is None:
                continue
            key = CacheKey(model.model_id, composition.prefix_hash)
            try:
                handle = await asyncio.to_thread(
                    load_warm_cache, self.home, cube_id, key, device=str(model.device)
                )
            except StoreError as exc:
                logger.warning("kv_dump_not_restored cube=%s key=%s error=%s", cube_id, key, exc)
                continue
            if handle is not None:
                evicted += self.store.put(handle.entry, cube_id=cube_id)
                state.composition = composition
        await asyncio.to_thread(self.remove_dumps, evicted)
        if self.cubes:
            logger.info("kv_caches_restored cubes=%d caches=%d", len(self.cubes), len(self.store))
        return self.evicted_events(evicted)
