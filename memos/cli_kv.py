"""KV cache commands of the `memos` CLI: `kv-worker` (the KV-cache warmer as a consumer group on the log)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import typer

from memos.cli import CONFIG, app, console, run, settings

if TYPE_CHECKING:
    from streams.settings import AppSettings

__all__ = ["kv_worker", "kv_worker_settings"]

logger = logging.getLogger(__name__)

KV_STAGE = "kv-warmer"


def kv_worker_settings(settings: AppSettings, **changes: object) -> AppSettings:
    """``settings`` with KV warming enabled and the given ``kv`` fields (None values ignored) changed."""
    update = {k: v for k, v in changes.items() if v is not None}
    return settings.model_copy(update={"kv": settings.kv.model_copy(update={"enabled": True, **update})})


@app.command("kv-worker")
def kv_worker(
    config: str | None = CONFIG,
    model: str | None = typer.Option(
        None, help="Cache model (default: kv.model, e.g. tiny://llama or a folder)."
    ),
    device: str | None = typer.Option(
        None, help="cpu, cuda, cuda:1 (default: kv.device; empty: CUDA when present)."
    ),
    budget_bytes: int | None = typer.Option(
        None, help="Byte budget shared by all cubes (default: kv.budget_bytes)."
    ),
    prefix_tokens: int | None = typer.Option(
        None, help="Memory prefix budget per cube (default: kv.prefix_tokens)."
    ),
) -> None:
    """Keep each cube's most important memories warm as a KV cache (consumer group 'kv-warmer').

    Follows mem_update tasks and memory changes, appends KVCacheWarmed/KVCacheEvicted to
    memos.activation.v1 and dumps every warm cache under $MEMOS_HOME/kv/<cube>/ for chat processes.
    Runs until interrupted; the batch in flight is finished and committed.
    """
    loaded = kv_worker_settings(
        settings(config), model=model, device=device, budget_bytes=budget_bytes, prefix_tokens=prefix_tokens
    )

    async def go() -> None:
        import asyncio
        import signal

        from memos.runtime import Runtime
        from schemas.errors import ConfigError

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with Runtime(loaded, stage_names={KV_STAGE}) as rt:
            stage = rt.kv_warmer
            if stage is None:  # pragma: no cover - kv is enabled above
                raise ConfigError("the kv-warmer stage was not started")
            await stage.ready.wait()
            if stage.failure is not None:
                raise stage.failure
            device = stage.llm.device if stage.llm is not None else loaded.kv.device
            console().print(
                f"kv-worker running on {loaded.log_url()}: model={stage.model_id} device={device} "
                f"budget_bytes={loaded.kv.budget_bytes} prefix_tokens={loaded.kv.prefix_tokens} (Ctrl-C to stop)",
                highlight=False,
            )
            await stop.wait()

    try:
        run(go())
    except KeyboardInterrupt:  # pragma: no cover - the signal handler normally catches it
        pass
    console().print("kv-worker stopped: batches finished and committed")
