"""The backbone on the embedded default through the CLI: publish, tail, replay, status (real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MEMOS = [sys.executable, "-m", "memos"]


def _run(args: list[str], home: Path, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MEMOS_HOME": str(home), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    proc = subprocess.run([*MEMOS, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    if check and proc.returncode != 0:
        raise AssertionError(f"memos {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("cli_home")
    lines = [
        {"user_id": "ann", "cube_id": "cube_a", "mode": "fast",
         "messages": [{"role": "user", "content": "I moved to Lisbon in March and adopted a cat named Miso."},
                      {"role": "assistant", "content": "Lisbon is lovely; how is Miso settling in?"}]},
        {"user_id": "ann", "cube_id": "cube_a", "mode": "fast", "messages": "My sister Ana lives in Porto."},
        {"user_id": "bob", "cube_id": "cube_b", "mode": "fast",
         "messages": [{"role": "user", "content": "I train for a marathon every Sunday morning."}]},
    ]
    path = home / "in.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    out = _run(["publish", str(path), "--wait"], home)
    assert "published 3 conversation event(s)" in out.stdout
    return home


def _tail(home: Path, *extra: str) -> list[dict]:
    out = _run(["tail", "--json", "--no-follow", *extra], home)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def test_publish_then_tail_from_beginning_returns_memory_events_with_positions(published: Path) -> None:
    events = _tail(published, "--from-beginning")
    added = [e for e in events if e["event"]["event_type"] == "MemoryAdded"]
    assert {e["event"]["cube_id"] for e in added} == {"cube_a", "cube_b"}
    assert any("Lisbon" in e["event"]["memory"] for e in added)
    for e in events:
        assert e["position"]["topic"] == "memos.memories.v1"
        assert e["cursor"]
    per_partition: dict[int, list[int]] = {}
    for e in events:
        per_partition.setdefault(e["position"]["partition"], []).append(e["position"]["offset"])
    assert all(offsets == sorted(offsets) for offsets in per_partition.values())


def test_plain_tail_lines_carry_the_cursor_and_edges_name_their_ends(published: Path) -> None:
    events = _tail(published, "--from-beginning")
    lines = _run(["tail", "--no-follow", "--from-beginning"], published).stdout.splitlines()
    assert len(lines) == len(events)
    for line, item in zip(lines, events, strict=True):
        assert f"cursor={item['cursor']} {item['event']['event_type']}" in line
        if item["event"]["event_type"] == "RelationAdded":
            assert f"{item['event']['source_id']} -{item['event']['relation']}-> {item['event']['target_id']}" in line


def test_tail_filters_by_cube_and_resumes_exactly_from_a_cursor(published: Path) -> None:
    all_a = _tail(published, "--from-beginning", "--cube", "cube_a")
    assert all_a and all(e["event"]["cube_id"] == "cube_a" for e in all_a)
    first = _tail(published, "--from-beginning", "--cube", "cube_a", "--limit", "1")
    assert len(first) == 1
    rest = _tail(published, "--cube", "cube_a", "--cursor", first[0]["cursor"])
    assert [e["position"] for e in first + rest] == [e["position"] for e in all_a]


def test_tail_from_offset_skips_earlier_records(published: Path) -> None:
    everything = _tail(published, "--from-beginning", "--cube", "cube_a")
    later = _tail(published, "--from-offset", "1", "--cube", "cube_a")
    assert [e["position"] for e in later] == [e["position"] for e in everything if e["position"]["offset"] >= 1]


def test_replay_rebuilds_the_same_memories(published: Path) -> None:
    before = json.loads(_run(["get", "--user", "ann", "--cube", "cube_a", "--json"], published).stdout)
    out = _run(["replay", "--cube", "cube_a"], published)
    assert "replayed cube 'cube_a'" in out.stdout
    after = json.loads(_run(["get", "--user", "ann", "--cube", "cube_a", "--json"], published).stdout)
    assert before and after == before


def test_status_reports_topics_and_zero_lag_after_a_synchronous_publish(published: Path) -> None:
    report = json.loads(_run(["status", "--json"], published).stdout)
    assert sum(report["topics"]["memos.conversations.v1"].values()) == 3
    assert report["lag"]["deriver"]["memos.conversations.v1"] == 0
    assert report["lag"]["projector"]["memos.memories.v1"] == 0
    assert report["cubes"] == 2


def test_publish_refuses_a_bad_file_naming_the_field_and_writes_nothing(published: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"user_id": "ann", "cube_id": "cube_a", "messages": "ok"}) + "\n"
                   + json.dumps({"user_id": "ann", "messages": "no cube"}) + "\n")
    before = json.loads(_run(["status", "--json"], published).stdout)["topics"]
    proc = _run(["publish", str(bad)], published, check=False)
    assert proc.returncode == 2
    assert "line 2" in proc.stderr and "cube_id" in proc.stderr
    after = json.loads(_run(["status", "--json"], published).stdout)["topics"]
    assert after == before


def test_export_then_import_is_idempotent(published: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cube_a_export"
    _run(["export", str(folder), "--user", "ann", "--cube", "cube_a"], published)
    lines = (folder / "textual_memory.jsonl").read_text().splitlines()
    assert lines and (folder / "config.json").is_file()
    first = _run(["import", str(folder), "--user", "ann", "--cube", "cube_a_copy"], published)
    assert f"imported {len(lines)} memories" in first.stdout
    again = _run(["import", str(folder), "--user", "ann", "--cube", "cube_a_copy"], published)
    assert "imported 0 memories" in again.stdout
    copied = json.loads(_run(["get", "--user", "ann", "--cube", "cube_a_copy", "--json"], published).stdout)
    original = json.loads(_run(["get", "--user", "ann", "--cube", "cube_a", "--json"], published).stdout)
    assert sorted(m["memory"] for m in copied) == sorted(m["memory"] for m in original)
