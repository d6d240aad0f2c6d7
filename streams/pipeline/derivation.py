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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from memory_store.embedding.base import Embedder, Embeddings
from memory_store.fetch import Fetcher
from memory_store.llm.base import ChatModel
from processors.chunking import Window, count_tokens, plan_windows
from processors.dedup import DedupSettings, resolve_candidates
from processors.documents import DocumentBudget
from processors.entities import entity_relations
from processors.extraction import (
    drafts_from_output,
    extraction_messages,
    image_draft,
    merge_phases,
    reference_time,
    retry_messages,
    vision_messages,
)
from processors.fast import FastSettings, MemoryDraft, build_memory_events, follows_relations, plan_fast
from processors.reader import Item, ReadResult, attach_fetched, read_messages
from processors.rules import extract_rules
from schemas.errors import (
    DimensionMismatch,
    FetchFailed,
    MemorySystemError,
    ModelError,
    ModelOutputInvalid,
    OverBudget,
)
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
from streams.pipeline.batch_view import add_batch_view
from streams.pipeline.sandbox import DocumentSandbox, SandboxLimits
from streams.settings import DerivationSettings

__all__ = ["Deriver", "DeriverSettings", "Phase", "Progress", "SimilarFn"]

logger = logging.getLogger(__name__)

Phase = Literal["fast", "fine", "both"]
SimilarFn = Callable[[str, Sequence[float], int], Awaitable[list[tuple[MemoryRecord, float]]]]
"""``async (cube_id, vector, k) -> [(record, cosine similarity)]``: the dedup view from the vector store."""


@dataclass(frozen=True, slots=True)
class DeriverSettings:
    """Knobs of derivation; sizes are in tokens of the simple tokenizer (processors.chunking)."""

    fast: FastSettings = FastSettings()
    dedup: DedupSettings = DedupSettings()
    dedup_k: int = 5
    llm_retries: int = 2
    llm_max_tokens: int = 1024
    llm_concurrency: int = 4
    fetch_concurrency: int = 4
    fetch_images: bool = True
    describe_images: bool = True
    slice_size: int = 256
    """Memories embedded and looked up per step of a large add (progress is reported per step)."""
    batch_view: int = 256
    """Memories of earlier events of the same batch compared with each candidate (the most recent ones)."""
    sandbox: SandboxLimits = SandboxLimits()
    documents: DocumentBudget = DocumentBudget()
    fine_window_tokens: int = 4096
    """Longest window sent to extraction (rules or LLM); a longer one (one huge message) stays fast chunks."""
    fine_total_tokens: int = 100_000
    """Most tokens of one add sent to extraction; windows past it stay fast chunks (a 1 MB add: minutes)."""

    @classmethod
    def from_config(cls, config: DerivationSettings) -> DeriverSettings:
        """Settings from the ``derivation`` section of the app config."""
        return cls(
            fast=FastSettings(window_tokens=config.window_tokens, window_overlap=config.window_overlap),
            sandbox=SandboxLimits(
                memory_bytes=config.parse_memory_mb * 1024 * 1024,
                cpu_s=max(1, int(config.parse_timeout_s)),
                wall_s=config.parse_timeout_s,
            ),
            documents=DocumentBudget(max_chars=config.parse_max_chars),
        )


