"""The HTTP server: ``create_app`` builds the FastAPI app whose lifespan owns the Runtime."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from memos.application.errors import describe, retry_after, status_of
from memos.application.service import MemoryService
from memos.runtime import Runtime
from memos.server.auth import AuthMiddleware, KeyAuthenticator, is_loopback
from memos.server.docs import install_docs
from memos.server.metrics import Metrics, MetricsMiddleware
from memos.server.routes_product import ChatFn
from schemas.errors import ConfigError, MemorySystemError
from streams.settings import AppSettings, load_settings

if TYPE_CHECKING:
    from memos.server.derivation_process import DerivationProcess

__all__ = ["BackgroundServer", "BodyLimitMiddleware", "create_app", "error_body"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def error_body(status: int, message: str) -> dict[str, Any]:
    """The MemOS envelope of an error: ``{code, message, data: null}``."""
    return {"code": status, "message": message, "data": None}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message), status_code=status, headers=headers)


def _where(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "body"


def _problem(error: Any) -> str:
    if error.get("type") == "json_invalid":
        return (
            f"field 'body': {error.get('msg', 'invalid JSON')} at position {list(error.get('loc', ()))[-1]}"
        )
    return f"field {_where(error.get('loc', ()))!r}: {error.get('msg', 'invalid')}"


def _pydantic_message(errors: list[Any]) -> str:
    problems = [_problem(e) for e in errors[:10]]
    more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
    return "invalid request: " + "; ".join(problems) + more


def _failure(exc: BaseException) -> JSONResponse:
    """An error of the tree as ``{code, message, data}`` with the one status map of the application layer."""
    status = status_of(exc)
    if status >= 500 and status not in (503, 504):
        logger.error("request failed error_type=%s error=%s", type(exc).__name__, exc)
    wait = retry_after(exc)
    body = error_body(status, describe(exc) if str(exc) else "timed out waiting for the pipeline")
    body["data"] = getattr(exc, "data", None)
    return JSONResponse(body, status_code=status, headers={"Retry-After": str(wait)} if wait else None)


def install_error_handlers(app: FastAPI) -> None:
    """Every error becomes ``{code, message, data}`` (data: null, or what still happens, e.g. the task ids of
    a timed-out add) with a 4xx for anything the caller got wrong and Retry-After where the error says."""

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _pydantic_message(list(exc.errors())))

    @app.exception_handler(ValidationError)
    async def _model_invalid(_: Request, exc: ValidationError) -> JSONResponse:
        return _error(422, _pydantic_message(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}) or None)

    @app.exception_handler(MemorySystemError)
    async def _domain(_: Request, exc: MemorySystemError) -> JSONResponse:
        return _failure(exc)

    @app.exception_handler(TimeoutError)
    async def _timeout(_: Request, exc: TimeoutError) -> JSONResponse:
        return _failure(exc)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error error_type=%s", type(exc).__name__)
        return _error(500, f"internal error ({type(exc).__name__}); see the server log")


class BodyLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with 413, whether or not Content-Length is sent."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, int(declared))
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send, size)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, size: int) -> None:
        response = _error(
            413, f"request body of {size} bytes or more is over the limit of {self.max_bytes} bytes"
        )
        await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def freeze_heap() -> None:
    """Move every object alive now (models, tokenizer tables, settings) out of the collector's generations.

    A full collection otherwise walks them all, pausing every thread for tens of milliseconds under load
    (measured: 84 ms). Frozen objects are still freed by reference counting when dropped; only a reference
    cycle among them would never be collected, and what is alive after start-up lives as long as the server.
    """
    gc.collect()
    gc.freeze()
    logger.info("heap frozen objects=%d", gc.get_freeze_count())


def create_app(
    settings: AppSettings | None = None, *, runtime: Runtime | None = None, chat: ChatFn | None = None,
    own_process: bool = False, stage_names: set[str] | None = None, derivation: DerivationProcess | None = None,
) -> FastAPI:
    """The HTTP server app. With settings, the lifespan starts a Runtime and closes it at shutdown.

    A ``runtime`` passed in must belong to the loop the server runs on; it is started if needed and
    left open. ``chat`` answers ``/product/chat/*`` (without it they answer 501); it can also be set
    later as ``app.state.chat``. Local-only mode is refused unless ``settings.server.host`` is loopback.
    ``own_process`` (``memos serve``): the process is the server's alone, so process-wide tuning
    (``server.freeze_heap``) may be applied once it has started. ``stage_names``: the stages the runtime
    started from ``settings`` hosts (None: all; the others run elsewhere); ``derivation``: the child process
    hosting them, started once the runtime is and stopped before it closes.
    """
    from memos.console import router as console_router
    from memos.server.routes_product import router as product_router
    from memos.server.routes_scheduler import router as scheduler_router
    from memos.server.routes_v1 import router as v1_router

    settings = runtime.settings if runtime is not None else (settings or load_settings())
    if settings.server.local_only and not is_loopback(settings.server.host):
        raise ConfigError(
            f"local-only mode (no API keys) is refused on the non-loopback address "
            f"{settings.server.host!r}; bind to 127.0.0.1 or use API keys"
        )
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = runtime or Runtime(settings, stage_names=stage_names)
        await rt.start()
        app.state.runtime = rt
        app.state.service = MemoryService(rt)
        app.state.auth = KeyAuthenticator(app.state.service)
        app.state.loop = asyncio.get_running_loop()
        metrics.start_token_watch(app.state.service)
        if derivation is not None:
            derivation.start()
        if own_process and settings.server.freeze_heap:
            freeze_heap()
        logger.info("server started home=%s local_only=%s", settings.home, settings.server.local_only)
        try:
            yield
        finally:
            await metrics.stop()
            if derivation is not None:
                await asyncio.to_thread(derivation.stop)
            if runtime is None:
                await rt.aclose()

    app = FastAPI(
        title="memos",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        description="MemOS-compatible memory API over an event-sourced log. Authenticate with "
        "'Authorization: Bearer mk_...' or 'X-API-Key'.",
    )
    install_docs(app)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.chat = chat
    install_error_handlers(app)
    app.include_router(product_router)
    app.include_router(scheduler_router)
    app.include_router(v1_router)
    app.include_router(console_router)  # the web console: /console pages, /v1/console data
    # outermost last: metrics see every request, auth runs before any body is read
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.server.max_body_bytes)
    app.add_middleware(AuthMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


class BackgroundServer:
    """Serves an app with uvicorn on a daemon thread (tests, notebooks): ``start()``, ``url``, ``stop()``."""

    def __init__(
        self, app: FastAPI, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ) -> None:
        import uvicorn

        self.app = app
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=log_level,
            loop="asyncio",
            lifespan="on",
            timeout_graceful_shutdown=3,
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="memos-http", daemon=True)
        self.host = host
        self.port = port

    def start(self, *, timeout_s: float = 180.0) -> BackgroundServer:
        """Start and wait until the server accepts connections; RuntimeError if it fails to start."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the HTTP server failed to start; see the log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the HTTP server did not start in {timeout_s}s")
            self._thread.join(0.05)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:54321."""
        return f"http://{self.host}:{self.port}"

    def call(self, coro: Coroutine[Any, Any, T], *, timeout_s: float | None = 300.0) -> T:
        """Run a coroutine on the server's loop (e.g. a MemoryService call) and return its result."""
        loop: asyncio.AbstractEventLoop = self.app.state.loop
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout_s)

    def stop(self, *, timeout_s: float = 30.0) -> None:
        """Ask the server to exit (open streams are closed after the grace period) and join it."""
        self.server.should_exit = True
        self._thread.join(timeout_s)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
