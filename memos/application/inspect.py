"""Read-only use cases of the web console: cube overviews, memory pages, lineage, graphs, usage, tasks.

Every call names the acting user and goes through ``MemoryService.authorize`` (the one access check:
an unknown or unreadable cube is NotFound), so the console shows exactly what the HTTP API would. Counts per
type, last change and model usage come from a digest of the memories topic that this process folds
incrementally (each call reads only the records appended since the last one).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from memos.application.limits import MAX_PAGE
from memos.application.log_digest import CubeDigest, LogDigest, UsageRow
from memos.application.service import MemoryService
from memos.application.views import memory_view
from schemas.codec import decode
from schemas.errors import NotFound, ValidationFailed
from schemas.memory import MemoryRecord
from schemas.topics import MEMORIES
from streams.feed import format_cursor
from streams.log.base import partition_for

__all__ = [
    "CONTEXT_WORDS",
    "GRAPH_EDGES_PER_NODE",
    "CubeGraph",
    "CubeOverview",
    "Inspector",
    "Job",
    "Lineage",
    "MemoryPage",
    "PlaygroundResult",
    "UsageRow",
    "model_context",
]

logger = logging.getLogger(__name__)

CONTEXT_WORDS = 1000
"""Word budget of the context a search would give a model."""
GRAPH_EDGES_PER_NODE = 20
"""The graph view reads at most this many edges per node shown (on average), whatever the cube holds."""

_BUCKETS = (("text_mem", "text"), ("pref_mem", "preference"), ("tool_mem", "tool"), ("skill_mem", "skill"))
_PROJECTION_GROUP = "projector"
StatusFilter = Literal["activated", "retired", "all"]


@dataclass(slots=True)
class CubeOverview:
    """One readable cube as the console lists it."""

    cube_id: str
    cube_name: str
    owner_id: str
    access: str
    shares: list[dict[str, str]]
    counts: dict[str, int] | None
    """Current memories per memory type (from the log digest; None while it is being read)."""
    retired: int | None
    total: int
    """Current memories in the graph projection."""
    last_change: datetime | None
    lag: int
    """Memory events on the cube's partition not yet applied by the projection stage."""


@dataclass(slots=True)
class MemoryPage:
    """One page of a cube's memories."""

    cube_id: str
    items: list[dict[str, Any]]
    page: int
    page_size: int
    total: int | None
    """Matching memories, when known without a scan."""
    has_more: bool


@dataclass(slots=True)
class Lineage:
    """One memory and where it came from: sources, history, successors, predecessors, neighbours."""

    memory: dict[str, Any]
    retire_reason: str | None
    sources: list[dict[str, Any]]
    history: list[dict[str, Any]]
    successors: list[dict[str, Any]]
    predecessors: list[dict[str, Any]]
    neighbours: list[dict[str, Any]]


@dataclass(slots=True)
class CubeGraph:
    """Nodes and edges of a cube, capped at ``limit`` nodes."""

    cube_id: str
    nodes: list[dict[str, Any]]
    edges: list[dict[str, Any]]
    total: int
    limit: int


@dataclass(slots=True)
class PlaygroundResult:
    """A search with every hit flattened (bucket, cube, relativity, score parts) and the model context."""

    query: str
    cube_ids: list[str]
    hits: list[dict[str, Any]]
    context: str
    context_words: int


@dataclass(slots=True)
class Job:
    """A long action (replay) running in this process, with its progress."""

    job_id: str
    kind: str
    cube_id: str
    user_id: str
    done: int = 0
    total: int = 0
    status: Literal["running", "completed", "failed"] = "running"
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def model_context(memories: Iterable[str], *, budget_words: int = CONTEXT_WORDS) -> tuple[str, int]:
    """The memories block a chat model would get (numbered, as ``memos.chat`` writes it), cut at
    ``budget_words`` words; returns (text, words used)."""
    lines: list[str] = []
    used = 0
    for text in memories:
        words = text.split()
        if not words:
            continue
        room = budget_words - used
        if room <= 0:
            break
        kept = words[:room]
        lines.append(f"{len(lines) + 1}. {' '.join(kept)}{' …' if len(kept) < len(words) else ''}")
        used += len(kept)
    return ("## Memories:\n" + "\n".join(lines) if lines else ""), used