class Deriver:
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
        self._progress: dict[str, Progress] = {}
        self.on_progress = on_progress
        """Called with (task id, progress) at every step of every add, on the event loop."""

    def progress_of(self, task_id: str) -> Progress | None:
        """Where the derivation of ``task_id`` stands while it runs (None when it is not running here)."""
        return self._progress.get(task_id)

    def _report(self, events: Sequence[ConversationRecorded], step: str, done: int, total: int) -> None:
        for event in events:
            progress = self._progress[event.task_id] = Progress(step, done, total)
            if self.on_progress is not None:
                self.on_progress(event.task_id, progress)
        if total > self.settings.slice_size:
            logger.info("derivation progress tasks=%s step=%s %d/%d", [e.task_id for e in events][:3], step,
                        done, total)  # fmt: skip

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
        self, events: Sequence[ConversationRecorded], *, phase: Phase = "fast", after_fast: bool | None = None
    ) -> list[list[Event]]:
        """``derive`` for a batch of events (a runner's poll): the events to append for each, in order.

        Every memory text of the whole batch goes to the embedder in one call, so small adds still
        embed at full batch speed; a memory that duplicates one from an earlier event of the batch is
        merged as if that one were already stored.
        """
        try:
            return await self._derive_many(events, phase, after_fast)
        finally:
            for event in events:
                self._progress.pop(event.task_id, None)

    async def _derive_many(
        self, events: Sequence[ConversationRecorded], phase: Phase, after_fast: bool | None
    ) -> list[list[Event]]:
        started = time.perf_counter()
        self._report(events, "reading", 0, 0)
        plans = await asyncio.gather(*(self._plan(e, phase, after_fast) for e in events))
        drafts = [d for plan in plans for d in plan.drafts]
        embedded = await self._embed(drafts, events)
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
                produced = await self._memories(plan, vectors, embedded.model_id, usage, earlier)
                earlier += [e for e in produced if isinstance(e, MemoryAdded)]
                earlier = earlier[-self.settings.batch_view :]
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

    async def _plan(self, event: ConversationRecorded, phase: Phase, after_fast: bool | None) -> _Plan:
        """Fetch, then draft the memories of one event (fine mode: LLM or rules); no embedding yet."""
        items = await self._read(event)
        fs = self.settings.fast
        readable = await asyncio.to_thread(plan_fast, items, fs)
        nothing = None if readable else self._nothing_read(event, items)
        if phase == "fast":
            return _Plan(event, readable, {}, [], nothing)
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
        return _Plan(event, drafts, retire, failures, nothing)

    async def _embed(
        self, drafts: Sequence[MemoryDraft], events: Sequence[ConversationRecorded]
    ) -> Embeddings:
        """Every draft text embedded, ``slice_size`` texts per embedder call (a query waits for one slice at
        most, and progress is reported per slice); checks the count."""
        if not drafts:
            return Embeddings([], self.embedder.model_id, self.embedder.dimension)
        texts = [d.memory for d in drafts]
        step = max(1, self.settings.slice_size)
        parts: list[Embeddings] = []
        for lo in range(0, len(texts), step):
            self._report(events, "embedding", lo, len(texts))
            parts.append(await self.embedder.embed(texts[lo : lo + step], kind="passage"))
        vectors = [v for part in parts for v in part.vectors]
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

    async def _read(self, event: ConversationRecorded) -> tuple[Item, ...]:
        """Read the messages, fetch their references under the event's origin, parse files in the sandbox."""
        read: ReadResult = await asyncio.to_thread(read_messages, event.messages)
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
        return tuple(await asyncio.gather(*(self._parse(item) for item in items)))

    async def _parse(self, item: Item) -> Item:
        """A fetched file with its parsed document, or marked unparsed with the reason (over budget, unreadable)."""
        if item.kind != "file" or not item.ok or item.data is None:
            return item
        try:
            document = await self.sandbox.parse(item.data, name=item.name, mime=item.mime)
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

    async def _fine(
        self, event: ConversationRecorded, items: Sequence[Item], windows: Sequence[Window]
    ) -> tuple[list[MemoryDraft], list[DerivationFailed], dict[str, tuple[ModelUsage, ...]]]:
        """Fine drafts, failures, and LLM usage of windows whose extraction found nothing (by group).

        Windows over the extraction budget (one too long, or past the add's total) are not extracted:
        their fast chunks stand, and one DerivationFailed says so.
        """
        windows, limited = await asyncio.to_thread(self._extractable, event, windows)
        if self.chat_model is None:
            return await asyncio.to_thread(extract_rules, windows, self.settings.fast), limited, {}
        gate = asyncio.Semaphore(self.settings.llm_concurrency)

        async def guarded(window: Window) -> tuple[list[MemoryDraft], DerivationFailed | None, ModelUsage]:
            async with gate:
                return await self._extract(event, window)

        results = await asyncio.gather(*(guarded(w) for w in windows))
        drafts: list[MemoryDraft] = []
        failures: list[DerivationFailed] = list(limited)
        empty: dict[str, tuple[ModelUsage, ...]] = {}
        for window, (found, failure, usage) in zip(windows, results, strict=True):
            drafts += found
            if failure is not None:
                failures.append(failure)
            elif not found:
                empty[f"window:{window.index}"] = (usage,)
        if self.chat_model.supports_vision and self.settings.describe_images:
            images = [i for i in items if i.kind == "image" and i.ok and (i.data is not None or i.source.url)]
            described = await asyncio.gather(
                *(self._describe(event, image, n) for n, image in enumerate(images))
            )
            for draft, failure in described:
                drafts += [draft] if draft is not None else []
                failures += [failure] if failure is not None else []
        return drafts, failures, empty

    def _extractable(
        self, event: ConversationRecorded, windows: Sequence[Window]
    ) -> tuple[list[Window], list[DerivationFailed]]:
        """The windows within the extraction budget, and a failure naming what was left as fast chunks."""
        per_window, total = self.settings.fine_window_tokens, self.settings.fine_total_tokens
        chosen: list[Window] = []
        skipped: list[tuple[int, int]] = []
        used = 0
        for window in windows:
            size = count_tokens(window.text)
            if size > per_window or used + size > total:
                skipped.append((window.index, size))
                continue
            used += size
            chosen.append(window)
        if not skipped:
            return chosen, []
        why = (
            f"{len(skipped)} of {len(windows)} conversation windows ({sum(s for _, s in skipped)} tokens) were "
            f"not extracted: over the extraction budget of {per_window} tokens per window and {total} per add; "
            "they are kept as fast-mode chunks"
        )
        logger.info("extraction limited task=%s windows=%d", event.task_id, len(skipped))
        return chosen, [_failed(event, "budget", "extract", why, "fast", [])]

    async def _extract(
        self, event: ConversationRecorded, window: Window
    ) -> tuple[list[MemoryDraft], DerivationFailed | None, ModelUsage]:
        """One window through the LLM with retries; on final failure, a DerivationFailed saying why."""
        assert self.chat_model is not None
        model = self.chat_model
        base = extraction_messages(
            window,
            reference_time=reference_time(window, event.occurred_at.isoformat()),
            user_id=event.user_id,
        )
        messages = base
        usage = ModelUsage(model_id=model.model_id, kind="llm", attempts=0)
        error = ""
        for _ in range(1 + max(0, self.settings.llm_retries)):
            started = time.perf_counter()
            try:
                answer = await model.complete(
                    messages, max_tokens=self.settings.llm_max_tokens, json_mode=True
                )
            except ModelError as exc:
                usage = _add(usage, None, (time.perf_counter() - started) * 1000)
                error = f"{type(exc).__name__}: {exc}"
                logger.warning("llm call failed window=%d error=%s", window.index, error)
                continue
            usage = _add(usage, answer, answer.latency_ms)
            try:
                return (
                    drafts_from_output(answer.text, window, model_id=model.model_id, usage=usage),
                    None,
                    usage,
                )
            except ModelOutputInvalid as exc:
                error = f"ModelOutputInvalid: {exc}"
                logger.warning(
                    "llm output invalid window=%d attempt=%d error=%s", window.index, usage.attempts, exc
                )
                messages = retry_messages(base, answer.text, str(exc))
        why = f"extraction of window {window.index} failed after {usage.attempts} attempts: {error}"
        return [], _failed(event, f"llm:window:{window.index}", "llm", why, "fast", [usage]), usage

    async def _describe(
        self, event: ConversationRecorded, image: Item, index: int
    ) -> tuple[MemoryDraft | None, DerivationFailed | None]:
        assert self.chat_model is not None
        try:
            answer = await self.chat_model.complete(vision_messages(image), max_tokens=300)
        except ModelError as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            if answer.text.strip():
                usage = ModelUsage(
                    model_id=self.chat_model.model_id,
                    kind="vision",
                    latency_ms=answer.latency_ms,
                    prompt_tokens=answer.prompt_tokens,
                    completion_tokens=answer.completion_tokens,
                )
                return image_draft(
                    image, answer.text, model_id=self.chat_model.model_id, usage=usage, index=index
                ), None
            error = "the vision model returned an empty description"
        why = f"image {image.source.url or image.name!r} could not be described: {error}"
        return None, _failed(event, f"vision:{index}", "vision", why, "reference", [])

    async def _memories(
        self,
        plan: _Plan,
        vectors: Sequence[Sequence[float]],
        model_id: str,
        usage: ModelUsage,
        earlier: Sequence[MemoryAdded],
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
                    self._report([event], "deduplicating", lo, len(added))
                part = added[lo : lo + step]
                found = await asyncio.gather(*(self.similar(event.cube_id, m.embedding, k) for m in part))
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


def _add(usage: ModelUsage, answer: object, latency_ms: float) -> ModelUsage:
    prompt = getattr(answer, "prompt_tokens", 0)
    completion = getattr(answer, "completion_tokens", 0)
    return usage.model_copy(
        update={
            "attempts": usage.attempts + 1,
            "latency_ms": usage.latency_ms + latency_ms,
            "prompt_tokens": usage.prompt_tokens + int(prompt),
            "completion_tokens": usage.completion_tokens + int(completion),
        }
    )


@dataclass(frozen=True, slots=True)
class Progress:
    """Where one add's derivation stands: ``step`` ("reading", "embedding", "deduplicating"), done of total."""

    step: str
    done: int
    total: int


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one event will produce, before embedding."""

    event: ConversationRecorded
    drafts: list[MemoryDraft]
    retire: dict[str, list[str]]
    failures: list[DerivationFailed]
    nothing: DerivationFailed | None


def _failed(
    event: ConversationRecorded, key: str, stage: str, error: str, fallback: str, usage: list[ModelUsage]
) -> DerivationFailed:
    return DerivationFailed(
        **derived_header(event, f"failed:{key}"),
        cube_id=event.cube_id,
        origin_event_id=event.event_id,
        task_id=event.task_id,
        stage=stage,
        error=error,
        fallback=fallback,
        usage=usage,
    )
