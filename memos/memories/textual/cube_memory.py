"""The plaintext memory of one cube (``mem_cube.text_mem``): a view over the memory service, data on the log.

Nothing is stored in the object: ``add`` appends MemoryAdded events, ``delete`` MemoryRetired events,
and reads go to the projections, all through :class:`memos.application.service.MemoryService` with the access
checks of the user the cube was registered for. A cube's id is known once a MOS registers it
(:meth:`CubeTextMemory.bind`); before that, reads and writes raise NotFound, and memories loaded from a
dumped cube folder wait to be imported (as events, idempotent by memory id) when it is bound.

Dump files: ``<memory_filename stem>.jsonl``, one exported record per line (embedding included).
``load`` also reads MemOS's own ``textual_memory.json`` (a JSON array of ``{id, memory, metadata}``).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import ValidationError

from memos.application.buckets import PREFERENCE_TYPES, TEXT_TYPES
from memos.client import SyncClient
from memos.memories.textual.item import TextualMemoryItem
from schemas.errors import NotFound, StoreError
from schemas.events import MemoryType, SourceRef

__all__ = ["PREFERENCE_TYPES", "TEXT_TYPES", "CubeTextMemory", "memory_draft"]

logger = logging.getLogger(__name__)


_MEMORY_TYPES = set(get_args(MemoryType))
_NOT_METADATA = {
    "id", "memory", "cube_id", "status", "relativity", "ref_id", "created_at", "updated_at", "embedding",
    "revision", "successor_ids", "retire_reason", "valid_to", "origin_event_id", "usage", "file_ids",
    "covered_history", "embedding_model", "extractor", "sources", "tags", "key", "background", "memory_type",
    "user_id", "session_id", "confidence", "valid_from", "metadata",
}  # fmt: skip


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, ensure_ascii=False, default=str))


def _sources(raw: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for source in raw if isinstance(raw, list) else []:
        if not isinstance(source, Mapping):
            continue
        try:
            ref = SourceRef.model_validate({k: v for k, v in source.items() if k in SourceRef.model_fields})
        except ValidationError:
            continue
        out.append(ref.model_dump(mode="json", exclude_none=True))
    return out


def memory_draft(memory: TextualMemoryItem | Mapping[str, Any] | str) -> dict[str, Any]:
    """MemoryAdded fields for one memory given as text, a MemOS item, or an exported record."""
    if isinstance(memory, str):
        return {"memory_id": str(uuid.uuid4()), "memory": memory, "extractor": "import"}
    data = memory.model_dump(mode="json") if isinstance(memory, TextualMemoryItem) else dict(memory)
    if "memory_type" in data and "cube_id" in data:  # an exported record: fields at the top level
        flat, extra = data, dict(data.get("metadata") or {})
    else:  # a MemOS item: fields in its metadata
        meta = dict(data.get("metadata") or {})
        flat = {**meta, "id": data.get("id"), "memory": data.get("memory", "")}
        extra = {k: v for k, v in meta.items() if k not in _NOT_METADATA and v is not None}
    memory_type = flat.get("memory_type")
    draft: dict[str, Any] = {
        "memory_id": str(flat.get("id") or uuid.uuid4()),
        "memory": str(flat.get("memory") or ""),
        "memory_type": memory_type if memory_type in _MEMORY_TYPES else "LongTermMemory",
        "title": str(flat.get("key") or ""),
        "tags": [str(t) for t in flat.get("tags") or []],
        "background": str(flat.get("background") or ""),
        "sources": _sources(flat.get("sources")),
        "metadata": _json_safe(extra),
        "embedding": [float(x) for x in flat.get("embedding") or []],
        "embedding_model": str(flat.get("embedding_model") or ""),
        "extractor": str(flat.get("extractor") or "import"),
        "confidence": float(flat["confidence"]) if flat.get("confidence") is not None else 1.0,
        "session_id": str(flat.get("session_id") or "default_session"),
    }
    if flat.get("user_id"):
        draft["user_id"] = str(flat["user_id"])
    if flat.get("valid_from"):
        draft["valid_from"] = flat["valid_from"]
    return draft


def _read_dump(directory: Path, filename: str) -> list[dict[str, Any]]:
    lines_file = directory / f"{Path(filename).stem}.jsonl"
    memos_file = directory / filename
    try:
        if lines_file.is_file():
            text = lines_file.read_text(encoding="utf-8")
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        if memos_file.is_file():
            loaded = json.loads(memos_file.read_text(encoding="utf-8") or "[]")
            return [m for m in (loaded if isinstance(loaded, list) else []) if isinstance(m, dict)]
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read memories dumped in {str(directory)!r}: {exc}") from exc
    return []


class CubeTextMemory:
    """``text_mem`` (or, with ``kind='preference'``, ``pref_mem``) of a cube: MemOS's interface on the log.

    ``config`` is the cube config's memory section (kept for dumps; the stores are the runtime's).
    """

    def __init__(
        self,
        config: Any = None,
        *,
        kind: Literal["text", "preference"] = "text",
        include_preferences: bool = False,
    ) -> None:
        self.config = config
        self.kind = kind
        self.include_preferences = kind == "preference" or include_preferences
        """Whether preference memories belong to this view (a ``text`` view of a cube without ``pref_mem``)."""
        self.memory_types = (
            PREFERENCE_TYPES
            if kind == "preference"
            else TEXT_TYPES + (PREFERENCE_TYPES if include_preferences else ())
        )
        self.cube_id: str | None = None
        self.user_id: str | None = None
        self._client: SyncClient | None = None
        self._pending: list[dict[str, Any]] = []

    @property
    def memory_filename(self) -> str:
        """Dump file name from the config (MemOS default ``textual_memory.json``)."""
        default = "textual_memory.json" if self.kind == "text" else "preference_memory.json"
        return str(getattr(self.config, "memory_filename", None) or default)

    # --- binding ------------------------------------------------------------------------------------

    def bind(self, cube_id: str, user_id: str, client: SyncClient) -> list[str]:
        """Attach the view to a registered cube, acting as ``user_id``; imports memories waiting from
        a loaded dump and returns the ids it added (ids the cube already holds are skipped)."""
        self.cube_id, self.user_id, self._client = cube_id, user_id, client
        pending, self._pending = self._pending, []
        return self._import(pending) if pending else []

    @property
    def bound(self) -> bool:
        """Whether a MOS registered the cube (its id is known)."""
        return self._client is not None and self.cube_id is not None

    def _target(self) -> tuple[SyncClient, str, str]:
        if self._client is None or self.cube_id is None or self.user_id is None:
            raise NotFound(
                "this cube is not registered yet: call MOS.register_mem_cube first", field="mem_cube_id"
            )
        return self._client, self.cube_id, self.user_id

    def _import(self, records: Sequence[TextualMemoryItem | Mapping[str, Any] | str]) -> list[str]:
        client, cube_id, user_id = self._target()
        drafts = [memory_draft(r) for r in records]
        if self.kind == "preference":
            drafts = [{**d, "memory_type": "PreferenceMemory"} for d in drafts]
        return client.call(client.service.import_memories(user_id, cube_id, drafts))

    # --- MemOS interface ----------------------------------------------------------------------------

    def add(self, memories: Sequence[TextualMemoryItem | Mapping[str, Any] | str]) -> list[str]:
        """Add memories as given (no extraction): one MemoryAdded event each; returns the ids added."""
        return self._import(list(memories))

    def search(
        self,
        query: str,
        top_k: int = 5,
        info: Mapping[str, Any] | None = None,
        mode: str = "fast",
        **params: Any,
    ) -> list[TextualMemoryItem]:
        """The ``top_k`` memories of this cube most relevant to ``query``, best first."""
        client, cube_id, user_id = self._target()
        buckets = ["pref_mem"] if self.kind == "preference" else ["text_mem"]
        if self.kind == "text" and self.include_preferences:
            buckets.append("pref_mem")
        options: dict[str, Any] = {
            "top_k": top_k, "mode": mode, "include_preference": self.include_preferences, "pref_top_k": top_k,
            "search_tool_memory": False, "include_skill_memory": False, **params,
        }  # fmt: skip
        if info and info.get("session_id"):
            options.setdefault("session_id", info["session_id"])
        data = client.call(client.service.search(user_id, [cube_id], query, **options))
        items = [m for b in buckets for entry in data.get(b, []) for m in entry.get("memories", [])]
        if len(buckets) > 1:  # one ranking across both buckets
            items.sort(key=lambda m: -float(m.get("metadata", {}).get("relativity") or 0.0))
        return [TextualMemoryItem.from_dict(m) for m in items[:top_k]]

    def get(self, memory_id: str) -> TextualMemoryItem:
        """One memory by id (superseded ones resolve too); NotFound otherwise."""
        client, cube_id, user_id = self._target()
        return TextualMemoryItem.from_dict(
            client.call(client.service.get_memory(user_id, cube_id, memory_id))
        )

    def get_by_ids(self, memory_ids: Sequence[str]) -> list[TextualMemoryItem]:
        """The memories with these ids, in the order asked (unknown ids raise NotFound)."""
        return [self.get(memory_id) for memory_id in memory_ids]

    def get_all(self) -> list[TextualMemoryItem]:
        """Every current memory of this view's types, in creation order."""
        client, cube_id, user_id = self._target()
        views = client.call(client.service.get_all(user_id, cube_id, memory_types=list(self.memory_types)))
        return [TextualMemoryItem.from_dict(v) for v in views]

    def delete(self, memory_ids: Sequence[str] | str) -> list[str]:
        """Retire memories by id (MemoryRetired events); returns the ids retired."""
        client, cube_id, user_id = self._target()
        ids = [memory_ids] if isinstance(memory_ids, str) else list(memory_ids)
        return client.call(client.service.delete(user_id, cube_id, ids))

    def delete_all(self) -> list[str]:
        """Retire every current memory of this view's types."""
        ids = [item.id for item in self.get_all()]
        return self.delete(ids) if ids else []

    # --- dump and load ------------------------------------------------------------------------------

    def export(self) -> list[dict[str, Any]]:
        """Every current memory of this view as a full record (embedding included); pending ones if unbound."""
        if not self.bound:
            return list(self._pending)
        client, cube_id, user_id = self._target()
        records = client.call(client.service.export_memories(user_id, cube_id))
        return [r for r in records if r.get("memory_type") in self.memory_types]

    def dump(self, dir: str) -> None:  # noqa: A002 - MemOS's parameter name
        """Write the export to ``dir/<memory_filename stem>.jsonl``, one record a line."""
        path = Path(dir) / f"{Path(self.memory_filename).stem}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps(r, ensure_ascii=False, default=str) for r in self.export()]
        path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        logger.info("text_memory_dumped dir=%s memories=%d kind=%s", dir, len(lines), self.kind)

    def load(self, dir: str) -> list[str]:  # noqa: A002 - MemOS's parameter name
        """Read memories dumped in ``dir``: imported now when bound, else when the cube is registered.

        Returns the ids imported now. Raises StoreError when a dump file exists but cannot be read.
        """
        records = _read_dump(Path(dir), self.memory_filename)
        if not self.bound:
            self._pending.extend(records)
            return []
        return self._import(records) if records else []
