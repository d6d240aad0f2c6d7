"""Tiny random-weight models shared by the KV tests (built once per session, offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from memory_store.kv.tiny import make_tiny_model


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(
        tmp_path_factory.mktemp("models") / "tiny-llama", arch="llama", layers=2, hidden=64
    )


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(
        tmp_path_factory.mktemp("models") / "tiny-qwen2", arch="qwen2", layers=2, hidden=64
    )


def _load(path: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="session")
def tiny_llama(tiny_llama_dir: Path) -> tuple[Any, Any]:
    return _load(tiny_llama_dir)


@pytest.fixture(scope="session")
def tiny_qwen2(tiny_qwen2_dir: Path) -> tuple[Any, Any]:
    return _load(tiny_qwen2_dir)
