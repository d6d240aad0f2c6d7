"""Fast mode (pure): message windows, file chunks, tool memories and placeholders -> memory drafts -> events.

Drafts are planned first; the shell embeds every draft text of one add in one call and hands the
vectors back to :func:`build_memory_events`, which makes the ``MemoryAdded`` events. Nothing here
calls a model.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from processors.chunking import Window, chunk_text, count_tokens, plan_windows, truncate_tokens
from processors.documents import parse_document
from processors.reader import EXCERPT_CHARS, Item
from processors.timeparse import parse_chat_time, relative_spans
from schemas.errors import FetchFailed
from schemas.events import (
    ConversationRecorded,
    JsonDict,
    MemoryAdded,
    MemoryType,
    ModelUsage,
    RelationAdded,
    SourceRef,
    derive_id,
    derived_header,
)

__all__ = [
    "FastSettings",
    "MemoryDraft",
    "build_memory_events",
    "follows_relations",
    "memory_parts",
    "file_drafts",
    "placeholder_drafts",
    "plan_fast",
    "short_title",
    "tool_drafts",
    "window_times",
]

logger = logging.getLogger(__name__)

_ERROR_MARKERS = re.compile(
    r"\b(error|exception|traceback|failed|failure|not found|denied|timed? ?out)\b", re.I
)


@dataclass(frozen=True, slots=True)
class FastSettings:
    """Window and chunk sizes, in tokens of the simple tokenizer (see processors.chunking)."""

    window_tokens: int = 160
    window_overlap: int = 0
    """Messages shared by adjacent windows. 0: every turn is embedded once (1 re-embedded a third more
    tokens per LoCoMo turn, 69 vs 46, for a lower recall@1000w: 0.877 vs 0.884 on the dev conversations)."""
    chunk_tokens: int = 256
    chunk_overlap: int = 32
    max_file_chunks: int = 64
    max_memory_tokens: int = 400
    """Longest memory text; longer window or chunk texts are cut (e5 reads at most 512 tokens)."""


@dataclass(frozen=True, slots=True)
class MemoryDraft:
    """A memory before embedding. ``key`` names it within its event (its id is derive_id(event, key)).

    ``group`` marks a fast draft a fine extraction may refine ("window:0", "tool_trajectory");
    ``refines`` names the group a fine draft replaces.
    """

    key: str
    memory: str
    memory_type: MemoryType
    title: str
    sources: tuple[SourceRef, ...]
    extractor: str
    tags: tuple[str, ...] = ()
    background: str = ""
    metadata: JsonDict = field(default_factory=dict)
    group: str | None = None
    refines: str | None = None
    confidence: float = 1.0
    valid_from: datetime | None = None
    usage: tuple[ModelUsage, ...] = ()


def short_title(text: str, *, words: int = 8) -> str:
    """A short key for a memory: the first sentence's first words, without markers or times."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", text.strip())
    text = re.sub(r"^\w+( \([^)]*\))?: ", "", text)
    first = re.split(r"(?<=[.!?。！？])\s+|\n", text, maxsplit=1)[0].strip()
    tokens = first.split()
    title = " ".join(tokens[:words]).rstrip(",;:")
    return title if len(tokens) <= words else title + "…"


def plan_fast(
    items: Sequence[Item], settings: FastSettings, *, tool_extractor: str = "fast"
) -> list[MemoryDraft]:
    """Fast drafts of a conversation: windows, then file chunks, tool memories and placeholders.

    Keys are ``fast:<n>`` in this order, so the same items always yield the same memory ids. Skipped
    parts that belong to no window are carried in the sources of the first draft. ``tool_extractor``
    labels the tool memories ("rules" when they stand in a fine-mode add: they need no LLM).
    """
    drafts: list[tuple[str, MemoryDraft]] = []
    windows = plan_windows(items, window_tokens=settings.window_tokens, overlap=settings.window_overlap)
    for window in windows:
        for part in _window_parts(window, settings):
            drafts.append(("window", part))
    drafts += [("doc", d) for d in file_drafts(items, settings, extractor="fast")]
    drafts += [("doc", d) for d in tool_drafts(items, extractor=tool_extractor)]
    drafts += [("doc", d) for d in placeholder_drafts(items, extractor="fast")]
    out = [replace(d, key=f"fast:{n}") for n, (_, d) in enumerate(drafts)]
    if not windows and out:
        stray = tuple(
            i.source for i in items if i.kind in ("skipped", "audio") or (i.kind == "image" and i.ok)
        )
        out[0] = replace(out[0], sources=out[0].sources + stray)
    return out


def memory_parts(text: str, settings: FastSettings) -> list[str]:
    """``text`` whole, or in overlapping parts of at most ``max_memory_tokens`` when longer: none of it cut off."""
    if count_tokens(text) <= settings.max_memory_tokens:
        return [text]
    return [c.text for c in chunk_text(text, size=settings.max_memory_tokens, overlap=settings.chunk_overlap)]


