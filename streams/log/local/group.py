"""Consumer groups of the embedded log: membership, liveness and partition ownership in SQLite."""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from streams.log.base import TopicPartition

__all__ = [
    "GroupView",
    "assign_partitions",
    "commit_offsets",
    "count_attempt",
    "heartbeat",
    "leave_group",
    "live_processes",
    "sync_member",
    "topic_state",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GroupView:
    """A member's view after a sync: what it owns now, what it should own, and where to start."""

    generation: int
    topology: int
    rejoined: bool
    owned: frozenset[TopicPartition]
    desired: frozenset[TopicPartition]
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    ends: dict[TopicPartition, int] = field(default_factory=dict)


def assign_partitions(
    members: Sequence[tuple[str, frozenset[str]]], partitions: Mapping[str, int]
) -> dict[str, set[TopicPartition]]:
    """Spread every partition over the members subscribed to its topic, least-loaded first.

    Deterministic: every member computes the same assignment from the same member list.
    """
    order = {member: i for i, (member, _) in enumerate(members)}
    load = dict.fromkeys(order, 0)
    out: dict[str, set[TopicPartition]] = {member: set() for member in order}
    for topic in sorted(partitions):
        subscribers = [member for member, topics in members if topic in topics]
        for partition in range(partitions[topic]):
            if not subscribers:
                break
            chosen = min(subscribers, key=lambda m: (load[m], order[m]))
            out[chosen].add((topic, partition))
            load[chosen] += 1
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _in(n: int) -> str:
    return ",".join("?" * n)


def topic_state(
    conn: sqlite3.Connection, topics: Sequence[str]
) -> tuple[int, dict[str, int], dict[TopicPartition, int]]:
    """(topology version, partition counts, end offsets) of the given topics."""
    topology = conn.execute("SELECT value FROM log_meta WHERE name = 'topology'").fetchone()[0]
    counts = dict(
        conn.execute(f"SELECT topic, partitions FROM log_topics WHERE topic IN ({_in(len(topics))})", topics)
    )
    ends = {
        (t, p): n
        for t, p, n in conn.execute(
            f"SELECT topic, partition, next_offset FROM log_partitions WHERE topic IN ({_in(len(topics))})",
            topics,
        )
    }
    return int(topology), counts, ends


def _bump(conn: sqlite3.Connection, group: str) -> None:
    conn.execute("UPDATE log_groups SET generation = generation + 1 WHERE group_id = ?", (group,))


def sync_member(
    conn: sqlite3.Connection,
    *,
    group: str,
    member: str,
    topics: Sequence[str],
    session_timeout_s: float,
) -> GroupView:
    """Heartbeat, expire dead members, release partitions no longer ours and claim free ones (one txn)."""
    now_ms = int(time.time() * 1000)
    host, pid = socket.gethostname(), os.getpid()
    conn.execute("INSERT OR IGNORE INTO log_groups (group_id, generation) VALUES (?, 0)", (group,))
    cur = conn.execute(
        "UPDATE log_members SET heartbeat_ms = ?, topics = ? WHERE group_id = ? AND member_id = ?",
        (now_ms, json.dumps(sorted(topics)), group, member),
    )
    rejoined = cur.rowcount == 0
    changed = rejoined
    if rejoined:
        conn.execute(
            "INSERT INTO log_members (group_id, member_id, topics, host, pid, heartbeat_ms) VALUES (?, ?, ?, ?, ?, ?)",
            (group, member, json.dumps(sorted(topics)), host, pid, now_ms),
        )
    others = conn.execute(
        "SELECT member_id, host, pid, heartbeat_ms FROM log_members WHERE group_id = ? AND member_id <> ?",
        (group, member),
    ).fetchall()
    for other, other_host, other_pid, heartbeat_ms in others:
        expired = now_ms - heartbeat_ms > session_timeout_s * 1000
        gone = other_host == host and other_pid != pid and not _pid_alive(other_pid)
        if expired or gone:
            logger.info(
                "group member expired group=%s member=%s pid=%s gone=%s", group, other, other_pid, gone
            )
            conn.execute("DELETE FROM log_members WHERE group_id = ? AND member_id = ?", (group, other))
            conn.execute("DELETE FROM log_owners WHERE group_id = ? AND member_id = ?", (group, other))
            changed = True
    if changed:
        _bump(conn, group)
    members = [
        (m, frozenset(json.loads(t)))
        for m, t in conn.execute(
            "SELECT member_id, topics FROM log_members WHERE group_id = ? ORDER BY member_id", (group,)
        )
    ]
    wanted = sorted(set().union(*(t for _, t in members)))
    topology, counts, ends = topic_state(conn, wanted)
    desired = frozenset(assign_partitions(members, counts).get(member, set()))
    owned = {
        (t, p)
        for t, p in conn.execute(
            "SELECT topic, partition FROM log_owners WHERE group_id = ? AND member_id = ?", (group, member)
        )
    }
    for t, p in owned - desired:
        conn.execute(
            "DELETE FROM log_owners WHERE group_id = ? AND topic = ? AND partition = ?", (group, t, p)
        )
    for t, p in desired - owned:
        conn.execute(
            "INSERT OR IGNORE INTO log_owners (group_id, topic, partition, member_id) VALUES (?, ?, ?, ?)",
            (group, t, p, member),
        )
    now_owned = frozenset(
        (t, p)
        for t, p in conn.execute(
            "SELECT topic, partition FROM log_owners WHERE group_id = ? AND member_id = ?", (group, member)
        )
    )
    committed = {
        (t, p): o
        for t, p, o in conn.execute(
            "SELECT topic, partition, offset FROM log_group_offsets WHERE group_id = ?", (group,)
        )
        if (t, p) in now_owned
    }
    generation = conn.execute("SELECT generation FROM log_groups WHERE group_id = ?", (group,)).fetchone()[0]
    return GroupView(generation, topology, rejoined, now_owned, desired, committed, ends)


def live_processes(conn: sqlite3.Connection, group: str, session_timeout_s: float) -> list[tuple[str, int]]:
    """(host, pid) of the group's members that heartbeat within the session timeout (and, on this host, whose
    process is still alive)."""
    now_ms, host = int(time.time() * 1000), socket.gethostname()
    rows = conn.execute("SELECT host, pid, MAX(heartbeat_ms) FROM log_members WHERE group_id = ? "
                        "GROUP BY host, pid", (group,)).fetchall()
    return [(h, int(p)) for h, p, beat in rows
            if now_ms - beat <= session_timeout_s * 1000 and (h != host or _pid_alive(int(p)))]


def leave_group(conn: sqlite3.Connection, group: str, member: str) -> None:
    """Remove a member and free its partitions (the others claim them at their next poll)."""
    if conn.execute("DELETE FROM log_members WHERE group_id = ? AND member_id = ?", (group, member)).rowcount:
        conn.execute("DELETE FROM log_owners WHERE group_id = ? AND member_id = ?", (group, member))
        _bump(conn, group)


def heartbeat(conn: sqlite3.Connection, group: str, member: str) -> None:
    """Refresh a member's heartbeat (no rebalancing)."""
    conn.execute(
        "UPDATE log_members SET heartbeat_ms = ? WHERE group_id = ? AND member_id = ?",
        (int(time.time() * 1000), group, member),
    )


def commit_offsets(
    conn: sqlite3.Connection, group: str, member: str, offsets: Mapping[TopicPartition, int]
) -> list[TopicPartition]:
    """Upsert committed offsets of partitions this member owns; return the partitions it does not own."""
    skipped: list[TopicPartition] = []
    for (topic, partition), offset in offsets.items():
        owner = conn.execute(
            "SELECT member_id FROM log_owners WHERE group_id = ? AND topic = ? AND partition = ?",
            (group, topic, partition),
        ).fetchone()
        if owner is None or owner[0] != member:
            skipped.append((topic, partition))
            continue
        conn.execute(
            "INSERT INTO log_group_offsets (group_id, topic, partition, offset) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (group_id, topic, partition) DO UPDATE SET offset = excluded.offset",
            (group, topic, partition, int(offset)),
        )
    return skipped


def count_attempt(conn: sqlite3.Connection, group: str, topic: str, partition: int, offset: int) -> int:
    """Count one more attempt at the group's record at ``offset`` of a partition; returns the count.

    One row per (group, partition): a new offset starts again at 1, so the table never grows with the log.
    """
    row = conn.execute(
        "SELECT offset, attempts FROM log_group_attempts WHERE group_id = ? AND topic = ? AND partition = ?",
        (group, topic, partition),
    ).fetchone()
    attempts = int(row[1]) + 1 if row is not None and int(row[0]) == offset else 1
    conn.execute(
        "INSERT INTO log_group_attempts (group_id, topic, partition, offset, attempts) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (group_id, topic, partition) DO UPDATE SET offset = excluded.offset, "
        "attempts = excluded.attempts",
        (group, topic, partition, int(offset), attempts),
    )
    return attempts