class Inspector:
    """The console's use cases, read-only except the confirmed actions (delete, replay, forget)."""

    def __init__(self, service: MemoryService) -> None:
        self.service = service
        self._log_digest = LogDigest()
        self.jobs: dict[str, Job] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._warming: asyncio.Task[None] | None = None

    @property
    def _rt(self) -> Any:
        return self.service.rt

    # --- access -----------------------------------------------------------------------------------------

    async def readable(self, user_id: str) -> list[Any]:
        """Cubes the user owns or that were shared with it (``CubeAccess``: id, name, owner, access)."""
        cubes: list[Any] = await self.service.list_cubes(user_id)
        return [c for c in cubes if c.access in ("owner", "write", "read")]

    async def access(self, user_id: str, cube_id: str, need: Literal["read", "write", "owner"] = "read") -> str:
        """The service's one check: the user's access, NotFound when unknown or unreadable, PermissionDenied
        when short of ``need``."""
        access: str = await self.service.authorize(user_id, cube_id, need)
        return access

    # --- digest of the memories topic -------------------------------------------------------------------

    def warm(self) -> asyncio.Task[None]:
        """Catch the digest up to the log's current end in the background (one run at a time)."""
        if self._warming is None or self._warming.done():
            self._warming = asyncio.create_task(self._catch_up(), name="console:digest")
        return self._warming

    async def _digest(self, wait_s: float | None = None) -> tuple[LogDigest, bool]:
        """The digest caught up to the log's end, waiting at most ``wait_s`` (None: as long as it takes);
        (digest, False) when it is still being read: its contents must not be read then."""
        task = self.warm()
        try:
            await asyncio.wait_for(asyncio.shield(task), wait_s)
        except TimeoutError:
            return self._log_digest, False
        return self._log_digest, True

    async def _catch_up(self) -> None:
        digest = self._log_digest
        async with digest.lock:
            log = self._rt.log
            ends = await log.end_offsets(MEMORIES)
            digest.ends = dict(ends)
            for partition, end in ends.items():
                offset = digest.cursor.get(partition, 0)
                while offset < end:
                    records = await log.read(MEMORIES, partition, offset, limit=2000)
                    if not records:
                        break
                    await asyncio.to_thread(digest.fold_records, records)  # keeps the event loop serving
                    offset = records[-1].position.offset + 1
                    digest.cursor[partition] = offset
                digest.cursor[partition] = max(offset, digest.cursor.get(partition, 0))

    def digest_progress(self) -> tuple[int, int]:
        """(memory events read, memory events on the log when the last catch-up started)."""
        d = self._log_digest
        return sum(d.cursor.values()), sum(d.ends.values())

    # --- cubes ------------------------------------------------------------------------------------------

    async def cubes(self, user_id: str, *, wait_s: float | None = 0.25) -> list[CubeOverview]:
        """Every cube the user may read, with owner, shares, counts per type, last change and lag.

        Counts, retired and last change come from the digest: None while it is still being read after
        ``wait_s`` (see ``digest_progress``)."""
        readable = await self.readable(user_id)
        if not readable:
            return []
        digest, complete = await self._digest(wait_s)
        log = self._rt.log
        partitions = await log.partitions(MEMORIES)
        ends = await log.end_offsets(MEMORIES)
        committed = await log.committed(_PROJECTION_GROUP, MEMORIES)
        out = []
        for cube in readable:
            cube_id = cube.cube_id
            d = digest.cubes.get(cube_id, CubeDigest()) if complete else None
            counts: dict[str, int] = {}
            retired = 0
            for m in d.memories.values() if d else ():
                if m.status == "activated":
                    counts[m.memory_type] = counts.get(m.memory_type, 0) + 1
                else:
                    retired += 1
            p = partition_for(cube_id.encode(), partitions)
            out.append(CubeOverview(
                cube_id=cube_id, cube_name=cube.cube_name or cube_id, owner_id=cube.owner_id,
                access=cube.access, shares=await self._shares(cube_id, cube.access),
                counts=dict(sorted(counts.items())) if d else None, retired=retired if d else None,
                total=await self._rt.graph.count(cube_id), last_change=d.last_change if d else None,
                lag=max(0, ends.get(p, 0) - committed.get(p, 0)),
            ))
        return out

    async def _shares(self, cube_id: str, access: str) -> list[dict[str, str]]:
        """Users the cube is shared with (only its owner sees them)."""
        if access != "owner":
            return []
        return [{"user_id": s.user_id, "access": s.access} for s in await self.service.control.shares(cube_id)
                if s.access in ("read", "write")]

    # --- memories ---------------------------------------------------------------------------------------

    async def memories(self, user_id: str, cube_id: str, *, page: int = 1, page_size: int = 50,
                       memory_type: str | None = None, status: StatusFilter = "activated", text: str = "",
                       extractor: str = "") -> MemoryPage:
        """A page of a cube's memories in creation order, filtered by type, status, text and extractor."""
        await self.access(user_id, cube_id)
        if not 1 <= page <= MAX_PAGE:
            raise ValidationFailed(f"page must be between 1 and {MAX_PAGE:,}", field="page")
        if not 1 <= page_size <= 500:
            raise ValidationFailed("page_size must be between 1 and 500", field="page_size")
        if status not in ("activated", "retired", "all"):
            raise ValidationFailed("status must be 'activated', 'retired' or 'all'", field="status")
        graph = self._rt.graph
        types = [memory_type] if memory_type else None
        start = (page - 1) * page_size
        needle, extractor = text.strip(), extractor.strip()
        if status != "retired" and not needle and not extractor:
            rows = await graph.list_memories(cube_id, include_retired=status == "all", memory_types=types,
                                             limit=page_size + 1, offset=start)
            total = None if types else await graph.count(cube_id, include_retired=status == "all")
        else:  # one bounded query of the store (page_size + 1 tells whether there is a next page)
            rows = await graph.find_memories(cube_id, text=needle, extractor=extractor, status=status,
                                             memory_types=types, limit=page_size + 1, offset=start)
            total = None
        items = [_row(r) for r in rows[:page_size]]
        return MemoryPage(cube_id, items, page, page_size, total, has_more=len(rows) > page_size)

    async def lineage(self, user_id: str, cube_id: str, memory_id: str) -> Lineage:
        """One memory with its sources, its history from the log, successors, predecessors and neighbours."""
        await self.access(user_id, cube_id)
        graph = self._rt.graph
        found = await graph.get([memory_id], cube_id=cube_id)
        if not found:
            raise NotFound(f"memory {memory_id!r} not found in cube {cube_id!r}", field="memory_id")
        record = found[0]
        digest = (await self._digest())[0].cubes.get(cube_id, CubeDigest()).memories.get(memory_id)
        edges = await graph.neighbors([memory_id], limit=50)
        other = {e.target_id if e.source_id == memory_id else e.source_id for e in edges}
        predecessors = list(digest.predecessors) if digest else []
        linked = {r.id: r for r in await graph.get([*record.successor_ids, *predecessors, *other],
                                                   cube_id=cube_id)}
        neighbours = []
        for e in edges:
            peer = e.target_id if e.source_id == memory_id else e.source_id
            neighbours.append({"relation": e.relation, "direction": "out" if e.source_id == memory_id else "in",
                               "weight": e.weight, "id": peer,
                               "memory": linked[peer].memory if peer in linked else None})
        return Lineage(
            memory=memory_view(record),
            retire_reason=record.retire_reason,
            sources=[s.model_dump(mode="json", exclude_none=True) for s in record.sources],
            history=await self._with_texts(digest.history) if digest else [],
            successors=[_brief(linked, i) for i in record.successor_ids],
            predecessors=[_brief(linked, i) for i in predecessors],
            neighbours=neighbours,
        )

    async def _with_texts(self, steps: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """History steps with the memory text each added or revised, read back from the log."""
        out = []
        for step in steps:
            step = dict(step)
            if step["event"] in ("MemoryAdded", "MemoryRevised"):
                records = await self._rt.log.read(MEMORIES, step["partition"], step["offset"], limit=1)
                if records and records[0].position.offset == step["offset"]:
                    event = decode(records[0].value)
                    step["memory"] = getattr(event, "memory", None)
            out.append(step)
        return out

    async def graph(self, user_id: str, cube_id: str, *, limit: int = 300) -> CubeGraph:
        """The cube's first ``limit`` current memories and the edges between them (read through the edges
        touching them, at most ``GRAPH_EDGES_PER_NODE`` per node on average, not the cube's every edge)."""
        await self.access(user_id, cube_id)
        graph = self._rt.graph
        records = await graph.list_memories(cube_id, limit=limit)
        ids = {r.id for r in records}
        touching = await graph.neighbors(list(ids), limit=GRAPH_EDGES_PER_NODE * len(ids)) if ids else []
        edges = [{"source": e.source_id, "target": e.target_id, "relation": e.relation, "weight": e.weight}
                 for e in touching if e.source_id in ids and e.target_id in ids]
        nodes = [{"id": r.id, "label": r.key or r.memory[:60], "memory": r.memory[:240], "type": r.memory_type}
                 for r in records]
        return CubeGraph(cube_id, nodes, edges, await graph.count(cube_id), limit)

    # --- search playground ------------------------------------------------------------------------------

    async def playground(self, user_id: str, cube_ids: Sequence[str], query: str, *, top_k: int = 10
                         ) -> PlaygroundResult:
        """Search through the service (its checks) and flatten every bucket's hits, best first."""
        for cube_id in cube_ids:
            await self.access(user_id, cube_id)
        data = await self.service.search(user_id, list(cube_ids), query, top_k=top_k)
        hits = []
        for key, bucket in _BUCKETS:
            for group in data.get(key) or []:
                for item in group.get("memories", []):
                    meta = item.get("metadata", {})
                    hits.append({"bucket": bucket, "cube_id": group.get("cube_id"), "id": item.get("id"),
                                 "memory": item.get("memory", ""), "relativity": meta.get("relativity"),
                                 "score_parts": meta.get("score_parts") or {},
                                 "memory_type": meta.get("memory_type"), "extractor": meta.get("extractor")})
        hits.sort(key=lambda h: -(h["relativity"] or 0.0))
        context, words = model_context(h["memory"] for h in hits)
        return PlaygroundResult(query, list(cube_ids), hits, context, words)

    # --- feed, usage, tasks -----------------------------------------------------------------------------

    async def feed_cursor(self, user_id: str) -> str:
        """The feed cursor at the current end of the partitions of the user's readable cubes."""
        log = self._rt.log
        partitions = await log.partitions(MEMORIES)
        ends = await log.end_offsets(MEMORIES)
        wanted = {partition_for(c.cube_id.encode(), partitions) for c in await self.readable(user_id)}
        return format_cursor({p: ends.get(p, 0) for p in sorted(wanted)})

    async def usage(self, user_id: str, *, wait_s: float | None = 1.0) -> list[UsageRow] | None:
        """Model calls and tokens per cube and model, for the cubes the user may read; None while the
        digest is still being read after ``wait_s``."""
        digest, complete = await self._digest(wait_s)
        if not complete:
            return None
        rows: list[UsageRow] = []
        for cube in await self.readable(user_id):
            rows.extend(digest.cubes.get(cube.cube_id, CubeDigest()).usage.values())
        return sorted(rows, key=lambda r: (r.cube_id, r.model_id, r.kind))

    async def tasks(self, user_id: str, *, cube_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """The user's tasks (the service's visibility rule) of the readable cubes or of one, newest first."""
        if cube_id is not None:
            await self.access(user_id, cube_id)
        rows = [t for t in await self.service.all_tasks(user_id) if cube_id is None or t.cube_id == cube_id]
        rows.sort(key=lambda t: t.submitted_at or t.updated_at, reverse=True)
        return [{"task_id": t.task_id, "cube_id": t.cube_id, "user_id": t.user_id, "label": t.label,
                 "status": t.status, "error": t.error, "submitted_at": t.submitted_at,
                 "updated_at": t.updated_at, "result": t.result} for t in rows[:limit]]

    # --- actions ----------------------------------------------------------------------------------------

    async def delete(self, user_id: str, cube_id: str, memory_id: str) -> list[str]:
        """Retire one memory (the service's use case and its write check)."""
        return await self.service.delete(user_id, cube_id, [memory_id])

    async def forget(self, user_id: str, cube_id: str) -> None:
        """Forget a cube (owner only) and drop it from the digest."""
        await self.access(user_id, cube_id, "owner")
        await self.service.forget_cube(cube_id, requested_by=user_id)
        self._log_digest.cubes.pop(cube_id, None)

    async def start_replay(self, user_id: str, cube_id: str) -> Job:
        """Start rebuilding a cube from the log (write access); the job's progress is read with ``job``."""
        await self.access(user_id, cube_id, "write")
        running = next((j for j in self.jobs.values() if j.status == "running" and j.cube_id == cube_id
                        and j.user_id == user_id), None)
        if running is not None:  # the same user asking again follows the same job
            return running
        job = Job(uuid.uuid4().hex[:12], "replay", cube_id, user_id)

        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        # the service's checks and admission, now (a refusal is the request's answer, not a failed job)
        replaying = await self.service.start_replay(cube_id, user_id=user_id, progress=progress)
        self.jobs = {k: v for k, v in self.jobs.items() if v.status == "running"} | {job.job_id: job}

        async def run() -> None:
            try:
                applied = await asyncio.shield(replaying)
                job.result, job.status = {"events_applied": applied}, "completed"
            except Exception as exc:  # reported on the job, not lost
                logger.exception("console replay failed cube=%s", cube_id)
                job.error, job.status = f"{type(exc).__name__}: {exc}", "failed"

        job_task = asyncio.create_task(run(), name=f"console:replay:{cube_id}")
        self._running.add(job_task)  # keep a reference until it finishes
        job_task.add_done_callback(self._running.discard)
        return job

    def job(self, user_id: str, job_id: str) -> Job:
        """A job the user started; NotFound otherwise."""
        job = self.jobs.get(job_id)
        if job is None or job.user_id != user_id:
            raise NotFound(f"job {job_id!r} not found", field="job_id")
        return job


def _row(r: MemoryRecord) -> dict[str, Any]:
    return {"id": r.id, "memory": r.memory, "memory_type": r.memory_type, "created_at": r.created_at,
            "updated_at": r.updated_at, "extractor": r.extractor, "revision": r.revision, "status": r.status,
            "key": r.key}


def _brief(records: dict[str, MemoryRecord], memory_id: str) -> dict[str, Any]:
    r = records.get(memory_id)
    return {"id": memory_id, "memory": r.memory if r else None, "status": r.status if r else "unknown"}
