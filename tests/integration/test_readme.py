"""The README tells the truth: every path and `memos` command it names exists, and its Quick start snippet
and CLI sequence run as written (fresh $MEMOS_HOME) and show the answer."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BIN = Path(sys.executable).parent

PATH_LIKE = re.compile(r"^[\w.*-]+(/[\w.*<>-]*)*(\.(py|ya?ml|md|sh|avsc|json|toml|cfg|txt))?/?$")
NOT_PATHS = {"conversations.jsonl", "./.models/tiny-llama", "application/json"}
"""Paths the README's own commands create, and a media type."""


def _section(title: str) -> str:
    start = README.index(title)
    following = re.search(r"^#{2,3} ", README[start + len(title):], flags=re.M)
    return README[start: start + len(title) + following.start()] if following else README[start:]


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.S | re.M)


def _mentioned_paths() -> set[str]:
    """Backticked words and words in code blocks that name a file or folder of the repository."""
    words: set[str] = set()
    for text in [*re.findall(r"`([^`\n]+)`", README), *_blocks(README, r"\w*")]:
        words.update(text.split())
    paths = set()
    for word in words:
        word = word.strip("\"'(),;:")
        if not word or word.startswith(("http", "$", "~", "../", "-", "<", "memos.", "mk_")) or "://" in word:
            continue
        if word in NOT_PATHS or word.startswith(".venv/") or not PATH_LIKE.match(word):
            continue
        if "/" in word or re.search(r"\.(py|ya?ml|md|sh|avsc|toml)$", word):
            paths.add(word)
    return paths


def _exists(path: str) -> bool:
    if "<" in path:  # a template such as configs/<name>.yaml: its folder must exist
        return (ROOT / path.split("<")[0]).is_dir()
    if "*" in path:
        return any(ROOT.glob(path))
    if "/" not in path:  # a bare script name in a list (``02_multi_source_file.py``): examples/ or the root
        return (ROOT / "examples" / path).exists() or (ROOT / path).exists()
    return (ROOT / path).exists()


def test_the_readme_names_only_paths_that_exist() -> None:
    paths = _mentioned_paths()
    assert {"infra/compose.yaml", "infra/README.md", "examples/01_minimal_pipeline.py"} <= paths
    missing = sorted(p for p in paths if not _exists(p))
    assert missing == [], f"README names paths that do not exist: {missing}"


def test_the_readme_names_only_bench_modules_that_exist() -> None:
    modules = set(re.findall(r"python -m (bench\.\w+)", README))
    assert modules
    missing = sorted(m for m in modules if not (ROOT / (m.replace(".", "/") + ".py")).is_file())
    assert missing == []


def _memos_commands() -> set[tuple[str, ...]]:
    groups = {"users", "keys", "cubes", "models"}
    found: set[tuple[str, ...]] = set()
    for match in re.finditer(r"(?<![\w./-])memos ((?:[a-z][\w-]*)(?: [a-z][\w-]*)?)", README):
        words = match.group(1).split()
        found.add(tuple(words[:2]) if words[0] in groups and len(words) > 1 else (words[0],))
    return found


def test_the_readme_names_memos_commands() -> None:
    assert {("publish",), ("tail",), ("replay",), ("status",), ("cubes", "list"), ("serve",)} <= _memos_commands()


@pytest.mark.parametrize("command", sorted(_memos_commands()), ids=" ".join)
def test_every_memos_command_the_readme_names_has_help(command: tuple[str, ...]) -> None:
    proc = subprocess.run([sys.executable, "-m", "memos", *command, "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "120"})
    assert proc.returncode == 0, f"memos {' '.join(command)} --help: {proc.stderr}"


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "MEMOS_HOME": str(home), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "OMP_NUM_THREADS": "1", "COLUMNS": "200", "PYTHONPATH": str(ROOT)}


def test_the_quick_start_runs_as_written_and_prints_the_answer(tmp_path: Path) -> None:
    (snippet,) = _blocks(_section("## Quick start"), "python")
    proc = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, env=_env(tmp_path / "home"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    answers = [line for line in proc.stdout.splitlines() if "7 Days Inn" in line]
    assert answers, f"the Quick start printed no answer:\n{proc.stdout}"
    assert all(line.split(":", 1)[0] in ("text_mem", "pref_mem") for line in answers), proc.stdout


def test_the_cli_sequence_runs_as_written_and_shows_the_memories(tmp_path: Path) -> None:
    (script,) = _blocks(_section("### The log, replay and feeds (CLI)"), "bash")
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=_env(tmp_path / "home"),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    out = proc.stdout
    assert "published 2 conversation event(s)" in out
    tail_json = [line for line in out.splitlines() if line.startswith('{"position"')]
    assert any("7 Days Inn" in line for line in tail_json), out  # the first tail shows the memories
    assert any("Porto" in line for line in tail_json), out
    resumed = [line for line in out.splitlines() if line.startswith("memos.memories.v1[")]
    assert resumed and not any("@0 " in line for line in resumed), out  # --cursor 0:1: after the first event
    assert "replayed cube 'ann_cube'" in out
    assert "memos.memories.v1" in out and "consumer lag" in out  # memos status
    assert re.search(r"ann_cube .*ann .*owner", out), out  # memos cubes list


OFFICIAL_IMAGES = {
    "kafka": "apache/kafka",
    "neo4j": "neo4j",
    "weaviate": "cr.weaviate.io/semitechnologies/weaviate",
    "falkordb": "falkordb/falkordb",
}


def test_the_compose_file_pins_official_images_binds_loopback_and_checks_health() -> None:
    import yaml

    compose = yaml.safe_load((ROOT / "infra" / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert set(services) == set(OFFICIAL_IMAGES)
    infra_readme = (ROOT / "infra" / "README.md").read_text(encoding="utf-8")
    for name, service in services.items():
        repository, _, tag = service["image"].rpartition(":")
        assert repository == OFFICIAL_IMAGES[name]
        assert re.search(r"\d+\.\d+\.\d+", tag), f"{name}: image tag {tag!r} is not a pinned version"
        assert f"`{service['image']}`" in infra_readme, f"infra/README.md does not name {service['image']}"
        assert service["ports"] and all(p.startswith("127.0.0.1:") for p in service["ports"]), service["ports"]
        for port in service["ports"]:
            assert f"127.0.0.1:{port.split(':')[1]}" in infra_readme, f"infra/README.md lacks port {port}"
        assert service["healthcheck"]["test"], name
    kafka = services["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, one node
    assert kafka["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == 1  # transactions work on one node
