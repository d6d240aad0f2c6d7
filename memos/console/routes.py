"""The web console's routes: a public page shell and assets at /console, key-checked fragments at /v1/console.

The shell holds no data: the browser keeps the API key (sessionStorage, or localStorage when asked)
and fetches every fragment with ``Authorization: Bearer``, so the key never appears in a URL and the
fragments pass the same authentication middleware and the same application-layer checks as the API.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Annotated, Any, Literal, get_args
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from memos.application.ids import MAX_IDS_PER_REQUEST
from memos.application.inspect import CONTEXT_WORDS, Inspector
from memos.application.limits import MAX_PAGE
from memos.application.service import MemoryService
from memos.server.auth import Caller, acting_user, get_caller
from schemas.errors import NotFound
from schemas.events import MemoryType

__all__ = ["CONSOLE_PREFIX", "router"]

logger = logging.getLogger(__name__)

CONSOLE_PREFIX = "/console"
"""Pages (public shell) and static assets live under this path; their data under ``/v1/console``."""

router = APIRouter(include_in_schema=False)
CallerDep = Annotated[Caller, Depends(get_caller)]
CubeId = Annotated[str, Path(min_length=1, max_length=256)]
MemoryId = Annotated[str, Path(min_length=1, max_length=256)]

_STATIC = resources.files("memos.console") / "static"


@dataclass(frozen=True, slots=True)
class _Asset:
    """A static file read once: its bytes, their gzip, and a content hash (ETag and URL version)."""

    body: bytes
    gzipped: bytes
    media_type: str
    version: str

    @classmethod
    def read(cls, name: str, media_type: str) -> _Asset:
        body = (_STATIC / name).read_bytes()
        return cls(body, gzip.compress(body, 9, mtime=0), media_type, hashlib.sha256(body).hexdigest()[:16])


_ASSETS = {name: _Asset.read(name, media_type) for name, media_type in
           (("console.js", "text/javascript; charset=utf-8"), ("console.css", "text/css; charset=utf-8"))}
_IMMUTABLE = "public, max-age=31536000, immutable"
"""Asset URLs carry the content hash (``?v=``): the browser keeps them and asks again only for a new build."""


def _when(value: Any) -> str:
    """A time to the second (datetimes and ISO strings); anything else as given."""
    when: datetime | None = value if isinstance(value, datetime) else None
    if isinstance(value, str) and value:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return value
    if when is None:
        return str(value or "")
    return when.strftime("%Y-%m-%d %H:%M:%S %Z").replace("UTC+00:00", "UTC").strip()


def _num(value: Any, digits: int = 3) -> str:
    return "" if value is None else f"{float(value):.{digits}f}"


_env = Environment(loader=PackageLoader("memos.console", "templates"), autoescape=select_autoescape(["html"]),
                   trim_blocks=True, lstrip_blocks=True)
_env.filters["when"] = _when
_env.filters["num"] = _num
_env.filters["seg"] = lambda value: quote(str(value), safe="")


_GRAPH_NODES = 200
"""Nodes the graph page draws by default: a readable sample that loads quickly in a cube of any size."""
_GZIP_FROM = 1024
"""Fragments this large or larger go gzipped to a browser that takes gzip (tables shrink about 8x)."""


def _render(request: Request, name: str, **context: Any) -> HTMLResponse:
    """A fragment, gzipped when worth it and accepted."""
    body = _env.get_template(name).render(**context).encode()
    headers = {"Cache-Control": "no-store", "Vary": "Accept-Encoding"}
    if len(body) >= _GZIP_FROM and "gzip" in request.headers.get("accept-encoding", ""):
        body = gzip.compress(body, 5, mtime=0)
        headers["Content-Encoding"] = "gzip"
    return HTMLResponse(body, headers=headers)


_SHELL = _env.get_template("shell.html").render(
    css=f"{CONSOLE_PREFIX}/static/console.css?v={_ASSETS['console.css'].version}",
    js=f"{CONSOLE_PREFIX}/static/console.js?v={_ASSETS['console.js'].version}")
_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
"""Everything the console loads comes from this server: the browser refuses anything else."""


def _inspector(request: Request) -> Inspector:
    """The app's Inspector, made on first use over the app's MemoryService."""
    service: MemoryService = request.app.state.service
    inspector: Inspector | None = getattr(request.app.state, "console_inspector", None)
    if inspector is None or inspector.service is not service:
        inspector = Inspector(service)
        request.app.state.console_inspector = inspector
    return inspector


# --- public: the shell and its assets (no data) -------------------------------------------------------


@router.get(CONSOLE_PREFIX + "/static/{name}")
async def asset(request: Request, name: str, v: Annotated[str, Query(max_length=64)] = "") -> Response:
    """An asset of the console (served by the package; no CDN): cached for good under its versioned URL,
    revalidated by ETag otherwise, gzipped when the browser takes it."""
    found = _ASSETS.get(name)
    if found is None:
        raise NotFound(f"no console asset {name!r}", field="name")
    etag = f'"{found.version}"'
    headers = {"ETag": etag, "Vary": "Accept-Encoding", "X-Content-Type-Options": "nosniff",
               "Cache-Control": _IMMUTABLE if v == found.version else "no-cache"}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(found.gzipped, media_type=found.media_type, headers={**headers, "Content-Encoding": "gzip"})
    return Response(found.body, media_type=found.media_type, headers=headers)


@router.get(CONSOLE_PREFIX)
@router.get(CONSOLE_PREFIX + "/{page:path}")
async def shell(request: Request, page: str = "") -> HTMLResponse:
    """The page shell of every console URL; its script fetches the page's fragment with the key.

    Serving it also starts folding the log into the console's digest in the background (no data is
    read out here), so the first key-checked page does not pay for it."""
    if hasattr(request.app.state, "service"):
        _inspector(request).warm()
    return HTMLResponse(_SHELL, headers={"Cache-Control": "no-cache", "Content-Security-Policy": _CSP,
                                         "X-Content-Type-Options": "nosniff"})


# --- key-checked fragments and actions --------------------------------------------------------------


@router.get("/v1/console/whoami")
async def whoami(caller: CallerDep) -> dict[str, Any]:
    """Who the key belongs to."""
    return {"user_id": acting_user(caller, None), "role": caller.role}


@router.get("/v1/console/cubes", response_class=HTMLResponse)
async def cubes(request: Request, caller: CallerDep) -> HTMLResponse:
    """Cubes the caller may read."""
    user = acting_user(caller, None)
    inspector = _inspector(request)
    listed = await inspector.cubes(user)
    counting = any(c.counts is None for c in listed)
    return _render(request, "cubes.html", user=user, cubes=listed, counting=counting,
                   progress=inspector.digest_progress() if counting else None)


@router.get("/v1/console/cubes/{cube_id}/memories", response_class=HTMLResponse)
async def memories(
    request: Request, caller: CallerDep, cube_id: CubeId,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
    memory_type: Annotated[str, Query(alias="type", max_length=64)] = "",
    status: Literal["activated", "retired", "all"] = "activated",
    q: Annotated[str, Query(max_length=500)] = "",
    extractor: Annotated[str, Query(max_length=128)] = "",
) -> HTMLResponse:
    """A page of a cube's memories."""
    user = acting_user(caller, None)
    result = await _inspector(request).memories(user, cube_id, page=page, page_size=page_size,
                                                memory_type=memory_type or None, status=status, text=q,
                                                extractor=extractor)
    filters = {"type": memory_type, "status": status, "q": q, "extractor": extractor}
    return _render(request, "memories.html", cube_id=cube_id, result=result, filters=filters,
                   types=_MEMORY_TYPES, access=await _inspector(request).access(user, cube_id))


