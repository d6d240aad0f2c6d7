"""The seed examples run unchanged, as scripts from the repository root, offline, each on a fresh MEMOS_HOME.

Outbound HTTP goes to a closed local port (proxy variables), so Example 2's remote file and image cannot be
fetched: the add must still succeed, with memories that say so. Local models are shared between the runs
(one ``models`` folder) so the tiny model is built once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(1800)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CLOSED_PROXY = "http://127.0.0.1:9"


@dataclass(frozen=True)
class Run:
    """What a script did."""

    returncode: int
    stdout: str
    stderr: str

    def add_responses(self) -> list[str]:
        """The printed add responses (the text after each 'add_memories rsp:')."""
        body = self.stdout.split("search_rsp:")[0]
        return [part.strip() for part in body.split("add_memories rsp:")[1:]]

    def search_data(self) -> dict[str, Any]:
        """The printed search response ``data`` (JSON)."""
        data: dict[str, Any] = json.loads(self.stdout.split("search_rsp:", 1)[1].strip())
        return data


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One models folder for every run (the tiny model is created on first use)."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def run_example(tmp_path: Path, models_dir: Path) -> Iterator[Any]:
    """Run ``examples/<name>`` from the repository root; removes the outputs it leaves there."""
    home = tmp_path / "memos_home"
    home.mkdir()
    (home / "models").symlink_to(models_dir, target_is_directory=True)
    outputs = REPO / "outputs" / "mem_scheduler"
    before = set(outputs.iterdir()) if outputs.is_dir() else set()

    def run(name: str, stdin: str = "") -> Run:
        env = {
            **os.environ,
            "MEMOS_HOME": str(home),
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "HTTP_PROXY": CLOSED_PROXY,
            "HTTPS_PROXY": CLOSED_PROXY,
            "http_proxy": CLOSED_PROXY,
            "https_proxy": CLOSED_PROXY,
            "NO_PROXY": "",
            "no_proxy": "",
            "PYTHONPATH": str(REPO),
        }
        env.pop("MEMOS_CONFIG", None)
        done = subprocess.run(
            [sys.executable, str(EXAMPLES / name)], cwd=REPO, env=env, input=stdin, capture_output=True,
            text=True, timeout=900, check=False,
        )  # fmt: skip
        return Run(done.returncode, done.stdout, done.stderr)

    yield run
    if outputs.is_dir():
        for leftover in set(outputs.iterdir()) - before:
            shutil.rmtree(leftover, ignore_errors=True)


def _memories(bucket: list[dict[str, Any]], cube_id: str) -> list[str]:
    entry = next(e for e in bucket if e["cube_id"] == cube_id)
    return [m["memory"] for m in entry["memories"]]


def _ok(run: Run) -> None:
    assert run.returncode == 0, run.stderr[-4000:]


def test_example_01_minimal_pipeline(run_example: Any) -> None:
    run = run_example("01_minimal_pipeline.py")
    _ok(run)
    [added] = run.add_responses()
    assert added.startswith("code=200") and "7 Days Inn" in added
    memories = _memories(run.search_data()["text_mem"], "cube_test_user_1")
    assert any("7 Days Inn" in m for m in memories)


@pytest.mark.parametrize("script", ["02_multi_source_file.py", "02_multi_source_mixed.py"])
def test_example_02_multi_source(run_example: Any, script: str) -> None:
    run = run_example(script)
    _ok(run)
    [added] = run.add_responses()
    assert added.startswith("code=200")
    assert "could not be fetched" in added  # the remote file (and image) are unreachable here
    assert "PMT boot-pressure startup test" in added
    if script.endswith("mixed.py"):
        assert "ToolSchemaMemory" in added and "file_reader" in added
    data = run.search_data()
    assert "pref_mem" in data
    memories = _memories(data["text_mem"], "cube_test_user_2")
    assert any("PMT" in m for m in memories)


def test_example_03_multi_cube(run_example: Any) -> None:
    run = run_example("03_multi_cube.py")
    _ok(run)
    first, second = run.add_responses()
    assert "7 Days Inn" in first and "cube_test_user_3_1" in first
    assert "love" in second.lower() and "cube_test_user_3_2" in second
    data = run.search_data()
    for bucket in ("text_mem", "pref_mem"):  # one entry per searched cube, in the order asked
        assert [e["cube_id"] for e in data[bucket]] == ["cube_test_user_3_1", "cube_test_user_3_2"]
    first_cube = [m for b in ("text_mem", "pref_mem") for m in _memories(data[b], "cube_test_user_3_1")]
    second_cube = [m for b in ("text_mem", "pref_mem") for m in _memories(data[b], "cube_test_user_3_2")]
    assert any("7 Days Inn" in m for m in _memories(data["text_mem"], "cube_test_user_3_1"))
    assert any("love" in m.lower() for m in second_cube)  # "The user loves the assistant." (a preference)
    assert not any("7 Days Inn" in m for m in second_cube) and not any(
        "love" in m.lower() for m in first_cube
    )


def test_example_04_kv_cache_memory(run_example: Any) -> None:
    _ok(run_example("04_kv_cache_memory.py"))


def test_example_05_scheduler(run_example: Any) -> None:
    run = run_example("05_scheduler.py", stdin="What sport do I like to play?\nTell me about football.\n")
    # The seed loops on input() until EOF: it must end with EOFError, after two full turns.
    assert run.returncode != 0 and "EOFError: EOF when reading a line" in run.stderr, run.stderr[-4000:]
    out = run.stdout
    assert out.count("[Assistant]") == 2
    assert "[scheduler] user query: What sport do I like to play?" in out
    assert (
        "[scheduler] retrieved memory:" in out and "football" in out.split("[scheduler] retrieved memory:")[1]
    )
    assert "[scheduler] done!" in out
    assert "[text memory]" in out
    activation = [line for line in out.splitlines() if line.startswith("[activation memory]")]
    assert activation and all("num_layers" in line and "text_memories=[" in line for line in activation)
    assert any("football" in line for line in activation)
