"""Server commands of the `memos` CLI: `serve` (HTTP API) and `mcp` (MCP over stdio or HTTP)."""

from __future__ import annotations

import asyncio
import logging
import os

import typer

from memos.cli import CONFIG, _settings, app, err
from memos.server.auth import is_loopback
from schemas.errors import ConfigError, MemorySystemError
from streams.settings import AppSettings

__all__ = ["main", "mcp", "serve"]

logger = logging.getLogger(__name__)


def _server_settings(config: str | None, **changes: object) -> AppSettings:
    settings = _settings(config)
    server = settings.server.model_copy(update={k: v for k, v in changes.items() if v is not None})
    return settings.model_copy(update={"server": server})


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

    settings = _server_settings(config, host=host, port=port, local_only=True if local_only else None)
    if settings.server.local_only and not is_loopback(settings.server.host):
        err.print(f"[red]refused:[/red] --local-only needs a loopback address, not {settings.server.host!r}")
        raise typer.Exit(2)
    try:
        api = create_app(settings)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    uvicorn.run(
        api,
        host=settings.server.host,
        port=settings.server.port,
        log_level=log_level,
        timeout_graceful_shutdown=5,
        loop="asyncio",
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
    from memos.server.mcp import serve_mcp

    if transport not in ("stdio", "http"):
        err.print(f"[red]error:[/red] --transport must be stdio or http, not {transport!r}")
        raise typer.Exit(2)
    key = api_key or os.environ.get("MEMOS_API_KEY") or None
    try:
        asyncio.run(
            serve_mcp(
                _settings(config),
                transport=transport,  # type: ignore[arg-type]
                user_id=user,
                api_key=key,
                host=host,
                port=port,
                local_only=local_only,
            )
        )
    except MemorySystemError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        pass


def main() -> None:
    """Run the `memos` CLI with the server commands registered (for callers that bypass memos.cli)."""
    app()
