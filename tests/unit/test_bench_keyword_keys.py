"""bench.keyword names its figures by the size it ran (they all said ``_1m`` whatever the size)."""

from __future__ import annotations

import json

import pytest

from bench.keyword import main, size_suffix


def test_size_suffixes() -> None:
    assert [size_suffix(n) for n in (1_000_000, 100_000, 2_000, 1_500, 999)] == ["1m", "100k", "2k", "1500", "999"]


def test_a_small_run_names_its_size(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--memories", "2000", "--queries", "10"])
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["bm25_memories"] == 2000 and figures["bm25_p95_ms_2k"] > 0
    assert not any(key.endswith("_1m") for key in figures)
