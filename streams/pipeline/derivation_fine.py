"""Fine extraction of the derivation step: conversation windows through the LLM (or the rule-based
extractor) within the extraction budget, and image descriptions by a vision model."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from memory_store.llm.base import ChatModel
from processors.chunking import Window, count_tokens
from processors.extraction import (
    drafts_from_output,
    extraction_messages,
    image_draft,
    reference_time,
    retry_messages,
    vision_messages,
)
from processors.fast import MemoryDraft
from processors.reader import Item
from processors.rules import extract_rules
from schemas.errors import ModelError, ModelOutputInvalid
from schemas.events import ConversationRecorded, DerivationFailed, ModelUsage
from streams.pipeline.derivation_types import DeriverSettings
from streams.pipeline.derivation_types import failed as _failed

__all__ = ["FineExtraction"]

logger = logging.getLogger(__name__)


class FineExtraction:
    """The fine-mode steps of :class:`streams.pipeline.derivation.Deriver` (a mixin over its settings and model)."""

    settings: DeriverSettings
    chat_model: ChatModel | None

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
