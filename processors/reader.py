"""Pure reader: a plain string or OpenAI chat messages -> normalized items plus fetch requests for references.

Every part of every message ends up as an item: readable text, a file or image to fetch, or a
``skipped`` item whose source says why (unknown part type, empty message, bad URL, invalid tool schema).
Nothing is dropped silently and nothing raises on malformed input.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from processors.documents import ParsedDocument
from processors.timeparse import parse_chat_time
from schemas.events import JsonDict, SourceRef

__all__ = [
    "EXCERPT_CHARS",
    "FetchRequest",
    "Item",
    "ItemKind",
    "ReadResult",
    "attach_fetched",
    "decode_data_url",
    "names_a_reference",
    "read_messages",
]

logger = logging.getLogger(__name__)

EXCERPT_CHARS = 300
"""Longest source excerpt kept in a SourceRef."""

ItemKind = Literal["chat", "file", "image", "audio", "tool_call", "tool_result", "tool_schema", "skipped"]
RefKind = Literal["url", "path"]

_SCHEMA_BLOCK = re.compile(r"<tool_schema>(.*?)(?:</tool_schema>|$)", re.DOTALL | re.IGNORECASE)
_B64 = re.compile(r"^[A-Za-z0-9+/=_-]+$")
_ROLES = {"system", "user", "assistant", "tool"}
_PATH = re.compile(r"^(?:/|~|\.{1,2}[/\\]|[A-Za-z]:[/\\]|\\\\)\S")
"""An explicit local path: absolute, home-relative, ./ or ../, a Windows drive or UNC path."""
_TEXT_PARTS = {"text", "input_text", "output_text"}


@dataclass(frozen=True, slots=True)
class Item:
    """One normalized piece of a conversation.

    ``text`` is the readable text (chat text, a rendered tool call, a tool result, a tool schema as
    JSON, or for a skipped item the reason). ``ref`` is a URL or local path still to fetch, ``data``
    inline bytes (a decoded data URL or fetched content). ``payload`` holds structured extras: a tool
    schema, tool call arguments, image detail.
    """

    kind: ItemKind
    message_index: int
    role: str
    text: str
    source: SourceRef
    name: str = ""
    ref: str | None = None
    data: bytes | None = None
    mime: str | None = None
    payload: JsonDict = field(default_factory=dict)
    document: ParsedDocument | None = None
    """The file's parsed text when the shell parsed it already (in the parsing sandbox)."""
    recorded_at: str | None = None  # when the log recorded the add (ISO, UTC): dates a message without chat time

    @property
    def anchor_time(self) -> str | None:
        """What its relative times resolve against: its chat time if that is a date, else ``recorded_at``."""
        given = self.source.chat_time
        return given if parse_chat_time(given) is not None or not self.recorded_at else self.recorded_at

    @property
    def ok(self) -> bool:
        """True when the item's source could be read."""
        return self.source.status == "ok"


@dataclass(frozen=True, slots=True)
class FetchRequest:
    """A reference the shell must fetch: item ``item_index`` of the read result."""

    item_index: int
    ref: str
    ref_kind: RefKind
    purpose: Literal["file", "image"]
    filename: str


@dataclass(frozen=True, slots=True)
class ReadResult:
    """Items in conversation order and the fetches that complete them."""

    items: tuple[Item, ...]
    fetches: tuple[FetchRequest, ...]