@router.get("/v1/console/cubes/{cube_id}/memories/{memory_id}", response_class=HTMLResponse)
async def memory(request: Request, caller: CallerDep, cube_id: CubeId, memory_id: MemoryId) -> HTMLResponse:
    """One memory and its lineage."""
    user = acting_user(caller, None)
    lineage = await _inspector(request).lineage(user, cube_id, memory_id)
    return _render(request, "memory.html", cube_id=cube_id, lineage=lineage, access=await _inspector(request).access(user, cube_id))


@router.get("/v1/console/cubes/{cube_id}/graph", response_class=HTMLResponse)
async def graph(request: Request, caller: CallerDep, cube_id: CubeId,
                limit: Annotated[int, Query(ge=1, le=2000)] = _GRAPH_NODES) -> HTMLResponse:
    """The cube's graph, drawn by the page script from the embedded JSON (``?limit=`` shows more nodes)."""
    user = acting_user(caller, None)
    data = await _inspector(request).graph(user, cube_id, limit=limit)
    payload = {"nodes": data.nodes, "edges": data.edges}
    return _render(request, "graph.html", cube_id=cube_id, graph=data, payload=payload)


@router.get("/v1/console/search", response_class=HTMLResponse)
async def search(request: Request, caller: CallerDep,
                 q: Annotated[str, Query(max_length=2000)] = "",
                 cube: Annotated[list[str] | None, Query()] = None,
                 top_k: Annotated[int, Query(ge=1, le=50)] = 10) -> HTMLResponse:
    """The search playground: results with relativity and score parts, and the model context."""
    user = acting_user(caller, None)
    inspector = _inspector(request)
    readable = [c.cube_id for c in await inspector.readable(user)]
    chosen = list(dict.fromkeys(cube or readable[:MAX_IDS_PER_REQUEST]))  # by default the first the door allows
    result = await inspector.playground(user, chosen, q, top_k=top_k) if q.strip() and chosen else None
    return _render(request, "search.html", q=q, readable=readable, chosen=chosen, top_k=top_k, result=result,
                   budget=CONTEXT_WORDS)


