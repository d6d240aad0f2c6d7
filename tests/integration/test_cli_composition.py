"""Commands that compose the system (`memos worker --engine faust`, `memos models make-tiny`) reach it only
through the composition root (memos.runtime): real subprocesses, errors as one line and exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _memos(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MEMOS_HOME": str(home), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "memos", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_faust_worker_refuses_the_embedded_log_naming_the_setting(tmp_path: Path) -> None:
    proc = _memos(tmp_path, "worker", "--engine", "faust")
    assert proc.returncode == 2, proc.stderr
    assert "kafka://" in proc.stderr and "sqlite:" in proc.stderr


def test_make_tiny_refuses_an_unknown_architecture_and_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "model"
    proc = _memos(tmp_path, "models", "make-tiny", str(target), "--arch", "gpt9")
    assert proc.returncode == 2
    assert "llama or qwen2" in proc.stderr and "'gpt9'" in proc.stderr
    assert not target.exists()


def test_make_tiny_writes_a_model_transformers_loads(tmp_path: Path) -> None:
    target = tmp_path / "model"
    proc = _memos(tmp_path, "models", "make-tiny", str(target), "--arch", "llama")
    assert proc.returncode == 0, proc.stderr
    assert f"wrote tiny llama model to {target}" in proc.stdout
    assert json.loads((target / "config.json").read_text())["model_type"] == "llama"
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(target)
    assert tokenizer.decode(tokenizer("green tea")["input_ids"]) == "green tea"
