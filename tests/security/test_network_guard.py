"""The suite stays on the machine, and the test engines listen on loopback only."""

from __future__ import annotations

import ipaddress
import os
import socket
import urllib.parse
from pathlib import Path

import pytest

from tests.conftest import OutsideNetwork


@pytest.mark.parametrize("address", [("93.184.216.34", 80), ("10.0.0.1", 9092), ("::ffff:8.8.8.8", 53, 0, 0)])
def test_the_socket_guard_refuses_anything_but_loopback(address: tuple[object, ...]) -> None:
    family = socket.AF_INET6 if ":" in str(address[0]) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock, pytest.raises(OutsideNetwork):
        sock.connect(address)
    with socket.socket(family, socket.SOCK_STREAM) as sock, pytest.raises(OutsideNetwork):
        sock.connect_ex(address)


def test_the_socket_guard_lets_loopback_through() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass


def _listening() -> dict[int, set[str]]:
    """Listening TCP ports of this machine and the addresses they are bound to (from /proc/net)."""
    out: dict[int, set[str]] = {}
    for name, size in (("tcp", 4), ("tcp6", 16)):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state != "0A":  # LISTEN
                continue
            host_hex, port_hex = local.split(":")
            raw = bytes.fromhex(host_hex)
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            out.setdefault(int(port_hex, 16), set()).add(str(ipaddress.ip_address(words[:size])))
    return out


def _is_loopback(text: str) -> bool:
    ip = ipaddress.ip_address(text)
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


@pytest.mark.parametrize(
    "variable", ["MEMOS_TEST_KAFKA_URL", "MEMOS_TEST_FALKORDB_URL", "MEMOS_TEST_BOLT_URL"]
)
def test_the_test_engines_listen_on_loopback_only(variable: str) -> None:
    url = os.environ.get(variable)
    if not url:
        pytest.skip(f"{variable} is not set (engines not started by infra/)")
    port = urllib.parse.urlsplit(url).port
    assert port is not None, url
    bound = _listening().get(port)
    if not bound:
        pytest.skip(f"nothing listens on port {port} here")
    assert all(_is_loopback(address) for address in bound), f"port {port} listens on {sorted(bound)}"
