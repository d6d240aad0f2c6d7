"""The derivation step (shell): fetch, parse, extract, embed, dedup -> the memory events of one conversation.

All I/O happens here (fetches, model calls, similarity look-ups); every decision is made by the pure
processors. Ids and times come from the input event, so deriving the same event twice gives the
same events.

Nothing heavy runs on the serving event loop: fetches follow the caller's origin (a remote caller never
reads a local file or an internal address: ``memory_store.fetch``), documents are parsed in the parsing
sandbox (a child process with memory and time limits), the pure planning and dedup steps run in a
thread, and a large add is embedded and deduplicated in slices, reporting its progress per task
(:meth:`Deriver.progress_of`) and yielding between slices so other work goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Literal

from memory_store.embedding.base import Embedder, Embeddings
from memory_store.fetch import Fetcher
from memory_store.llm.base import ChatModel
from processors.chunking import plan_windows
from processors.dedup import resolve_candidates
from processors.entities import entity_relations
from processors.extraction import merge_phases
from processors.fast import MemoryDraft, build_memory_events, follows_relations, plan_fast
from processors.reader import Item, ReadResult, attach_fetched, read_messages
from schemas.errors import DimensionMismatch, FetchFailed, MemorySystemError, ModelOutputInvalid, OverBudget
from schemas.events import (
    ConversationRecorded,
    DerivationFailed,
    Event,
    MemoryAdded,
    MemoryRetired,
    ModelUsage,
    derive_id,
    derived_header,
)
from schemas.memory import MemoryRecord
from schemas.text import times_in_words
from streams.pipeline.batch_view import add_batch_view
from streams.pipeline.derivation_fine import FineExtraction
from streams.pipeline.derivation_types import (
    DeriverSettings,
    Phase,
    Plan,
    Progress,
    ProgressSink,
    SimilarFn,
)
from streams.pipeline.derivation_types import failed as _failed
from streams.pipeline.sandbox import AddParseBudget, DocumentSandbox, UserParseTime

__all__ = ["Deriver", "DeriverSettings", "Phase", "Progress", "ProgressSink", "SimilarFn"]

logger = logging.getLogger(__name__)


class Deriver(FineExtraction):
    """Derives memory events from ``ConversationRecorded`` events.

    Built with an embedder, an optional chat model (None: the offline rule-based extractor), a fetcher
    (None: references are recorded as unfetched), settings, and ``similar`` for write-time dedup
    (None: dedup only within one add). The caller owns the adapters and closes them.
    """

    def __init__(
        self,
        embedder: Embedder,
        *,
        chat_model: ChatModel | None = None,
        fetcher: Fetcher | None = None,
        settings: DeriverSettings | None = None,
        similar: SimilarFn | None = None,
        expected_dimension: int | None = None,
        sandbox: DocumentSandbox | None = None,
        on_progress: Callable[[str, Progress], None] | None = None,
    ) -> None:
        self.embedder = embedder
        self.chat_model = chat_model
        self.fetcher = fetcher
        self.settings = settings or DeriverSettings()
        self.similar = similar
        self.expected_dimension = expected_dimension
        self.sandbox = sandbox or DocumentSandbox(self.settings.sandbox, self.settings.documents)
        self.parse_time = UserParseTime(self.settings.sandbox.per_user_s, self.settings.sandbox.user_window_s)
        """Parse time each user has left in the window (``derivation.parse_budget_per_user_s``)."""
        self._progress: dict[str, Progress] = {}
        self.on_progress = on_progress
        """Called with (task id, progress) at every step of every add, on the event loop."""

    def progress_of(self, task_id: str) -> Progress | None:
        """Where the derivation of ``task_id`` stands while it runs (None when it is not running here)."""
        return self._progress.get(task_id)

    async def _report(
        self, event: ConversationRecorded, step: str, done: int, total: int, sink: ProgressSink | None
    ) -> None:
        progress = self._progress[event.task_id] = Progress(step, done, total)
        if self.on_progress is not None:
            self.on_progress(event.task_id, progress)
        if sink is not None:
            await sink(event, progress)
        if total > self.settings.slice_size:
            logger.info("derivation progress task=%s step=%s %d/%d", event.task_id, step, done, total)

    async def start(self) -> None:
        """Check the embedder's real vector size against ``expected_dimension``. Raises DimensionMismatch."""
        probe = await self.embedder.embed(["dimension probe"], kind="passage")
        size = len(probe.vectors[0]) if probe.vectors else 0
        if self.expected_dimension is not None and size != self.expected_dimension:
            raise DimensionMismatch(
                f"embedder {self.embedder.model_id!r} makes {size}-dimensional vectors but the stores expect "
                f"{self.expected_dimension}; use the embedder the stores were built with, or rebuild them"
            )
        logger.info("deriver embedder=%s dimension=%d llm=%s", probe.model_id, size, self._llm_name())

    def _llm_name(self) -> str:
        return self.chat_model.model_id if self.chat_model is not None else "rules"

    async def derive(
        self, event: ConversationRecorded, *, phase: Phase = "fast", after_fast: bool | None = None
    ) -> list[Event]:
        """The events to append for ``event``.

        ``fast``: fast memories only. ``fine``: extracted memories (LLM or rules), plus what extraction
        does not refine (file chunks, tool schemas, placeholders, windows whose extraction failed).
        With ``after_fast`` (default: the event's async_mode is "async") the fast memories are taken
        to be on the log already: they are retired as "refined" naming their successors instead of
        being written. ``both``: fast memories and fine ones, retiring the refined fast ones.
        Raises ModelUnavailable (retryable) when the embedder does not answer.
        """
        return (await self.derive_many([event], phase=phase, after_fast=after_fast))[0]

    async def derive_many(
        self,
        events: Sequence[ConversationRecorded],
        *,
        phase: Phase = "fast",
        after_fast: bool | None = None,
        progress: ProgressSink | None = None,
    ) -> list[list[Event]]:
        """``derive`` for a batch of events (a runner's poll): the events to append for each, in order.

        Every memory text of the whole batch goes to the embedder in one call, so small adds still
        embed at full batch speed; a memory that duplicates one from an earlier event of the batch is
        merged as if that one were already stored. ``progress`` is told where each add stands, step by step
        (counts are the add's memories), ending with ``Progress("done", n, n)``.
        """
        try:
            return await self._derive_many(events, phase, after_fast, progress)
        finally:
            for event in events:
                self._progress.pop(event.task_id, None)

    async def _derive_many(
        self,
        events: Sequence[ConversationRecorded],
        phase: Phase,
        after_fast: bool | None,
        sink: ProgressSink | None,
    ) -> list[list[Event]]:
        started = time.perf_counter()
        for event in events:
            await self._report(event, "reading", 0, 0, sink)
        plans = await asyncio.gather(*(self._plan(e, phase, after_fast) for e in events))
        drafts = [d for plan in plans for d in plan.drafts]
        embedded = await self._embed(plans, sink)
        total_chars = sum(len(d.memory) for d in drafts) or 1
        out: list[list[Event]] = []
        earlier: list[MemoryAdded] = []
        offset = 0
        for plan in plans:
            produced: list[Event] = []
            if plan.drafts:
                vectors = embedded.vectors[offset : offset + len(plan.drafts)]
                offset += len(plan.drafts)
                share = sum(len(d.memory) for d in plan.drafts) / total_chars
                usage = ModelUsage(
                    model_id=embedded.model_id,
                    kind="embedding",
                    latency_ms=embedded.latency_ms * share,
                    prompt_tokens=round(embedded.tokens * share),
                )
                produced = await self._memories(plan, vectors, embedded.model_id, usage, earlier, sink)
                earlier += [e for e in produced if isinstance(e, MemoryAdded)]
                earlier = earlier[-self.settings.batch_view :]
            await self._report(plan.event, "done", len(plan.drafts), len(plan.drafts), sink)
            produced += [plan.nothing] if plan.nothing is not None else []
            out.append([*produced, *plan.failures])
        logger.info(
            "derived events=%d phase=%s memories=%d out=%d ms=%.0f",
            len(events),
            phase,
            len(drafts),
            sum(len(o) for o in out),
            (time.perf_counter() - started) * 1000,
        )
        return out

    async def _plan(self, event: ConversationRecorded, phase: Phase, after_fast: bool | None) -> Plan:
        """Fetch, then draft the memories of one event (fine mode: LLM or rules); no embedding yet."""
        items = await self._read(event)
        fs = self.settings.fast
        readable = await asyncio.to_thread(plan_fast, items, fs)
        nothing = None if readable else self._nothing_read(event, items)
        if phase == "fast":
            return Plan(event, readable, {}, [], nothing)
        windows = await asyncio.to_thread(
            plan_windows, items, window_tokens=fs.window_tokens, overlap=fs.window_overlap
        )
        after = phase == "both" or (after_fast if after_fast is not None else event.async_mode == "async")
        fast = await asyncio.to_thread(
            plan_fast, items, fs, tool_extractor="fast" if phase == "both" else "rules"
        )
        fine, failures, empty = await self._fine(event, items, windows)
        fast = [replace(d, usage=d.usage + empty[d.group]) if d.group in empty else d for d in fast]
        drafts, retire = await asyncio.to_thread(merge_phases, fast, fine, after_fast=after)
        if phase == "both":
            drafts = fast + drafts
        elif self.settings.keep_windows:  # the windows stay, searched beside what was extracted from them
            retire = {}
            drafts = drafts if after else fast + [d for d in drafts if d not in fast]
        return Plan(event, drafts, retire, failures, nothing)

    async def _embed(self, plans: Sequence[Plan], sink: ProgressSink | None) -> Embeddings:
        """Every draft text of the plans embedded, ``slice_size`` texts per embedder call (a query waits for
        one slice at most, and each add's progress is reported per slice); checks the count."""
        drafts: list[MemoryDraft] = [d for plan in plans for d in plan.drafts]
        if not drafts:
            return Embeddings([], self.embedder.model_id, self.embedder.dimension)
        texts = [times_in_words(d.memory) for d in drafts]  # times as questions name them
        step = max(1, self.settings.slice_size)
        parts: list[Embeddings] = []
        for lo in range(0, len(texts), step):
            await self._embedding_progress(plans, lo, min(len(texts), lo + step), sink)
            parts.append(await self.embedder.embed(texts[lo : lo + step], kind="passage"))
        vectors = [v for part in parts for v in part.vectors]
        await self._embedding_progress(plans, len(texts), len(texts), sink)
        if len(vectors) != len(drafts):
            raise ModelOutputInvalid(f"embedder returned {len(vectors)} vectors for {len(drafts)} texts")
        if len(parts) == 1:
            return parts[0]
        return Embeddings(
            vectors,
            parts[0].model_id,
            parts[0].dimension,
            latency_ms=sum(p.latency_ms for p in parts),
            tokens=sum(p.tokens for p in parts),
        )

    async def _embedding_progress(
        self, plans: Sequence[Plan], lo: int, hi: int, sink: ProgressSink | None
    ) -> None:
        """Report the adds whose drafts lie in texts [lo, hi) of the batch (or just before): done = their
        drafts embedded before ``lo``."""
        start = 0
        for plan in plans:
            n = len(plan.drafts)
            if n and start <= hi and start + n >= lo:
                await self._report(plan.event, "embedding", min(n, max(0, lo - start)), n, sink)
            start += n

    async def _read(self, event: ConversationRecorded) -> tuple[Item, ...]:
        """Read the messages, fetch their references under the event's origin, parse files in the sandbox."""
        read: ReadResult = await asyncio.to_thread(
            read_messages, event.messages, recorded_at=event.occurred_at.isoformat()
        )
        requests = [r for r in read.fetches if r.purpose == "file" or self.settings.fetch_images]
        gate = asyncio.Semaphore(self.settings.fetch_concurrency)

        async def one(
            ref: str, purpose: Literal["file", "image"]
        ) -> tuple[bytes, str | None] | BaseException:
            if self.fetcher is None:
                return FetchFailed(f"no fetcher is configured to fetch {ref!r}")
            async with gate:
                try:
                    got = await self.fetcher.fetch(ref, purpose=purpose, origin=event.origin)
                except MemorySystemError as exc:
                    logger.info("fetch failed ref=%s error=%s", ref[:200], exc)
                    return exc
            return got.data, got.content_type

        results = await asyncio.gather(*(one(r.ref, r.purpose) for r in requests))
        items = attach_fetched(read, {r.item_index: res for r, res in zip(requests, results, strict=True)})
        shared = AddParseBudget(self.settings.sandbox.per_add_s, (self.parse_time, event.user_id))
        return tuple(await asyncio.gather(*(self._parse(item, shared) for item in items)))

    async def _parse(self, item: Item, shared: AddParseBudget) -> Item:
        """A fetched file with its parsed document, or marked unparsed with the reason (over budget, unreadable)."""
        if item.kind != "file" or not item.ok or item.data is None:
            return item
        try:
            document = await self.sandbox.parse(item.data, name=item.name, mime=item.mime, shared=shared)
        except OverBudget as exc:
            why = f"over budget: {exc}"
            return replace(
                item, data=None, source=item.source.model_copy(update={"status": "unparsed", "error": why})
            )
        except FetchFailed as exc:
            error = str(exc)
            return replace(
                item, data=None, source=item.source.model_copy(update={"status": "unparsed", "error": error})
            )
        return replace(item, document=document)

    async def _memories(
        self,
        plan: Plan,
        vectors: Sequence[Sequence[float]],
        model_id: str,
        usage: ModelUsage,
        earlier: Sequence[MemoryAdded],
        sink: ProgressSink | None,
    ) -> list[Event]:
        """Build the events of one plan, dedup them against the store and the batch, retire refined ones."""
        event = plan.event
        added = await asyncio.to_thread(
            build_memory_events, event, plan.drafts, vectors, embedding_model=model_id, embed_usage=usage
        )
        views: dict[str, list[tuple[MemoryRecord, float]]] = {m.memory_id: [] for m in added}
        if self.similar is not None:
            k = self.settings.dedup_k
            step = max(1, self.settings.slice_size)
            for lo in range(0, len(added), step):
                if len(added) > step:
                    await self._report(event, "deduplicating", lo, len(added), sink)
                part = added[lo : lo + step]
                found = await self.similar(event.cube_id, [m.embedding for m in part], k)
                views.update({m.memory_id: list(f) for m, f in zip(part, found, strict=True)})
        add_batch_view(views, added, earlier[-self.settings.batch_view :], self.settings.dedup_k)
        result = await asyncio.to_thread(resolve_candidates, event, added, views, self.settings.dedup)
        events: list[Event] = list(result.events)
        events += follows_relations(event, plan.drafts, result.resolved)
        events += entity_relations(event, added, views, result.resolved)
        for fast_key, successor_keys in plan.retire.items():
            ids = [str(derive_id(event.event_id, k)) for k in successor_keys]
            successors = list(dict.fromkeys(result.resolved.get(i, i) for i in ids))
            events.append(
                MemoryRetired(
                    **derived_header(event, f"{fast_key}:refined"),
                    memory_id=str(derive_id(event.event_id, fast_key)),
                    cube_id=event.cube_id,
                    reason="refined",
                    successor_ids=successors,
                )
            )
        return events

    def _nothing_read(self, event: ConversationRecorded, items: Sequence[Item]) -> DerivationFailed:
        reasons = (
            "; ".join(dict.fromkeys(i.source.error or i.text for i in items if not i.ok)) or "no messages"
        )
        why = f"no readable content in the conversation: {reasons}"[:2000]
        return _failed(event, "read", "read", why, "none", [])
