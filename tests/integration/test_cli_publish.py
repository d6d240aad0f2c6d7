"""`memos publish` checks every line (UTF-8, JSON, shape, identifiers, text, size) before it publishes any,
naming each bad line; a bad file is a list of one-line errors, never a traceback, and leaves the log empty."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memos.application.limits import MAX_ADD_RECORD_BYTES
from memos.cli_publish import PublishFileInvalid, read_publish_file

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"user_id": "ann", "cube_id": "ann_cube", "messages": [{"role": "user", "content": "I'll choose 7 Days Inn."}]}


def _line(**changes: object) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


def _problems(tmp_path: Path, *lines: bytes) -> list[str]:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(PublishFileInvalid) as info:
        read_publish_file(path)
    return info.value.problems


def test_a_good_file_parses_every_line_and_skips_blank_ones(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + _line() + b"\r\n\n" + _line(messages="My sister lives in Porto.", mode="fine"))
    lines = read_publish_file(path)
    assert [line.cube_id for line in lines] == ["ann_cube", "ann_cube"]
    assert lines[1].message_list() == [{"role": "user", "content": "My sister lives in Porto."}]
    assert lines[1].mode == "fine"


def test_every_bad_line_is_named_with_its_problem(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        _line(),
        b'{"user_id": "ann", "cube_id": ',
        json.dumps({"user_id": "ann", "messages": "no cube"}).encode(),
        _line(messages=[{"role": "user", "content": "caf\u00e9"}]).replace(b"caf\\u00e9", b"caf\xe9"),
        _line(messages=[{"role": "user", "content": "lone \ud800 surrogate"}]),
        _line(cube_id="ann cube"),
        b"[1, 2, 3]",
        _line(mode="slow"),
        _line(messages=[{"role": "user", "content": "tea", "chat_time": "t" * 300}]),
        _line(custom_tags=["x" * 300]),
    )
    text = "\n".join(problems)
    assert not any(p.startswith("line 1:") for p in problems), text
    assert any(p.startswith("line 2: not JSON") for p in problems), text
    assert any(p.startswith("line 3: field 'cube_id'") for p in problems), text
    assert any(p.startswith("line 4: not UTF-8 (byte 0xe9") for p in problems), text
    assert any(p.startswith("line 5:") and "surrogate" in p for p in problems), text
    assert any(p.startswith("line 6:") and "cube_id" in p for p in problems), text
    assert any(p.startswith("line 7: must be a JSON object") for p in problems), text
    assert any(p.startswith("line 8: field 'mode'") for p in problems), text
    assert any(p.startswith("line 9: messages.0.chat_time is 300 characters long") for p in problems), text
    assert any(p.startswith("line 10: custom_tags.0 is 300 characters long") for p in problems), text


def test_a_line_over_the_add_limit_is_refused_naming_the_limit(tmp_path: Path) -> None:
    big = _line(messages=[{"role": "user", "content": "a" * MAX_ADD_RECORD_BYTES}])
    problems = _problems(tmp_path, _line(), big)
    assert len(problems) == 1
    assert problems[0].startswith("line 2: ") and f"add limit of {MAX_ADD_RECORD_BYTES:,} bytes" in problems[0]


def test_a_line_just_under_the_limit_passes(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(_line(messages=[{"role": "user", "content": "a" * (MAX_ADD_RECORD_BYTES - 4096)}]))
    assert len(read_publish_file(path)) == 1


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    assert "holds no conversation" in _problems(tmp_path, b"", b"  ")[0]


def _publish(path: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MEMOS_HOME": str(home), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "memos", "publish", str(path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)


def test_a_bad_line_anywhere_publishes_nothing_and_prints_no_traceback(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = tmp_path / "in.jsonl"
    oversized = _line(messages=[{"role": "user", "content": "b" * MAX_ADD_RECORD_BYTES}])
    path.write_bytes(b"\n".join([_line(), _line(cube_id="other_cube"), oversized]) + b"\n")
    proc = _publish(path, home)
    assert proc.returncode == 2
    assert "line 3:" in proc.stderr and "add limit" in proc.stderr
    assert "nothing published: 1 problem(s)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (home / "log.db").exists()  # the runtime (which creates the log) never started


def test_a_file_that_is_not_utf8_is_one_line_per_bad_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = tmp_path / "latin1.jsonl"
    content = json.dumps({**GOOD, "messages": "Caf\u00e9 au lait"}, ensure_ascii=False).encode("latin-1")
    path.write_bytes(content)
    proc = _publish(path, home)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    refused = [line for line in proc.stderr.splitlines() if line.startswith("refused:")]
    column = content.index(b"\xe9") + 1
    assert refused == [f"refused: line 1: not UTF-8 (byte 0xe9 at column {column})"]
    assert not (home / "log.db").exists()


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    proc = _publish(tmp_path / "nope.jsonl", tmp_path / "home")
    assert proc.returncode == 2
    assert "cannot read" in proc.stderr and "Traceback" not in proc.stderr


def test_a_line_the_service_refuses_is_named_with_what_was_published_before_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join([_line(), _line(user_id="bob"), _line(user_id="ann", cube_id="ann_other")]))
    proc = _publish(path, home)  # bob may not write ann's cube: a rule of the service, not of the file
    assert proc.returncode == 2
    assert "refused: line 2:" in proc.stderr and "ann_cube" in proc.stderr
    assert "published 1 conversation(s) before line 2; lines 2-3 were not published" in proc.stderr
    assert "Traceback" not in proc.stderr
