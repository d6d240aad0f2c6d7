"""Composition-root helpers for the command line: the faust worker host and the tiny KV-cache model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from memos.runtime import Runtime
from schemas.errors import ConfigError
from streams.settings import AppSettings

__all__ = ["make_tiny_model", "run_faust_worker"]


def run_faust_worker(settings: AppSettings, *, stage_names: Sequence[str] | None = None,
                     group_prefix: str | None = None) -> None:
    """Host the stages in a faust-streaming app over the configured Kafka log until interrupted
    (``group_prefix`` None: ``log.group_prefix``)."""
    from streams.pipeline.faust_app import run_faust_worker as run_app

    run_app(settings, lambda: Runtime(settings, run_stages=False), stage_names=stage_names,
            group_prefix=group_prefix)


def make_tiny_model(directory: str | Path, *, arch: str = "llama") -> Path:
    """Write a small random-weight causal LM with a real tokenizer (``memory_store.kv.tiny``); ConfigError
    for an unknown architecture."""
    from memory_store.kv.tiny import make_tiny_model as make

    if arch not in ("llama", "qwen2"):
        raise ConfigError(f"tiny model architecture must be llama or qwen2, not {arch!r}")
    return make(directory, arch="llama" if arch == "llama" else "qwen2")
