"""Server commands of the `memos` CLI: `serve` (HTTP API) and `mcp` (MCP over stdio or HTTP)."""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

import typer

from memos.cli import CONFIG, app, fail, settings

if TYPE_CHECKING:
    from streams.settings import AppSettings

__all__ = ["main", "mcp", "serve"]

logger = logging.getLogger(__name__)


def _server_settings(config: str | None, **changes: object) -> AppSettings:
    loaded = settings(config)
    server = loaded.server.model_copy(update={k: v for k, v in changes.items() if v is not None})
    return loaded.model_copy(update={"server": server})


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (default: server.host, 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default: server.port, 8000)."),
    local_only: bool = typer.Option(
        False, "--local-only", help="No API keys: the request names its user. Loopback only."
    ),
    log_level: str = typer.Option("info", help="uvicorn log level."),
    config: str | None = CONFIG,
) -> None:
    """Run the HTTP API (MemOS routes, /v1/feed, /metrics, docs at /docs) with uvicorn."""
    import uvicorn

    from memos.server.app import create_app
    from memos.server.auth import is_loopback
    from schemas.errors import ConfigError

    loaded = _server_settings(config, host=host, port=port, local_only=True if local_only else None)
    if loaded.server.local_only and not is_loopback(loaded.server.host):
        raise fail(f"--local-only needs a loopback address, not {loaded.server.host!r}")
    child = None
    if loaded.server.derivation_process:
        from memos.server.derivation_process import SERVER_STAGES, DerivationProcess

        child = DerivationProcess.for_worker(config, niceness=loaded.server.derivation_niceness,
                                             log_path=loaded.home / "derivation.log")  # fmt: skip
    try:
        api = create_app(loaded, own_process=True, stage_names=set(SERVER_STAGES) if child else None,
                         derivation=child)  # fmt: skip
    except ConfigError as exc:
        raise fail(str(exc)) from exc
    sys.setswitchinterval(loaded.server.switch_interval_ms / 1000)
    uvicorn.run(
        api,
        host=loaded.server.host,
        port=loaded.server.port,
        log_level=log_level,
        timeout_graceful_shutdown=5,
        access_log=loaded.server.access_log,
        loop=loaded.server.event_loop,
        http=loaded.server.http,
    )


@app.command()
def mcp(
    transport: str = typer.Option("stdio", "--transport", help="stdio or http (streamable HTTP at /mcp)."),
    api_key: str | None = typer.Option(None, "--api-key", help="Act as this key's user ($MEMOS_API_KEY)."),
    user: str | None = typer.Option(None, "--user", help="Act as this user (stdio or --local-only)."),
    host: str = typer.Option("127.0.0.1", help="HTTP bind address."),
    port: int = typer.Option(8765, help="HTTP port."),
    local_only: bool = typer.Option(False, "--local-only", help="HTTP without keys, loopback only."),
    config: str | None = CONFIG,
) -> None:
    """Run the MCP server with add, search and delete tools."""
    import asyncio

    from memos.server.mcp import serve_mcp
    from schemas.errors import MemorySystemError

    if transport not in ("stdio", "http"):
        raise fail(f"--transport must be stdio or http, not {transport!r}")
    key = api_key or os.environ.get("MEMOS_API_KEY") or None
    try:
        asyncio.run(
            serve_mcp(
                settings(config),
                transport=transport,  # type: ignore[arg-type]
                user_id=user,
                api_key=key,
                host=host,
                port=port,
                local_only=local_only,
            )
        )
    except MemorySystemError as exc:
        raise fail(str(exc)) from exc
    except KeyboardInterrupt:
        pass


def main() -> None:
    """Run the `memos` CLI with the server commands registered (for callers that bypass memos.cli)."""
    app()