@router.get("/v1/console/feed", response_class=HTMLResponse)
async def feed(request: Request, caller: CallerDep) -> HTMLResponse:
    """The live feed page; the script follows /v1/feed from the cursor (kept across reloads)."""
    user = acting_user(caller, None)
    inspector = _inspector(request)
    cubes = [c.cube_id for c in await inspector.readable(user)]
    return _render(request, "feed.html", cubes=cubes, cursor=await inspector.feed_cursor(user) if cubes else "")


@router.get("/v1/console/tasks", response_class=HTMLResponse)
async def tasks(request: Request, caller: CallerDep,
                cube: Annotated[str, Query(max_length=256)] = "") -> HTMLResponse:
    """Tasks of the readable cubes and their status."""
    user = acting_user(caller, None)
    rows = await _inspector(request).tasks(user, cube_id=cube or None)
    return _render(request, "tasks.html", tasks=rows, cube=cube)


@router.get("/v1/console/usage", response_class=HTMLResponse)
async def usage(request: Request, caller: CallerDep) -> HTMLResponse:
    """Model calls and tokens per model and per cube, from the log."""
    user = acting_user(caller, None)
    inspector = _inspector(request)
    usage_rows = await inspector.usage(user)
    if usage_rows is None:
        return _render(request, "usage.html", rows=[], per_model={}, progress=inspector.digest_progress())
    rows = usage_rows
    per_model: dict[tuple[str, str], dict[str, int]] = {}
    for r in rows:
        total = per_model.setdefault((r.model_id, r.kind), {"calls": 0, "prompt": 0, "completion": 0})
        total["calls"] += r.calls
        total["prompt"] += r.prompt_tokens
        total["completion"] += r.completion_tokens
    return _render(request, "usage.html", rows=rows, per_model=per_model, progress=None)


@router.post("/v1/console/cubes/{cube_id}/memories/{memory_id}/delete")
async def delete(request: Request, caller: CallerDep, cube_id: CubeId, memory_id: MemoryId) -> dict[str, Any]:
    """Retire one memory."""
    user = acting_user(caller, None)
    retired = await _inspector(request).delete(user, cube_id, memory_id)
    return {"retired": retired}


@router.post("/v1/console/cubes/{cube_id}/replay")
async def replay(request: Request, caller: CallerDep, cube_id: CubeId) -> JSONResponse:
    """Start a replay of the cube; poll /v1/console/jobs/{job_id} for progress."""
    user = acting_user(caller, None)
    job = await _inspector(request).start_replay(user, cube_id)
    return JSONResponse({"job_id": job.job_id, "status": job.status}, status_code=202)


@router.get("/v1/console/jobs/{job_id}")
async def job(request: Request, caller: CallerDep, job_id: Annotated[str, Path(max_length=64)]) -> dict[str, Any]:
    """Progress of a job the caller started."""
    user = acting_user(caller, None)
    j = _inspector(request).job(user, job_id)
    return {"job_id": j.job_id, "kind": j.kind, "cube_id": j.cube_id, "status": j.status, "done": j.done,
            "total": j.total, "result": j.result, "error": j.error}


@router.post("/v1/console/cubes/{cube_id}/forget")
async def forget(request: Request, caller: CallerDep, cube_id: CubeId) -> dict[str, Any]:
    """Forget a cube: every trace, from every projection and the log (owner only)."""
    user = acting_user(caller, None)
    await _inspector(request).forget(user, cube_id)
    return {"forgotten": cube_id}


_MEMORY_TYPES: tuple[str, ...] = get_args(MemoryType)

