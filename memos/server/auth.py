"""API-key authentication and the acting user of a request (keys, admin override, local-only mode)."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from memos.application.errors import KeyChecksBusy, retry_after, status_of
from memos.application.ids import check_id
from memos.application.service import MemoryService
from schemas.errors import PermissionDenied, ValidationFailed

__all__ = [
    "PUBLIC_PATHS",
    "PUBLIC_PREFIXES",
    "AuthMiddleware",
    "Caller",
    "KeyAuthenticator",
    "acting_user",
    "api_key_from_headers",
    "get_caller",
    "is_loopback",
    "reject",
    "resolve_caller",
    "unauthorized",
]

logger = logging.getLogger(__name__)

KEY_HELP = (
    "send 'Authorization: Bearer mk_...' or 'X-API-Key: mk_...' (issue one with `memos keys issue USER`)"
)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: a key's user, or nobody in particular (local-only mode without a key)."""

    user_id: str | None
    """The key's user; None in local-only mode, where the request names its user."""
    key_id: str | None = None
    role: Literal["user", "admin", "local"] = "user"

    @property
    def is_admin(self) -> bool:
        """Admins may act for any user (a request's user_id wins)."""
        return self.role == "admin"


def is_loopback(host: str | None) -> bool:
    """Whether a host name or address is a loopback address (127.0.0.0/8, ::1, localhost)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def unauthorized(message: str) -> HTTPException:
    """A 401 with the Bearer challenge."""
    return HTTPException(status_code=401, detail=message, headers={"WWW-Authenticate": "Bearer"})


def api_key_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    """The API key of a request: 'Authorization: Bearer <key>' or 'X-API-Key: <key>'."""
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        raise unauthorized(f"unsupported Authorization header; {KEY_HELP}")
    return None


@dataclass(slots=True)
class _Cached:
    caller: Caller
    checked_at: float


class KeyAuthenticator:
    """Verifies API keys against the hashed keys of the control store.

    scrypt is deliberately slow, so a verified key is remembered (by its SHA-256) for ``ttl_s``;
    revocation and forgotten users still take effect on the next request, because every request
    re-reads the key's row (a cheap indexed query).
    """

    def __init__(self, service: MemoryService, *, ttl_s: float = 300.0, max_entries: int = 10_000) -> None:
        self.service = service
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._cache: dict[str, _Cached] = {}

    async def authenticate(self, api_key: str) -> Caller | None:
        """The caller a key belongs to; None for unknown, malformed or revoked keys."""
        digest = hashlib.sha256(api_key.encode("utf-8", "replace")).hexdigest()
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached is not None and now - cached.checked_at < self.ttl_s:
            if await self._still_active(cached.caller):
                return cached.caller
            self._cache.pop(digest, None)
            return None
        parts = api_key.split("_", 2)
        if len(parts) != 3 or parts[0] != "mk" or not parts[1] or not parts[2]:
            return None
        user_id = await self.service.authenticate(api_key)
        if user_id is None:
            return None
        caller = Caller(user_id=user_id, key_id=parts[1], role=await self._role(user_id))
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
        self._cache[digest] = _Cached(caller, now)
        return caller

    async def _still_active(self, caller: Caller) -> bool:
        assert caller.user_id is not None and caller.key_id is not None
        return await self.service.key_active(caller.user_id, caller.key_id)

    async def _role(self, user_id: str) -> Literal["user", "admin"]:
        return "admin" if await self.service.is_admin(user_id) else "user"


PUBLIC_PATHS = frozenset({"/healthz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/console"})
"""Paths served without a key: liveness and the API's documentation (no data)."""
PUBLIC_PREFIXES = ("/console/", "/docs/assets/")
"""Path prefixes served without a key: the console's page shell and assets (no data; its data is under
/v1/console and needs a key like every other route)."""


async def resolve_caller(state: Any, headers: Mapping[str, str], client_host: str | None) -> Caller:
    """The caller of a request; 401 without a valid key unless local-only (loopback clients only)."""
    key = api_key_from_headers(headers.get("authorization"), headers.get("x-api-key"))
    if key is not None:
        caller: Caller | None = await state.auth.authenticate(key)
        if caller is None:
            raise unauthorized("invalid or revoked API key")
        return caller
    if state.settings.server.local_only:
        if not is_loopback(client_host):
            raise PermissionDenied(f"local-only server refuses the non-loopback client {client_host!r}")
        return Caller(user_id=None, role="local")
    raise unauthorized(f"missing API key; {KEY_HELP}")


class AuthMiddleware:
    """Authenticates every request but the public paths before its body is read; the caller goes to
    ``request.state.caller``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path") or ""
        if scope["type"] != "http" or path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        client = scope.get("client")
        try:
            caller = await resolve_caller(scope["app"].state, headers, client[0] if client else None)
        except HTTPException as exc:
            await reject(scope, receive, send, exc.status_code, str(exc.detail), exc.headers)
            return
        except (PermissionDenied, KeyChecksBusy) as exc:  # 403; 429 (key checks are bounded)
            wait = retry_after(exc)
            await reject(scope, receive, send, status_of(exc), str(exc), {"Retry-After": str(wait)} if wait else None)
            return
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)


async def reject(
    scope: Scope, receive: Receive, send: Send, status: int, message: str, headers: Mapping[str, str] | None
) -> None:
    """Answer an ASGI request with the error body every front end uses (``{code, message, data}``)."""
    response = JSONResponse(
        {"code": status, "message": message, "data": None},
        status_code=status,
        headers=dict(headers) if headers else None,
    )
    await response(scope, receive, send)


async def get_caller(request: Request) -> Caller:
    """FastAPI dependency: the caller the middleware authenticated (or authenticate now)."""
    caller: Caller | None = getattr(request.state, "caller", None)
    if caller is not None:
        return caller
    return await resolve_caller(
        request.app.state, request.headers, request.client.host if request.client else None
    )


def acting_user(caller: Caller, user_id: str | None, *, field: str = "user_id") -> str:
    """The user a request acts as: the key's user (an admin may name another), or the named user locally."""
    named = check_id(user_id, field) if user_id else None
    if caller.user_id is None:
        if not named:
            raise ValidationFailed(
                f"{field} is required (local-only mode has no API key to name the user)", field=field
            )
        return named
    if named and named != caller.user_id:
        if caller.is_admin:
            return named
        raise PermissionDenied(f"the API key belongs to user {caller.user_id!r}, not {named!r}", field=field)
    return caller.user_id
