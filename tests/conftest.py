"""Shared fixtures: isolated MEMOS_HOME, unique names, engine URLs; network to the outside blocked."""

from __future__ import annotations

import ipaddress
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class OutsideNetwork(RuntimeError):
    """A test tried to reach beyond loopback."""


def _loopback_only(address: Any) -> None:
    if not isinstance(address, tuple) or not address:
        return  # AF_UNIX paths and other families stay on the machine
    host = str(address[0]).split("%", 1)[0]
    if host == "localhost" or host.endswith(".localhost"):
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise OutsideNetwork(f"tests may only connect to loopback, not {address!r}")


_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _loopback_only(address)
    _connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _loopback_only(address)
    return _connect_ex(self, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
"""The socket guard: every connection made by the test process goes to loopback (engines, test servers) or
fails with OutsideNetwork. Child processes a test starts (CLI runs, examples) are not covered; those
point their proxies at a closed local port instead."""


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
