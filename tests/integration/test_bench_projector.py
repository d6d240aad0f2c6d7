"""bench.projector on a small run: every store is timed over live batches, the keyword index both ways."""

from __future__ import annotations

import argparse
import asyncio

import pytest

from bench.projector import main, measure


def test_projector_figures() -> None:
    args = argparse.Namespace(cubes=6, per_cube=3, batch=4, batches=3)
    figures = asyncio.run(measure(args))
    for name in ("graph", "vector", "keyword", "keyword_every_batch"):
        assert figures[f"cpu_ms_per_batch_{name}"] > 0, name
    assert figures["keyword_speedup"] > 0


def test_projector_prints_json_last(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--cubes", "4", "--per-cube", "2", "--batch", "2", "--batches", "2"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("{") and '"keyword_speedup"' in last
