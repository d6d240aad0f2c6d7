"""LLM extraction (pure parts): prompts, a tolerant JSON parser, drafts from model output, phase merging.

The shell calls the model (the ``ChatModel`` port in memory_store.llm) with the messages built here
and hands the answer text back; nothing in this module does I/O.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from processors.chunking import Window
from processors.fast import MemoryDraft
from processors.reader import Item
from schemas.errors import ModelOutputInvalid
from schemas.events import JsonDict, MemoryType, ModelUsage

__all__ = [
    "EXTRACTION_SYSTEM",
    "extraction_messages",
    "drafts_from_output",
    "image_draft",
    "merge_phases",
    "parse_json_lenient",
    "retry_messages",
    "split_usage",
    "vision_messages",
]

logger = logging.getLogger(__name__)

EXTRACTION_SYSTEM = """You extract long-term memories from a conversation between a user and an assistant.
Rules:
- Write every memory as a complete sentence in the third person ("The user ...", "The assistant ..."); never "I" or "you".
  When a line names its speaker ("user (Alice): ..."), write the name ("Alice moved to Seattle.") instead of "The user".
- Write memories, preferences and summaries in the language of the conversation: a Chinese conversation gives
  Chinese memories ("用户选了七天酒店。"), an English one English memories; "key" and "topic" may stay in English.
- Resolve relative times ("yesterday", "next week", "last year") into absolute dates using the reference time.
- "key" is a short title naming the attribute or topic, not its value ("travel destination", not "Guangzhou").
- "memory_type" is "UserMemory" for facts about the user, "LongTermMemory" for other facts, events and knowledge.
- Preferences: "explicit" when the user states them, "implicit" when inferred from what the user does or chooses.
- For each tool call in the conversation, write one tool trajectory: the task, whether the call succeeded, and the
  experience learned (what to do or avoid next time).
