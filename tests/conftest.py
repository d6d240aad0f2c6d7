"""Shared fixtures: isolated MEMOS_HOME, unique names, engine URLs; network to the outside blocked."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def memos_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh data directory, also exported as MEMOS_HOME."""
    home = tmp_path / "memos_home"
    home.mkdir()
    monkeypatch.setenv("MEMOS_HOME", str(home))
    yield home


@pytest.fixture
def unique() -> str:
    """A unique suffix for topics, groups, cubes and graph namespaces."""
    return uuid.uuid4().hex[:10]