def read_messages(messages: str | Sequence[Any], *, recorded_at: str | None = None) -> ReadResult:
    """Normalize a plain string or a list of OpenAI messages (never raises); ``recorded_at`` goes on each item."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    reader = _Reader()
    for index, message in enumerate(messages):
        reader.message(index, message)
    items = tuple(reader.items)
    if recorded_at is not None:
        items = tuple(replace(item, recorded_at=recorded_at) for item in items)
    return ReadResult(items, tuple(reader.fetches))


def attach_fetched(
    read: ReadResult, outcomes: Mapping[int, tuple[bytes, str | None] | BaseException]
) -> tuple[Item, ...]:
    """Items with fetched bytes filled in, or marked ``unfetched`` with the error.

    A request without an outcome leaves its item as a plain reference (a file without bytes is later
    reported as not fetched; an image stays a reference).
    """
    items = list(read.items)
    for request in read.fetches:
        item = items[request.item_index]
        outcome = outcomes.get(request.item_index)
        if outcome is None:
            continue
        if isinstance(outcome, BaseException):
            items[request.item_index] = replace(item, source=_failed(item.source, "unfetched", str(outcome)))
        else:
            data, mime = outcome
            items[request.item_index] = replace(item, data=data, mime=mime or item.mime)
    return tuple(items)


def _is_path(ref: str) -> bool:
    """``_PATH`` on one line that does not open a comment: "/* a stylesheet */..." or "// code" is content."""
    return "\n" not in ref and "\r" not in ref and not ref.startswith(("/*", "//")) and bool(_PATH.match(ref))


def names_a_reference(text: str, purpose: str) -> bool:
    """Whether a file (``purpose`` "file") or image part's text names it by URL or local path, as the reader reads
    it, rather than being its content (a data URL, base64, or a file's own text)."""
    ref = text[1:].strip() if text.startswith("@") else text
    head = ref[:16].lower()
    if head.startswith("data:"):
        return False
    if head.startswith(("http://", "https://")) or "://" in head:
        return True
    if purpose == "file":
        compact = "".join(ref.split())
        if len(compact) >= 16 and len(compact) % 4 == 0 and _B64.match(compact):
            return False  # read as base64 content before any path
    return _is_path(ref)


def decode_data_url(url: str) -> tuple[bytes, str | None]:
    """Bytes and mime type of a ``data:`` URL. Raises ValueError when it is malformed."""
    if not url.startswith("data:") or "," not in url:
        raise ValueError(f"malformed data URL {url[:40]!r}")
    header, payload = url[5:].split(",", 1)
    parts = header.split(";")
    mime = parts[0] or "text/plain"
    if "base64" in parts[1:]:
        try:
            return base64.b64decode(payload, validate=False), mime
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"data URL has invalid base64: {exc}") from exc
    return urllib.parse.unquote_to_bytes(payload), mime


def _failed(source: SourceRef, status: Literal["unfetched", "unparsed", "skipped"], error: str) -> SourceRef:
    return source.model_copy(update={"status": status, "error": error})


def _excerpt(text: str) -> str:
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


