"""Evidence for bench.scale: CPU-seconds per worker process (/proc) and each consumer group's partitions per member."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CpuMeter", "cpu_seconds", "group_assignments"]

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU-seconds a process used so far (its own threads; None when it is gone or not Linux)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14 and 15 of proc(5))


@dataclass
class CpuMeter:
    """CPU-seconds of some processes between ``start`` and ``stop`` (taken while they are still alive)."""

    pids: Sequence[int]
    started: dict[int, float] = field(default_factory=dict)
    used: dict[int, float] = field(default_factory=dict)

    def start(self) -> None:
        """Take the starting reading."""
        self.started = {pid: cpu_seconds(pid) or 0.0 for pid in self.pids}

    def stop(self) -> dict[int, float]:
        """CPU-seconds each process used since ``start``."""
        self.used = {pid: round((cpu_seconds(pid) or 0.0) - self.started.get(pid, 0.0), 2) for pid in self.pids}
        return self.used


async def group_assignments(servers: str, groups: Sequence[str]) -> dict[str, dict[str, list[str]]]:
    """group -> member client id -> ["topic/partition", ...] as the broker's group coordinator has them now."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    out: dict[str, dict[str, list[str]]] = {}
    try:
        for name in groups:  # one group per request: noida-db garbles a response that describes several
            try:
                responses = await admin.describe_consumer_groups([name])
            except Exception as exc:  # noqa: BLE001 - evidence only: say what failed, measure on
                out[name] = {"error": [repr(exc)[:200]]}
                continue
            for group in responses[0].groups:
                members: dict[str, list[str]] = {}
                for member in _members(group):
                    raw = member["assignment"]
                    parts: list[str] = []
                    if raw:
                        decoded = ConsumerProtocolMemberAssignment.decode(raw)
                        parts = [f"{topic}/{p}" for topic, ps in decoded.assignment for p in sorted(ps)]
                    members[f"{member['client_id']}:{member['member_id'][-6:]}"] = sorted(parts)
                out[name] = members
    finally:
        await admin.close()
    return out


def _members(group: Any) -> list[dict[str, Any]]:
    """The members of one DescribeGroups entry (error, group, state, protocol type, protocol, members, ...)."""
    out = []
    for member in group[5]:
        out.append({"member_id": member[0], "client_id": member[-4], "client_host": member[-3],
                    "assignment": member[-1]})
    return out