def _window_parts(window: Window, settings: FastSettings) -> list[MemoryDraft]:
    roles = {i.role for i in window.items}
    memory_type: MemoryType = "UserMemory" if roles == {"user"} else "LongTermMemory"
    user_lines = [i.text for i in window.items if i.role == "user" and i.kind == "chat"]
    title = short_title(user_lines[0] if user_lines else window.items[0].text)
    parts = memory_parts(window.text, settings)
    tags = ("mode:fast",) + (("tool",) if any(i.kind != "chat" for i in window.items) else ())
    drafts = []
    for n, part in enumerate(parts):
        meta: JsonDict = {"window": window.index, "messages": sorted({i.message_index for i in window.items})}
        meta.update(window_times(window))
        if len(parts) > 1:
            meta["part"] = n
        drafts.append(
            MemoryDraft(
                key="",
                memory=part,
                memory_type=memory_type,
                title=title,
                sources=window.sources(),
                extractor="fast",
                tags=tags,
                metadata=meta,
                group=f"window:{window.index}",
            )
        )
    return drafts


def window_times(window: Window) -> JsonDict:
    """Absolute times of a window: its session dates and the days its relative expressions mean.

    ``{"dates": ["2023-05-08"], "times": ["2023-05-07"], "time_expressions": ["yesterday"]}``; keys are
    left out when empty. Each message's expressions resolve against that message's own chat time.
    """
    dates: list[str] = []
    times: list[str] = []
    exprs: list[str] = []
    for item in window.items:
        anchor = parse_chat_time(item.anchor_time)
        if anchor is None:
            continue
        dates.append(anchor.isoformat())
        for expr, span in relative_spans(item.text, anchor):
            times.append(span.iso())
            exprs.append(expr.lower())
    out: JsonDict = {}
    if dates:
        out["dates"] = list(dict.fromkeys(dates))
    if times:
        out["times"] = list(dict.fromkeys(times))
        out["time_expressions"] = list(dict.fromkeys(exprs))
    return out


def file_drafts(items: Sequence[Item], settings: FastSettings, *, extractor: str) -> list[MemoryDraft]:
    """Chunks of every fetched file, or a placeholder when the file cannot be parsed."""
    out: list[MemoryDraft] = []
    for item in items:
        if item.kind != "file" or not item.ok:
            continue
        if item.data is None:
            out.append(_placeholder(item, "unfetched", f"file {item.name!r} was not fetched", extractor))
            continue
        try:
            doc = item.document or parse_document(item.data, name=item.name, mime=item.mime)
        except FetchFailed as exc:
            out.append(_placeholder(item, "unparsed", str(exc), extractor))
            continue
        chunks = chunk_text(doc.text, size=settings.chunk_tokens, overlap=settings.chunk_overlap)
        if not chunks:
            out.append(_placeholder(item, "unparsed", f"file {item.name!r} has no text", extractor))
            continue
        kept = chunks[: settings.max_file_chunks]
        for chunk in kept:
            header = f"File {item.name} (part {chunk.index + 1} of {len(kept)}):"
            heading = next((ln.lstrip("# ") for ln in chunk.text.splitlines() if ln.startswith("#")), "")
            meta: JsonDict = {
                "file": item.name,
                "chunk": chunk.index,
                "chunks": len(kept),
                "doc_kind": doc.kind,
            }
            if len(chunks) > len(kept):
                meta["truncated_chunks"] = len(chunks) - len(kept)
            source = item.source.model_copy(update={"content": chunk.text[:EXCERPT_CHARS]})
            out.append(
                MemoryDraft(
                    key="",
                    memory=f"{header}\n{truncate_tokens(chunk.text, settings.max_memory_tokens)}",
                    memory_type="LongTermMemory",
                    title=heading[:80] or item.name,
                    sources=(source,),
                    extractor=extractor,
                    tags=("mode:fast", "file") if extractor == "fast" else ("file",),
                    metadata=meta,
                )
            )
    return out


def placeholder_drafts(items: Sequence[Item], *, extractor: str) -> list[MemoryDraft]:
    """A memory for every file, image or tool schema that could not be fetched or read, saying why."""
    out: list[MemoryDraft] = []
    for item in items:
        if item.kind in ("file", "image", "tool_schema") and not item.ok:
            out.append(
                _placeholder(item, item.source.status, item.source.error or "unknown error", extractor)
            )
    return out