class _Reader:
    """Accumulates items and fetches; one instance per read."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.fetches: list[FetchRequest] = []
        self.tool_names: dict[str, str] = {}

    def add(self, item: Item) -> int:
        self.items.append(item)
        return len(self.items) - 1

    def insert(self, at: int, item: Item) -> None:
        """Insert ``item`` at position ``at``, keeping fetch requests pointing at their items."""
        self.items.insert(at, item)
        self.fetches = [
            replace(f, item_index=f.item_index + 1) if f.item_index >= at else f for f in self.fetches
        ]

    def skip(self, base: SourceRef, index: int, role: str, error: str, **extra: Any) -> None:
        source = base.model_copy(update={"status": "skipped", "error": error, **extra})
        self.add(Item("skipped", index, role, error, source))

    def message(self, index: int, message: Any) -> None:
        if not isinstance(message, Mapping):
            base = SourceRef(role="unknown", message_index=index, content=_excerpt(repr(message)))
            self.skip(base, index, "unknown", f"message {index} is not an object: {type(message).__name__}")
            return
        raw_role = str(message.get("role") or "user").lower()
        role = "system" if raw_role == "developer" else raw_role
        base = SourceRef(
            type="system" if role == "system" else "chat",
            role=role,
            message_index=index,
            message_id=_opt_str(message.get("message_id")),
            chat_time=_opt_str(message.get("chat_time")),
        )
        if role not in _ROLES:
            self.skip(base, index, role, f"message {index} has unknown role {raw_role!r}")
            return
        before = len(self.items)
        texts = self.content(index, role, base, message.get("content"))
        text = "\n".join(t for t in texts if t.strip()).strip()
        if role == "tool":
            self.tool_result(index, base, message, text)
        elif role == "system":
            text = self.tool_schemas(index, base, text)
        if text and role != "tool":
            name = _opt_str(message.get("name")) or ""
            source = base.model_copy(update={"content": _excerpt(text)})
            self.insert(before, Item("chat", index, role, text, source, name=name))
        if role == "assistant":
            self.tool_calls(index, base, message.get("tool_calls"))
        if len(self.items) == before:
            self.skip(base, index, role, f"message {index} ({role}) is empty")

    def content(self, index: int, role: str, base: SourceRef, content: Any) -> list[str]:
        """Text parts of ``content``; files, images and audio become their own items (marker kept in text)."""
        if content is None:
            return []
        if isinstance(content, str):
            return [content]
        if isinstance(content, Mapping):
            content = [content]
        if not isinstance(content, Sequence):
            self.skip(
                base, index, role, f"message {index} content is a {type(content).__name__}, not text or parts"
            )
            return []
        texts: list[str] = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
                continue
            if not isinstance(part, Mapping):
                self.skip(
                    base,
                    index,
                    role,
                    f"message {index} has a content part that is not an object: {part!r:.60}",
                )
                continue
            kind = str(part.get("type") or "")
            if kind in _TEXT_PARTS:
                texts.append(str(part.get("text") or ""))
            elif kind == "file":
                texts.append(self.file(index, role, base, part.get("file")))
            elif kind == "image_url":
                texts.append(self.image(index, role, base, part.get("image_url")))
            elif kind == "input_audio":
                texts.append(self.audio(index, role, base, part.get("input_audio")))
            else:
                self.skip(base, index, role, f"unsupported content part type {kind!r} in message {index}")
        return texts

    def file(self, index: int, role: str, base: SourceRef, spec: Any) -> str:
        spec = spec if isinstance(spec, Mapping) else {}
        file_id = _opt_str(spec.get("file_id"))
        filename = _opt_str(spec.get("filename")) or ""
        source = base.model_copy(
            update={"type": "file", "file_id": file_id, "filename": filename or None, "content": ""}
        )
        data = str(spec.get("file_data") or "").strip()
        if not data:
            shown = filename or file_id or "file"
            why = f"file {shown!r} has no file_data (an uploaded file id alone cannot be resolved)"
            self.add(Item("file", index, role, why, _failed(source, "unfetched", why), name=shown))
            return f"[file: {shown}]"
        return f"[file: {self.reference(index, role, source, data, 'file', filename)}]"

    def image(self, index: int, role: str, base: SourceRef, spec: Any) -> str:
        if isinstance(spec, str):
            spec = {"url": spec}
        spec = spec if isinstance(spec, Mapping) else {}
        url = str(spec.get("url") or "").strip()
        source = base.model_copy(update={"type": "image", "content": ""})
        detail = {"detail": str(spec["detail"])} if spec.get("detail") else {}
        if not url:
            why = "image_url part has no url"
            self.add(Item("image", index, role, why, _failed(source, "unfetched", why), payload=detail))
            return "[image]"
        name = self.reference(index, role, source, url, "image", "", payload=detail)
        return f"[image: {name}]"

    def audio(self, index: int, role: str, base: SourceRef, spec: Any) -> str:
        spec = spec if isinstance(spec, Mapping) else {}
        fmt = str(spec.get("format") or "unknown")
        size = len(str(spec.get("data") or ""))
        why = "audio is kept as a reference only; no transcription model is configured"
        source = base.model_copy(
            update={"type": "audio", "content": f"input_audio format={fmt} base64_chars={size}"}
        )
        self.add(Item("audio", index, role, why, _failed(source, "skipped", why), payload={"format": fmt}))
        return f"[audio: {fmt}]"

    def reference(
        self,
        index: int,
        role: str,
        source: SourceRef,
        ref: str,
        purpose: Literal["file", "image"],
        filename: str,
        payload: JsonDict | None = None,
    ) -> str:
        """Register a file or image given as a URL, data URL, local path or bare base64; return its name.

        Only an explicit path (``file://``, absolute, ``~``, ``./``, ``../``, a drive or UNC path) becomes a
        path fetch; whether it may be read is the fetcher's decision (never for remote callers). Any other
        text of a file part is the file's content, never a path.
        """
        ref = ref[1:].strip() if ref.startswith("@") else ref
        payload = payload or {}
        kind: ItemKind = purpose
        if ref.startswith("data:"):
            shown = filename or f"inline {purpose}"
            source = source.model_copy(update={"filename": source.filename or shown, "url": None})
            try:
                data, mime = decode_data_url(ref)
            except ValueError as exc:
                self.add(
                    Item(
                        kind,
                        index,
                        role,
                        str(exc),
                        _failed(source, "unfetched", str(exc)),
                        shown,
                        payload=payload,
                    )
                )
                return shown
            self.add(Item(kind, index, role, "", source, shown, data=data, mime=mime, payload=payload))
            return shown
        lowered = ref.lower()
        if lowered.startswith(("http://", "https://")):
            parsed = urllib.parse.urlsplit(ref)
            shown = filename or urllib.parse.unquote(parsed.path.rsplit("/", 1)[-1]) or parsed.netloc or ref
            source = source.model_copy(update={"url": ref, "filename": source.filename or shown})
            if not parsed.netloc or " " in parsed.netloc:
                why = f"malformed URL {ref!r}"
                self.add(
                    Item(
                        kind,
                        index,
                        role,
                        why,
                        _failed(source, "unfetched", why),
                        shown,
                        ref=ref,
                        payload=payload,
                    )
                )
                return shown
            item_index = self.add(Item(kind, index, role, "", source, shown, ref=ref, payload=payload))
            self.fetches.append(FetchRequest(item_index, ref, "url", purpose, shown))
            return shown
        if "://" in ref[:16] and not lowered.startswith("file://"):
            shown = filename or ref
            why = f"unsupported URL scheme in {ref!r} (use http, https, data or a local path)"
            source = source.model_copy(update={"url": ref, "filename": source.filename or shown})
            self.add(
                Item(
                    kind, index, role, why, _failed(source, "unfetched", why), shown, ref=ref, payload=payload
                )
            )
            return shown
        compact = "".join(ref.split())
        if purpose == "file" and len(compact) >= 16 and len(compact) % 4 == 0 and _B64.match(compact):
            try:
                data = base64.b64decode(compact, validate=True)
            except (binascii.Error, ValueError):
                data = b""
            if data:
                shown = filename or "inline file"
                self.add(Item(kind, index, role, "", source, shown, data=data, payload=payload))
                return shown
        if lowered.startswith("file://") or _is_path(ref):
            path = (
                urllib.parse.unquote(urllib.parse.urlsplit(ref).path)
                if lowered.startswith("file://")
                else ref
            )
            shown = filename or path.replace("\\", "/").rsplit("/", 1)[-1]
            source = source.model_copy(update={"url": ref, "filename": source.filename or shown})
            item_index = self.add(Item(kind, index, role, "", source, shown, ref=path, payload=payload))
            self.fetches.append(FetchRequest(item_index, path, "path", purpose, shown))
            return shown
        shown = filename or f"inline {purpose}"
        if purpose == "image":
            why = f"image reference {ref[:60]!r} is not a URL, a data URL or a local path"
            self.add(Item(kind, index, role, why, _failed(source, "unfetched", why), shown, payload=payload))
            return shown
        text = ref.encode("utf-8", errors="replace")
        self.add(Item(kind, index, role, "", source, shown, data=text, mime="text/plain", payload=payload))
        return shown

    def tool_calls(self, index: int, base: SourceRef, calls: Any) -> None:
        if calls is None:
            return
        if not isinstance(calls, Sequence) or isinstance(calls, str):
            self.skip(base, index, "assistant", f"message {index} tool_calls is not a list")
            return
        for n, call in enumerate(calls):
            function = call.get("function") if isinstance(call, Mapping) else None
            if not isinstance(function, Mapping) or not function.get("name"):
                self.skip(base, index, "assistant", f"message {index} tool call {n} has no function name")
                continue
            name = str(function["name"])
            call_id = _opt_str(call.get("id")) if isinstance(call, Mapping) else None
            raw_args = function.get("arguments")
            args: Any = raw_args
            if isinstance(raw_args, str):
                try:
                    args = json.loads(raw_args) if raw_args.strip() else {}
                except json.JSONDecodeError:
                    args = raw_args
            shown = raw_args if isinstance(raw_args, str) else json.dumps(raw_args, ensure_ascii=False)
            text = f"[tool_call {name}({shown or ''})]"
            if call_id:
                self.tool_names[call_id] = name
            source = base.model_copy(
                update={"type": "tool_call", "tool_call_id": call_id, "content": _excerpt(text)}
            )
            self.add(
                Item("tool_call", index, "assistant", text, source, name=name, payload={"arguments": args})
            )

    def tool_result(self, index: int, base: SourceRef, message: Mapping[str, Any], text: str) -> None:
        call_id = _opt_str(message.get("tool_call_id"))
        name = self.tool_names.get(call_id or "", "") or _opt_str(message.get("name")) or ""
        source = base.model_copy(
            update={"type": "tool_result", "tool_call_id": call_id, "content": _excerpt(text)}
        )
        if not text:
            return
        self.add(Item("tool_result", index, "tool", text, source, name=name))

    def tool_schemas(self, index: int, base: SourceRef, text: str) -> str:
        """Extract ``<tool_schema>`` blocks from a system text; returns the text without them."""
        blocks = list(_SCHEMA_BLOCK.finditer(text))
        if not blocks:
            return text
        for block in blocks:
            raw = block.group(1).strip()
            source = base.model_copy(update={"type": "tool_schema", "content": _excerpt(raw)})
            try:
                parsed = json.loads(raw)
            except json.JSONDecodeError as exc:
                why = f"invalid JSON in <tool_schema> of message {index}: {exc}"
                self.add(Item("tool_schema", index, "system", raw, _failed(source, "unparsed", why)))
                continue
            tools = parsed.get("tools", [parsed]) if isinstance(parsed, Mapping) else parsed
            if not isinstance(tools, list) or not tools:
                why = f"<tool_schema> of message {index} holds no tool objects"
                self.add(Item("tool_schema", index, "system", raw, _failed(source, "unparsed", why)))
                continue
            for n, tool in enumerate(tools):
                if not isinstance(tool, Mapping):
                    why = f"<tool_schema> entry {n} of message {index} is not an object"
                    self.add(
                        Item("tool_schema", index, "system", repr(tool), _failed(source, "unparsed", why))
                    )
                    continue
                function = tool.get("function")
                spec: Mapping[str, Any] = function if isinstance(function, Mapping) else tool
                name = str(spec.get("name") or f"unnamed_tool_{n}")
                rendered = json.dumps(dict(tool), ensure_ascii=False)
                src = source.model_copy(update={"content": _excerpt(rendered)})
                self.add(Item("tool_schema", index, "system", rendered, src, name=name, payload=dict(spec)))
        return _SCHEMA_BLOCK.sub("", text).strip()
