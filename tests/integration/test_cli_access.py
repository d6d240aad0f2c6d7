"""Cubes through the CLI: `memos cubes list` shows owned and shared cubes, an unknown cube is an error for
replay and tail, and an unreadable cube answers exactly like an unknown one (real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], home: Path, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MEMOS_HOME": str(home), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "memos", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=240)
    if check and proc.returncode != 0:
        raise AssertionError(f"memos {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("cli_access")
    lines = [
        {"user_id": "ann", "cube_id": "ann_cube", "messages": "I'll choose 7 Days Inn."},
        {"user_id": "bob", "cube_id": "bob_cube", "messages": "I train for a marathon every Sunday."},
    ]
    path = home / "in.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    _run(["publish", str(path), "--wait"], home)
    _run(["users", "create", "carol"], home)
    _run(["cubes", "share", "ann_cube", "--owner", "ann", "--user", "bob", "--access", "read"], home)
    return home


def test_cubes_list_shows_owned_and_shared_cubes_with_the_access(home: Path) -> None:
    bob = json.loads(_run(["cubes", "list", "--user", "bob", "--json"], home).stdout)
    assert {(c["cube_id"], c["owner_id"], c["access"]) for c in bob} == {
        ("ann_cube", "ann", "read"), ("bob_cube", "bob", "owner")}
    ann = json.loads(_run(["cubes", "list", "--user", "ann", "--json"], home).stdout)
    assert [(c["cube_id"], c["access"]) for c in ann] == [("ann_cube", "owner")]
    carol = _run(["cubes", "list", "--user", "carol"], home)
    assert "user 'carol' has no cubes" in carol.stdout


def test_replay_of_an_unknown_cube_fails_and_names_it(home: Path) -> None:
    proc = _run(["replay", "--cube", "no_such_cube"], home, check=False)
    assert proc.returncode == 2
    assert "no_such_cube" in proc.stderr and "replayed" not in proc.stdout


def test_tail_of_an_unknown_cube_fails_instead_of_waiting(home: Path) -> None:
    proc = _run(["tail", "--cube", "no_such_cube", "--from-beginning"], home, check=False)
    assert proc.returncode == 2
    assert "no_such_cube" in proc.stderr


def test_a_shared_cube_is_readable_by_the_user_it_was_shared_with(home: Path) -> None:
    found = json.loads(_run(["search", "Which hotel?", "--user", "bob", "--cube", "ann_cube", "--json"], home).stdout)
    texts = [m["memory"] for bucket in found.values() if isinstance(bucket, list)
             for group in bucket for m in group.get("memories", [])]
    assert any("7 Days Inn" in t for t in texts), found


def test_plain_add_and_search_print_lines_that_the_json_says(home: Path) -> None:
    """Without --json: one line per memory (the add's type and text; the search's bucket, cube, relativity and
    text, in rank order), the same memories as the JSON answer."""
    added = _run(["add", "My sister lives in Porto.", "--user", "ann", "--cube", "ann_cube", "--mode", "fast"], home)
    assert added.stdout.splitlines()[0] == "ann_cube: completed"
    assert any("Porto" in line for line in added.stdout.splitlines()[1:]), added.stdout
    query = ["search", "Where does my sister live?", "--user", "ann", "--cube", "ann_cube"]
    plain = _run(query, home).stdout.splitlines()
    found = json.loads(_run([*query, "--json"], home).stdout)
    expected = [f"{bucket:<9} {group['cube_id']} {m['metadata']['relativity']:.3f} {m['memory']}"
                for bucket, groups in found.items() if isinstance(groups, list)
                for group in groups for m in group.get("memories", [])]
    assert plain == expected and any("Porto" in line for line in plain), (plain, expected)


@pytest.mark.parametrize("command", [
    ["search", "hotel", "--user", "carol", "--cube", "{cube}"],
    ["get", "--user", "carol", "--cube", "{cube}"],
    ["tail", "--user", "carol", "--cube", "{cube}", "--from-beginning"],
    ["replay", "--user", "carol", "--cube", "{cube}"],
], ids=lambda c: c[0])
def test_an_unreadable_cube_answers_like_an_unknown_one(home: Path, command: list[str]) -> None:
    unreadable = _run([a.format(cube="ann_cube") for a in command], home, check=False)
    unknown = _run([a.format(cube="no_such_cube") for a in command], home, check=False)
    assert unreadable.returncode == unknown.returncode == 2
    assert unreadable.stdout == unknown.stdout == ""
    assert unreadable.stderr.replace("ann_cube", "CUBE") == unknown.stderr.replace("no_such_cube", "CUBE")
    assert "CUBE" in unknown.stderr.replace("no_such_cube", "CUBE")