def _placeholder(item: Item, status: str, error: str, extractor: str) -> MemoryDraft:
    what = {"file": "File", "image": "Image", "tool_schema": "Tool schema"}.get(item.kind, "Source")
    where = item.source.url or item.name or ("in <tool_schema>" if item.kind == "tool_schema" else "")
    verb = "fetched" if status == "unfetched" else "read"
    subject = f"{what} {where}".strip()
    text = f"{subject} from the {item.role} (message {item.message_index}) could not be {verb}: {error}"
    source = item.source.model_copy(
        update={"status": status if status != "ok" else "unparsed", "error": error}
    )
    return MemoryDraft(
        key="",
        memory=text,
        memory_type="ToolSchemaMemory" if item.kind == "tool_schema" else "LongTermMemory",
        title=f"{what} not {verb}: {item.name or where or item.message_index}"[:80],
        sources=(source,),
        extractor=extractor,
        tags=("placeholder", status),
        metadata={"placeholder": True, "type": "source_error", "status": status, "error": error},
    )


def tool_drafts(items: Sequence[Item], *, extractor: str) -> list[MemoryDraft]:
    """One ToolSchemaMemory per declared tool and one ToolTrajectoryMemory for the calls and results."""
    out: list[MemoryDraft] = []
    for item in items:
        if item.kind == "tool_schema" and item.ok:
            desc = str(item.payload.get("description") or "").strip()
            text = (
                f"Tool {item.name}: {desc}\nSchema: {item.text}"
                if desc
                else f"Tool {item.name}\nSchema: {item.text}"
            )
            out.append(
                MemoryDraft(
                    key="",
                    memory=text,
                    memory_type="ToolSchemaMemory",
                    title=item.name,
                    sources=(item.source,),
                    extractor=extractor,
                    tags=("tool", "tool_schema"),
                    metadata={"tool_name": item.name, "schema": dict(item.payload), "extractor": extractor},
                )
            )
    trajectory = _trajectory(items, extractor)
    if trajectory is not None:
        out.append(trajectory)
    return out


def _trajectory(items: Sequence[Item], extractor: str) -> MemoryDraft | None:
    calls = [i for i in items if i.kind == "tool_call"]
    results = [i for i in items if i.kind == "tool_result"]
    if not calls and not results:
        return None
    by_id: dict[str, Item] = {r.source.tool_call_id: r for r in results if r.source.tool_call_id}
    used: set[int] = set()
    records: list[JsonDict] = []
    lines: list[str] = []
    task = next((i.text for i in items if i.kind == "chat" and i.role == "user"), "")
    if task:
        lines.append(f"Task: {task[:EXCERPT_CHARS]}")
    for call in calls:
        result = by_id.get(call.source.tool_call_id or "")
        if result is None:
            result = next(
                (r for r in results if id(r) not in used and r.message_index > call.message_index), None
            )
        if result is not None:
            used.add(id(result))
        ok = result is not None and not _looks_failed(result.text)
        status = "no result recorded" if result is None else ("succeeded" if ok else "failed")
        outcome = f": {result.text[:EXCERPT_CHARS]}" if result is not None else ""
        lines.append(f"Called {call.text[len('[tool_call ') : -1]} -> {status}{outcome}")
        records.append(
            {
                "tool_name": call.name,
                "tool_call_id": call.source.tool_call_id,
                "arguments": call.payload.get("arguments"),
                "success": ok,
                "result": result.text[:EXCERPT_CHARS] if result is not None else None,
            }
        )
    for result in results:
        if id(result) not in used:
            failed = _looks_failed(result.text)
            lines.append(
                f"Result of {result.name or 'an unknown call'} -> {'failed' if failed else 'returned'}: "
                f"{result.text[:EXCERPT_CHARS]}"
            )
            records.append(
                {
                    "tool_name": result.name or None,
                    "tool_call_id": result.source.tool_call_id,
                    "arguments": None,
                    "success": not failed,
                    "result": result.text[:EXCERPT_CHARS],
                }
            )
    names = sorted({str(r["tool_name"]) for r in records if r["tool_name"]})
    success = all(bool(r["success"]) for r in records)
    experience = _experience(records)
    lines.append(f"Experience: {experience}")
    sources = tuple(i.source for i in (*calls, *results))
    return MemoryDraft(
        key="",
        memory="\n".join(lines),
        memory_type="ToolTrajectoryMemory",
        title=f"Tool use: {', '.join(names) or 'unknown tool'}",
        sources=sources,
        extractor=extractor,
        tags=("tool", "tool_trajectory"),
        metadata={
            "tools": names,
            "calls": records,
            "success": success,
            "experience": experience,
            "extractor": extractor,
        },
        group="tool_trajectory",
    )


