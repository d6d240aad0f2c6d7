"""`memos` starts light: importing the CLI or printing help loads no model, web or array library, and
every command's --help runs (real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "fastapi", "numpy", "memos.runtime", "memos.application", "memory_store")
"""Modules `memos --help` must not import: models, the web server, arrays, the runtime and the layers below."""

PROBE = """
import json, sys
{setup}
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def _loaded(setup: str) -> list[str]:
    code = PROBE.format(setup=setup, heavy=HEAVY)
    env = {**os.environ, "COLUMNS": "120"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded: list[str] = json.loads(proc.stdout.strip().splitlines()[-1])
    return loaded


def test_importing_the_cli_loads_no_heavy_module() -> None:
    assert _loaded("import memos.cli") == []


def test_help_loads_no_heavy_module() -> None:
    setup = (
        "import contextlib, io\n"
        "from memos.cli import app\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try:\n"
        "        app(['--help'])\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, exc.code\n"
        "assert 'publish' in out.getvalue() and 'cubes' in out.getvalue(), out.getvalue()\n"
    )
    assert _loaded(setup) == []


def _commands() -> list[list[str]]:
    import typer.main

    from memos.cli import app

    group = typer.main.get_command(app)
    found: list[list[str]] = []
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        sub = getattr(command, "commands", None)
        if sub:
            found.extend([name, s] for s in sub)
        else:
            found.append([name])
    return found


def test_the_command_tree_holds_what_the_readme_uses() -> None:
    names = {" ".join(c) for c in _commands()}
    assert {"publish", "tail", "replay", "status", "worker", "serve", "mcp", "kv-worker", "cubes list",
            "cubes create", "cubes share", "users create", "keys issue", "models make-tiny", "forget"} <= names


@pytest.mark.parametrize("command", _commands(), ids=" ".join)
def test_every_command_help_runs(command: list[str]) -> None:
    env = {**os.environ, "COLUMNS": "120"}
    proc = subprocess.run([sys.executable, "-m", "memos", *command, "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"Usage: python -m memos {' '.join(command)}" in proc.stdout
