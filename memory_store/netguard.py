"""Address policy for fetches on a caller's behalf: public addresses only, checked after resolution, pinned.

A host passes when every address it resolves to is public: not loopback, private, link-local (the
cloud metadata range included), multicast, reserved, unspecified, shared (CGNAT) or otherwise
non-global, whatever notation the URL used (``2130706433``, ``0x7f000001``, ``127.1``, ``0177.0.0.1``
and ``[::ffff:127.0.0.1]`` all resolve to 127.0.0.1 and are refused). IPv6 addresses that embed an IPv4
address (mapped, 6to4, Teredo, NAT64) are judged by the embedded address too. An explicit allow-list
(host names or networks) admits internal hosts.

The checked address is pinned for the request: :class:`GuardedBackend` (an httpcore network backend)
connects only to an address pinned for the current fetch, or to an allow-listed host (a proxy), so a
DNS answer that changes between the check and the connection (rebinding) cannot reach anything else.
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import logging
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import httpcore

__all__ = [
    "METADATA_NETWORKS",
    "AddressPolicy",
    "GuardedBackend",
    "Refused",
    "blocked_address",
    "pin",
    "pinned",
]

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]

METADATA_NETWORKS: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("169.254.0.0/16"),  # AWS, GCP, Azure, OpenStack metadata (link-local)
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud metadata
    ipaddress.ip_network("fd00:ec2::/32"),  # AWS IPv6 metadata
)
"""Cloud instance metadata ranges; refused even where another rule would let them pass."""

_NAT64 = ipaddress.ip_network("64:ff9b::/96")

pinned: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "memos_fetch_pinned", default=None
)
"""Host -> checked address for the fetch running in this context (set by the fetcher, read on connect)."""


class Refused(Exception):
    """A host or address the policy refuses; the message is for the server log, never for the caller."""


def blocked_address(ip: IPAddress) -> str | None:
    """Why ``ip`` may not be fetched from (``None``: it is a public address)."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None]
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        for inner in embedded:
            if inner is not None and (why := blocked_address(inner)) is not None:
                return f"embeds {inner} which {why}"
    if any(ip in net for net in METADATA_NETWORKS if net.version == ip.version):
        return "is in a cloud metadata range"
    for name in ("loopback", "private", "link_local", "multicast", "reserved", "unspecified"):
        if getattr(ip, f"is_{name}"):
            return f"is {name.replace('_', '-')}"
    if not ip.is_global:
        return "is not a global address"
    return None


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Public addresses only, plus ``allow_hosts``: host names (exact, case-insensitive) or networks (CIDR)."""

    allow_hosts: tuple[str, ...] = ()
    names: frozenset[str] = field(init=False)
    networks: tuple[IPNetwork, ...] = field(init=False)

    def __post_init__(self) -> None:
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in self.allow_hosts:
            entry = entry.strip().lower().strip("[]")
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(entry.rstrip("."))
        object.__setattr__(self, "names", frozenset(names))
        object.__setattr__(self, "networks", tuple(networks))

    @classmethod
    def of(cls, allow_hosts: Iterable[str] = ()) -> AddressPolicy:
        """A policy with the given allow-list."""
        return cls(tuple(allow_hosts))

    def host_allowed(self, host: str) -> bool:
        """True when ``host`` is on the allow-list by name, or is an address literal inside an allowed network."""
        host = host.strip().lower().strip("[]").rstrip(".")
        if host in self.names:
            return True
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return self._in_networks(ip)

    def _in_networks(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self.networks if net.version == ip.version)

    async def check(self, host: str, port: int) -> str:
        """Resolve ``host`` and return the address to connect to. Raises Refused (reason in the message)."""
        key = host.strip().lower().strip("[]").rstrip(".")
        if not key:
            raise Refused("no host")
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(key, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise Refused(f"{host!r} does not resolve: {exc}") from exc
        addresses = list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))
        if not addresses:
            raise Refused(f"{host!r} resolves to no address")
        by_name = key in self.names
        for text in addresses:
            ip = ipaddress.ip_address(text)
            why = blocked_address(ip)
            if why is not None and not by_name and not self._in_networks(ip):
                raise Refused(f"{host!r} resolves to {ip}, which {why}")
        return addresses[0]


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to pinned (checked) addresses or allow-listed hosts."""

    def __init__(self, policy: AddressPolicy, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.policy = policy
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        table = pinned.get() or {}
        key = host.strip().lower().strip("[]").rstrip(".")
        target = table.get(key)
        if target is None:
            if not self.policy.host_allowed(key):
                logger.warning("fetch connection refused host=%s: not checked for this fetch", host)
                raise httpcore.ConnectError(f"connection to {host!r} was not checked")
            target = key
        return await self.inner.connect_tcp(
            target, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are never fetched from")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def pin(hosts: Sequence[tuple[str, str]]) -> contextvars.Token[dict[str, str] | None]:
    """Pin ``(host, address)`` pairs for the current context; returns the token to reset."""
    table = dict(pinned.get() or {})
    for host, address in hosts:
        table[host.strip().lower().strip("[]").rstrip(".")] = address
    return pinned.set(table)
