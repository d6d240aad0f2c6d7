"""The MCP server: add, search, delete and cubes tools over stdio or streamable HTTP, through the application layer.

Identity: over stdio, the user of the configured API key (or ``--user``). Over HTTP, every request
must carry an API key (``Authorization: Bearer`` or ``X-API-Key``) and tools act as its user, unless
the server runs local-only on a loopback address, where the configured user is used.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from memos.application.errors import describe, retry_after, status_of
from memos.application.ids import MAX_ID_CHARS
from memos.application.limits import MAX_QUERY_CHARS, MAX_TOP_K, DoorLimits
from memos.application.models import AddRequest, SearchRequest, build
from memos.application.service import MemoryService
from memos.runtime import Runtime
from memos.server.auth import KeyAuthenticator, is_loopback, reject
from schemas.errors import ConfigError, MemorySystemError
from streams.settings import AppSettings

__all__ = ["KeyGate", "build_mcp_server", "serve_mcp", "tool_error"]

logger = logging.getLogger(__name__)

Transport = Literal["stdio", "http"]


def _header_key(headers: Mapping[str, str] | None) -> str | None:
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    if lowered.get("x-api-key", "").strip():
        return lowered["x-api-key"].strip()
    scheme, _, token = lowered.get("authorization", "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def tool_error(exc: MemorySystemError) -> ToolError:
    """A tool error that carries the status of the one error map, e.g. '404: cube ... not found'."""
    return ToolError(f"{status_of(exc)}: {describe(exc)}")


def build_mcp_server(
    service: MemoryService, auth: KeyAuthenticator, *, default_user: str | None
) -> MCPServer:
    """An MCPServer whose tools act as the request's key's user, else as ``default_user``."""
    server: MCPServer = MCPServer(
        "memos",
        log_level="WARNING",
        instructions="Long-term memory: add, search and delete memories in "
        "cubes you own or that were shared with you.",
    )

    async def user_of(ctx: Context) -> str:
        key = _header_key(ctx.headers)
        if key is not None:
            try:
                caller = await auth.authenticate(key)
            except MemorySystemError as exc:  # KeyChecksBusy: 429
                raise tool_error(exc) from exc
            if caller is None or caller.user_id is None:
                raise ToolError("invalid or revoked API key")
            return caller.user_id
        if default_user is None:
            raise ToolError("an API key is required (Authorization: Bearer mk_... or X-API-Key)")
        return default_user

    @server.tool(
        name="add", description="Remember text (or chat messages) in a cube; returns the new memories."
    )
    async def add(
        ctx: Context,
        content: Annotated[
            str | list[dict[str, Any]], Field(description="Text, or OpenAI-style chat messages.")
        ],
        cube_id: Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS, description="Cube to write to.")],
        mode: Annotated[
            Literal["fast", "fine"], Field(description="fast: chunks; fine: extraction.")
        ] = "fast",
        session_id: Annotated[
            str, Field(max_length=256, description="Conversation session.")
        ] = "default_session",
    ) -> dict[str, Any]:
        user = await user_of(ctx)
        messages = [{"role": "user", "content": content}] if isinstance(content, str) else content
        try:
            request = build(AddRequest, user_id=user, cube_ids=(cube_id,), messages=messages, mode=mode,
                            session_id=session_id, async_mode="sync", origin="remote")
            [entry] = await service.add_memories(request)
        except MemorySystemError as exc:
            raise tool_error(exc) from exc
        return {"cube_id": entry.cube_id, "task_id": entry.task_id, "status": entry.status, "error": entry.error,
                "memories": entry.memories}

    @server.tool(name="search", description="Search memories of one or more cubes by meaning.")
    async def search(
        ctx: Context,
        query: Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS, description="What to look for.")],
        cube_ids: Annotated[list[str], Field(min_length=1, description="Cubes to search.")],
        top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K, description="Memories to return.")] = 10,
    ) -> dict[str, Any]:
        user = await user_of(ctx)
        try:
            request = build(SearchRequest, user_id=user, cube_ids=tuple(cube_ids), query=query, top_k=top_k)
            result: dict[str, Any] = await service.search_memories(request)
        except MemorySystemError as exc:
            raise tool_error(exc) from exc
        return result

    @server.tool(
        name="delete", description="Delete memories of one cube by id (ids of other cubes are errors)."
    )
    async def delete(
        ctx: Context,
        cube_id: Annotated[
            str, Field(min_length=1, max_length=MAX_ID_CHARS, description="Cube the memories are in.")
        ],
        memory_ids: Annotated[list[str], Field(min_length=1, description="Memory ids to delete.")],
    ) -> dict[str, Any]:
        user = await user_of(ctx)
        try:
            deleted = await service.delete(user, cube_id, memory_ids)
        except MemorySystemError as exc:
            raise tool_error(exc) from exc
        return {"cube_id": cube_id, "deleted_ids": deleted}

    @server.tool(name="cubes", description="The cubes you may use, with your access (owner, write, read).")
    async def cubes(ctx: Context) -> dict[str, Any]:
        user = await user_of(ctx)
        try:
            listed = await service.list_cubes(user)
        except MemorySystemError as exc:
            raise tool_error(exc) from exc
        return {"cubes": [{"cube_id": c.cube_id, "cube_name": c.cube_name, "owner_id": c.owner_id,
                           "access": c.access} for c in listed]}

    return server


SESSIONS_PER_USER: Final = DoorLimits().mcp_sessions_per_user
"""MCP sessions one user may hold open at once on the HTTP transport by default (``door.mcp_sessions_per_user``)."""
SESSION_IDLE_S: Final = DoorLimits().mcp_session_idle_s
"""An MCP session with no request for this long is closed by default (``door.mcp_session_idle_s``: the SDK's idle
timeout, and this count's)."""


class KeyGate:
    """ASGI guard of the MCP HTTP endpoint: 401 unless the request carries a valid API key (429 while key checks
    are bounded). A session belongs to the key that opened it (the SDK refuses it to any other key), and one
    user holds at most ``SESSIONS_PER_USER`` sessions, so no tenant can fill the server's table of them."""

    def __init__(self, app: ASGIApp, auth: KeyAuthenticator, *, required: bool,
                 per_user: int = SESSIONS_PER_USER, idle_s: float = SESSION_IDLE_S) -> None:
        self.app = app
        self.auth = auth
        self.required = required
        self.per_user = per_user
        self.idle_s = idle_s
        self._sessions: dict[str, tuple[str, str | None, float]] = {}  # session id -> (user, key id, last request)
        self._open: Counter[str] = Counter()  # session id -> its requests in flight (a GET stream lasts hours)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        key = _header_key(headers)
        try:
            caller = await self.auth.authenticate(key) if key else None
        except MemorySystemError as exc:  # KeyChecksBusy
            wait = retry_after(exc)
            await reject(scope, receive, send, status_of(exc), describe(exc), {"Retry-After": str(wait)} if wait else None)
            return
        if caller is None and (key or self.required):
            message = "invalid or revoked API key" if key else "missing API key (Authorization: Bearer mk_...)"
            await reject(scope, receive, send, 401, message, {"WWW-Authenticate": "Bearer"})
            return
        if caller is None or caller.user_id is None:  # local-only, no key
            await self.app(scope, receive, send)
            return
        user = caller.user_id
        scope["user"] = AuthenticatedUser(AccessToken(token="", client_id=user, scopes=[], subject=caller.key_id))
        session = headers.get(_SESSION_HEADER)
        now = time.monotonic()
        self._sessions = {s: v for s, v in self._sessions.items() if self._open[s] or now - v[2] < self.idle_s}
        if session is None:
            held = sum(1 for owner, _, _ in self._sessions.values() if owner == user)
            if self.per_user and held >= self.per_user:
                await reject(scope, receive, send, 429, f"user {user!r} has {held} MCP sessions open; at most "
                             f"{self.per_user} (close one with DELETE, or wait {self.idle_s:g}s)",
                             {"Retry-After": str(max(1, math.ceil(self.idle_s)))})
                return
        elif self._sessions.get(session, ("", None, 0.0))[:2] == (user, caller.key_id):  # only its own key's
            self._sessions[session] = (user, caller.key_id, now)
        else:
            session = ""  # not this user's: its answer (404) changes nothing here

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                opened = dict(message.get("headers") or []).get(_SESSION_HEADER.encode())
                if session is None and opened and message["status"] < 400:
                    self._sessions[opened.decode("latin-1")] = (user, caller.key_id, now)
                elif session and (message["status"] == 404 or scope.get("method") == "DELETE"):
                    self._sessions.pop(session, None)
            await send(message)

        if session:
            self._open[session] += 1
        try:
            await self.app(scope, receive, watch)
        finally:
            if session:  # idle from the end of its last request, however long that streamed
                self._open[session] -= 1
                if self._open[session] <= 0:
                    del self._open[session]
                if session in self._sessions:
                    self._sessions[session] = (*self._sessions[session][:2], time.monotonic())


_SESSION_HEADER: Final = "mcp-session-id"


async def serve_mcp(
    settings: AppSettings,
    *,
    transport: Transport = "stdio",
    user_id: str | None = None,
    api_key: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    local_only: bool = False,
) -> None:
    """Run the MCP server until it is stopped (stdin closes, or the HTTP server exits)."""
    if transport == "http" and local_only and not is_loopback(host):
        raise ConfigError(f"local-only MCP over HTTP is refused on the non-loopback address {host!r}")
    async with Runtime(settings) as rt:
        service = MemoryService(rt)
        auth = KeyAuthenticator(service)
        default_user: str | None = None
        if api_key:
            caller = await auth.authenticate(api_key)
            if caller is None:
                raise ConfigError("the MCP server's API key is invalid or revoked")
            default_user = caller.user_id
        elif user_id:
            if not await service.user_exists(user_id):
                raise ConfigError(f"user {user_id!r} does not exist (create it with `memos users create`)")
            default_user = user_id
        if transport == "stdio":
            if default_user is None:
                raise ConfigError("the stdio MCP server needs --api-key (or $MEMOS_API_KEY) or --user")
            await build_mcp_server(service, auth, default_user=default_user).run_stdio_async()
            return
        import uvicorn

        server = build_mcp_server(service, auth, default_user=default_user if local_only else None)
        door = service.limits
        app = KeyGate(server.streamable_http_app(host=host, session_idle_timeout=door.mcp_session_idle_s), auth,
                      required=not local_only, per_user=door.mcp_sessions_per_user, idle_s=door.mcp_session_idle_s)
        logger.info("mcp server listening host=%s port=%d local_only=%s", host, port, local_only)
        await uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", loop="asyncio")
        ).serve()