- Keep only what is worth remembering later; skip greetings and filler. Use empty lists when nothing applies.
Answer with one JSON object and nothing else, in this shape:
{"memories": [{"key": "...", "memory": "...", "memory_type": "UserMemory", "tags": ["..."], "background": "..."}],
 "preferences": [{"preference": "...", "preference_type": "explicit", "topic": "...", "context_summary": "...",
                  "reasoning": "..."}],
 "tool_trajectories": [{"tool_name": "...", "task": "...", "success": true, "experience": "...", "memory": "..."}],
 "summary": "..."}"""

_VISION_SYSTEM = (
    "Describe the image for a memory system in at most five sentences: what it shows, any visible text, "
    "numbers and names. Answer with the description only."
)
_FACT_TYPES: set[str] = {"UserMemory", "LongTermMemory", "WorkingMemory"}


def parse_json_lenient(text: str) -> Any:
    """JSON from a model answer: code fences, prose around it, single quotes, Python literals, trailing
    commas and truncation are tolerated (truncated JSON keeps every complete element). Raises
    ModelOutputInvalid when no JSON value can be recovered.
    """
    body = re.sub(r"<think>.*?(</think>|$)", "", text, flags=re.S | re.I).strip()
    fence = re.search(r"```[a-zA-Z]*\s*(.*?)(?:```|$)", body, re.S)
    if fence and fence.group(1).strip()[:1] in "{[":
        body = fence.group(1).strip()
    starts = [i for i in (body.find("{"), body.find("[")) if i >= 0]
    if not starts:
        raise ModelOutputInvalid(f"model answer holds no JSON: {text[:120]!r}")
    body = body[min(starts) :]
    try:
        return json.JSONDecoder().raw_decode(body)[0]
    except json.JSONDecodeError:
        pass
    normalized, cuts, stack, in_string, closed_at = _normalize(body)
    if closed_at is not None:
        try:
            return json.loads(normalized[:closed_at])
        except json.JSONDecodeError:
            pass
    # A value cut inside a string is partial: prefer dropping it over keeping half a sentence.
    candidates = [] if in_string else [normalized + _closers(stack)]
    candidates += [normalized[:pos] + _closers(snap) for pos, snap in reversed(cuts[-64:])]
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    raise ModelOutputInvalid(f"model answer is not valid JSON and could not be repaired: {text[:120]!r}")


def _closers(stack: Sequence[str]) -> str:
    return "".join("}" if c == "{" else "]" for c in reversed(stack))


def _normalize(body: str) -> tuple[str, list[tuple[int, tuple[str, ...]]], list[str], bool, int | None]:
    """Rewrite JSON-ish text as JSON: single-quoted strings, Python literals, trailing commas.

    Returns the text, cut points (position, open brackets) where the text can be cut and closed, the
    open brackets at the end, whether a string is left open, and where the top-level value closed.
    """
    out: list[str] = []  # one character per entry, so len(out) is a position in the result
    stack: list[str] = []
    cuts: list[tuple[int, tuple[str, ...]]] = []
    quote = ""
    i = 0
    literals = {"True": "true", "False": "false", "None": "null"}
    while i < len(body):
        ch = body[i]
        if quote:
            if ch == "\\" and i + 1 < len(body):
                out.extend("'" if body[i + 1] == "'" else ch + body[i + 1])
                i += 2
                continue
            if ch == quote:
                out.append('"')
                quote = ""
            else:
                out.extend('\\"' if ch == '"' else ("\\n" if ch == "\n" else ch))
            i += 1
            continue
        if ch in "\"'":
            quote = ch
            out.append('"')
        elif ch in "{[":
            stack.append(ch)
            out.append(ch)
            cuts.append((len(out), tuple(stack)))
        elif ch in "}]":
            while out and (out[-1].isspace() or out[-1] == ","):
                out.pop()
            if stack:
                stack.pop()
            out.append(ch)
            if not stack:
                return "".join(out), cuts, stack, False, len(out)
        elif ch == ",":
            cuts.append((len(out), tuple(stack)))
            out.append(ch)
        elif ch.isalpha():
            word = re.match(r"[A-Za-z_]+", body[i:])
            token = word.group(0) if word else ch
            out.extend(literals.get(token, token))
            i += len(token)
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out), cuts, stack, bool(quote), None


def extraction_messages(window: Window, *, reference_time: str, user_id: str) -> list[JsonDict]:
    """Chat messages asking the model to extract memories from ``window``."""
    prompt = (
        f"Reference time: {reference_time}\nUser id: {user_id}\n"
        f"Conversation (one message per line, '[time] role: text'):\n{window.text}\n\nAnswer with the JSON object."
    )
    return [{"role": "system", "content": EXTRACTION_SYSTEM}, {"role": "user", "content": prompt}]


def retry_messages(messages: Sequence[JsonDict], answer: str, error: str) -> list[JsonDict]:
    """The same request again, with the invalid answer and the reason it was rejected."""
    return [
        *messages,
        {"role": "assistant", "content": answer[:4000]},
        {
            "role": "user",
            "content": f"That answer was not valid: {error}. Answer again with the JSON object only.",
        },
    ]


def reference_time(window: Window, fallback: str) -> str:
    """The time of the window's last message that has one (its chat time, else when its add was recorded),
    else ``fallback``."""
    times = [t for i in window.items if (t := i.anchor_time)]
    return times[-1] if times else fallback


def split_usage(usage: ModelUsage | None, n: int) -> list[tuple[ModelUsage, ...]]:
    """``usage`` shared evenly over ``n`` memories (tokens and latency), so the sums equal the call."""
    if usage is None or n <= 0:
        return [() for _ in range(n)]
    out: list[tuple[ModelUsage, ...]] = []
    for k in range(n):
        prompt = usage.prompt_tokens // n + (1 if k < usage.prompt_tokens % n else 0)
        completion = usage.completion_tokens // n + (1 if k < usage.completion_tokens % n else 0)
        share = usage.model_copy(
            update={
                "latency_ms": usage.latency_ms / n,
                "prompt_tokens": prompt,
                "completion_tokens": completion,
            }
        )
        out.append((share,))
    return out


def drafts_from_output(
    text: str, window: Window, *, model_id: str, usage: ModelUsage | None = None
) -> list[MemoryDraft]:
    """Drafts from the model's answer for ``window``. Raises ModelOutputInvalid when it cannot be used.

    Items without text are skipped; unknown memory types become LongTermMemory; preferences default to
    explicit. An empty extraction (all lists empty) returns [] and is not an error.
    """
    data = parse_json_lenient(text)
    if isinstance(data, list):
        data = {"memories": data}
    if not isinstance(data, Mapping):
        raise ModelOutputInvalid(f"model answer is JSON {type(data).__name__}, expected an object")
    known = ("memories", "preferences", "tool_trajectories")
    if not any(k in data for k in known):
        if "memory" in data or "value" in data:
            data = {"memories": [data]}
        else:
            raise ModelOutputInvalid(f"model answer has none of {known}: keys {sorted(data)[:8]!r}")
    extractor = f"llm:{model_id}"
    base: JsonDict = {"extractor": "llm", "model": model_id}
    sources = window.sources()
    refines = f"window:{window.index}"
    drafts: list[MemoryDraft] = []
    for entry in _entries(data.get("memories")):
        memory = _text(entry.get("memory")) or _text(entry.get("value"))
        if not memory:
            continue
        mtype = str(entry.get("memory_type") or "LongTermMemory")
        memory_type: MemoryType = mtype if mtype in _FACT_TYPES else "LongTermMemory"  # type: ignore[assignment]
        drafts.append(
            MemoryDraft(
                key="",
                memory=memory,
                memory_type=memory_type,
                title=_text(entry.get("key"))[:120] or memory[:60],
                sources=sources,
                extractor=extractor,
                tags=("mode:fine", *_tags(entry.get("tags"))),
                background=_text(entry.get("background")),
                metadata=dict(base),
                refines=refines,
                confidence=_confidence(entry.get("confidence")),
            )
        )
    for entry in _entries(data.get("preferences")):
        memory = _text(entry.get("preference")) or _text(entry.get("memory"))
        if not memory:
            continue
        kind = "implicit" if str(entry.get("preference_type") or "").lower() == "implicit" else "explicit"
        topic = _text(entry.get("topic"))
        meta = {
            **base,
            "preference": memory,
            "preference_type": kind,
            "topic": topic,
            "context_summary": _text(entry.get("context_summary")),
            "reasoning": _text(entry.get("reasoning")),
        }
        drafts.append(
            MemoryDraft(
                key="",
                memory=memory,
                memory_type="PreferenceMemory",
                title=f"preference: {topic.lower()}" if topic else memory[:60],
                sources=sources,
                extractor=extractor,
                tags=("mode:fine", "preference", kind),
                background=_text(entry.get("context_summary")),
                metadata=meta,
                refines=refines,
                confidence=_confidence(entry.get("confidence")),
            )
        )
    tool_sources = tuple(s for s in sources if s.type in ("tool_call", "tool_result")) or sources
    for entry in _entries(data.get("tool_trajectories")):
        name = _text(entry.get("tool_name")) or "unknown tool"
        success = entry.get("success")
        experience = _text(entry.get("experience"))
        task = _text(entry.get("task"))
        memory = _text(entry.get("memory")) or (
            f"Task: {task}. Tool {name} {'succeeded' if success else 'failed'}. Experience: {experience}"
        )
        meta = {**base, "tool_name": name, "success": bool(success), "experience": experience, "task": task}
        drafts.append(
            MemoryDraft(
                key="",
                memory=memory,
                memory_type="ToolTrajectoryMemory",
                title=f"Tool use: {name}",
                sources=tool_sources,
                extractor=extractor,
                tags=("mode:fine", "tool", "tool_trajectory"),
                metadata=meta,
                refines="tool_trajectory",
                confidence=_confidence(entry.get("confidence")),
            )
        )
    shares = split_usage(usage, len(drafts))
    return [replace(d, key=f"fine:{window.index}:{n}", usage=shares[n]) for n, d in enumerate(drafts)]


def _entries(value: Any) -> list[Mapping[str, Any]]:
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, Mapping)]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value).strip()


def _tags(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return ()
    return tuple(str(v).strip() for v in value if str(v).strip())[:10]


def _confidence(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.9
    return min(1.0, max(0.0, number))


def vision_messages(item: Item) -> list[JsonDict]:
    """Chat messages asking a vision model to describe an image item (inline bytes or its URL)."""
    if item.data is not None:
        mime = item.mime or "image/png"
        url = f"data:{mime};base64,{base64.b64encode(item.data).decode('ascii')}"
    else:
        url = item.source.url or item.ref or ""
    part: JsonDict = {"type": "image_url", "image_url": {"url": url, **item.payload}}
    return [
        {"role": "system", "content": _VISION_SYSTEM},
        {"role": "user", "content": [{"type": "text", "text": "Describe this image."}, part]},
    ]


def image_draft(
    item: Item, description: str, *, model_id: str, usage: ModelUsage | None, index: int
) -> MemoryDraft:
    """A memory holding a vision model's description of an image."""
    name = item.name or item.source.url or "image"
    text = re.sub(r"\s+", " ", description).strip()
    return MemoryDraft(
        key=f"fine:image:{index}",
        memory=f"Image {name} shared by the {item.role}: {text}",
        memory_type="LongTermMemory",
        title=f"image: {name}"[:120],
        sources=(item.source,),
        extractor=f"llm:{model_id}",
        tags=("mode:fine", "image"),
        metadata={"extractor": "llm", "model": model_id, "image": name},
        usage=(usage,) if usage is not None else (),
    )


def merge_phases(
    fast: Sequence[MemoryDraft], fine: Sequence[MemoryDraft], *, after_fast: bool
) -> tuple[list[MemoryDraft], dict[str, list[str]]]:
    """Which drafts to add and which fast drafts to retire, given the fine drafts that refine them.

    A fast draft whose group has fine successors is retired naming them (``after_fast``: it is already
    on the log) or not written at all. A fast draft whose group has none (a file chunk, a tool schema,
    a window whose extraction failed or found nothing) is kept: written unless ``after_fast``.
    Returns (drafts to add, {fast key: [successor keys]}).
    """
    successors: dict[str, list[str]] = {}
    for draft in fine:
        if draft.refines:
            successors.setdefault(draft.refines, []).append(draft.key)
    add: list[MemoryDraft] = list(fine)
    retire: dict[str, list[str]] = {}
    for draft in fast:
        if draft.group is not None and draft.group in successors:
            if after_fast:
                retire[draft.key] = successors[draft.group]
        elif not after_fast:
            add.append(draft)
    return add, retire