def _experience(records: Sequence[JsonDict]) -> str:
    """What the calls teach, per tool: which worked, which worked after failing, which failed and why."""
    outcomes: dict[str, list[JsonDict]] = {}
    for record in records:
        outcomes.setdefault(str(record["tool_name"] or "The tool"), []).append(record)
    worked = [n for n, rs in outcomes.items() if all(r["success"] for r in rs)]
    recovered = [n for n, rs in outcomes.items() if rs[-1]["success"] and not all(r["success"] for r in rs)]
    failed = [n for n, rs in outcomes.items() if not rs[-1]["success"]]
    parts: list[str] = []
    for name in sorted(failed):
        reason = next((str(r["result"]) for r in reversed(outcomes[name]) if r["result"]), "")
        parts.append(f"{name} did not work for this task" + (f" ({reason[:120]})" if reason else ""))
    for name in sorted(recovered):
        tries = sum(1 for r in outcomes[name] if not r["success"])
        parts.append(f"{name} worked after {tries} failed call{'s' if tries > 1 else ''}")
    if worked:
        parts.append(f"{', '.join(sorted(worked))} worked" + ("" if failed or recovered else " for this task"))
    advice = " Check the failed calls before reusing them." if failed else ""
    return "; ".join(parts) + "." + advice


def _looks_failed(text: str) -> bool:
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            parsed = json.loads(stripped)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            return bool(parsed.get("error")) or parsed.get("success") is False or parsed.get("ok") is False
    return bool(_ERROR_MARKERS.search(stripped[:200]))


def build_memory_events(
    event: ConversationRecorded,
    drafts: Sequence[MemoryDraft],
    vectors: Sequence[Sequence[float]],
    *,
    embedding_model: str,
    embed_usage: ModelUsage | None = None,
) -> list[MemoryAdded]:
    """``MemoryAdded`` events for ``drafts`` with their vectors (same order), ids and times from ``event``.

    The embedding call's usage is shared out over the memories by text length, so the sums over the
    events equal the call. Raises ValueError when the vector count differs from the draft count.
    """
    if len(vectors) != len(drafts):
        raise ValueError(f"got {len(vectors)} vectors for {len(drafts)} drafts")
    shares = _shares(embed_usage, [len(d.memory) for d in drafts])
    out: list[MemoryAdded] = []
    for draft, vector, share in zip(drafts, vectors, shares, strict=True):
        memory_id = str(derive_id(event.event_id, draft.key))
        tags = list(dict.fromkeys([*draft.tags, *event.custom_tags]))
        out.append(
            MemoryAdded(
                **derived_header(event, f"{draft.key}:added"),
                memory_id=memory_id,
                cube_id=event.cube_id,
                user_id=event.user_id,
                session_id=event.session_id,
                memory=draft.memory,
                memory_type=draft.memory_type,
                title=draft.title,
                tags=tags,
                background=draft.background,
                sources=list(draft.sources),
                metadata=dict(draft.metadata),
                embedding=[float(x) for x in vector],
                embedding_model=embedding_model,
                extractor=draft.extractor,
                origin_event_id=event.event_id,
                task_id=event.task_id,
                valid_from=draft.valid_from,
                confidence=draft.confidence,
                usage=[*draft.usage, *([share] if share is not None else [])],
            )
        )
    return out


def _shares(usage: ModelUsage | None, weights: Sequence[int]) -> list[ModelUsage | None]:
    if usage is None or not weights:
        return [None] * len(weights)
    total = sum(weights) or 1
    out: list[ModelUsage | None] = []
    tokens_left = usage.prompt_tokens
    for n, weight in enumerate(weights):
        last = n == len(weights) - 1
        tokens = tokens_left if last else usage.prompt_tokens * weight // total
        tokens_left -= tokens
        out.append(
            usage.model_copy(
                update={"latency_ms": usage.latency_ms * weight / total, "prompt_tokens": tokens}
            )
        )
    return out


def follows_relations(
    event: ConversationRecorded, drafts: Sequence[MemoryDraft], resolved: dict[str, str]
) -> list[RelationAdded]:
    """FOLLOWS edges between consecutive windows of one add: later window -> earlier window.

    ``resolved`` maps each draft's memory id to the memory that stands for it after dedup (itself, an
    earlier draft of the add, or an existing memory). Search expands its best hits over these edges,
    so a question whose evidence spans two windows finds the neighbour too.
    """
    ids = [str(derive_id(event.event_id, d.key)) for d in drafts if (d.group or "").startswith("window:")]
    chain = list(dict.fromkeys(resolved.get(i, i) for i in ids))
    out = []
    for earlier, later in zip(chain, chain[1:], strict=False):
        out.append(
            RelationAdded(
                **derived_header(event, f"follows:{later}:{earlier}"),
                relation_id=str(derive_id(event.event_id, f"follows:{later}:{earlier}:relation")),
                cube_id=event.cube_id,
                source_id=later,
                target_id=earlier,
                relation="FOLLOWS",
            )
        )
    return out
