"""bench.lanes runs end to end on a small workload and prints its figures; its sheet inflates as it says."""

from __future__ import annotations

import io
import zipfile

import pytest

from bench.lanes import flood, main, sheet


def test_the_sheet_inflates_to_its_size_from_a_few_kilobytes() -> None:
    data = sheet(2.0)
    inflated = zipfile.ZipFile(io.BytesIO(data)).getinfo("xl/worksheets/sheet1.xml").file_size
    assert len(data) < 20_000 and 1.9e6 < inflated < 2.1e6


def test_the_bench_reports_bobs_add_alone_and_during_alices(capsys: pytest.CaptureFixture[str]) -> None:
    got = main(["--adds", "1", "--files", "2", "--sheet-mb", "1", "--batches", "4"])
    assert set(got) == {"bob_alone_s_4", "bob_during_s_4", "held_back_x_4"}
    assert got["bob_alone_s_4"] > 0 and got["bob_during_s_4"] > 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith('{"bob_alone_s_4"')


async def test_the_flood_is_refused_past_the_bytes_bound_and_alice_is_answered() -> None:
    bounded = await flood(3, 1000)  # mallory's first add is taken (nothing of hers waits), the next ones are not
    assert bounded["refused"] == 2 and bounded["during"] > 0
    unbounded = await flood(2, 0)  # the count alone (500) takes both
    assert unbounded["refused"] == 0 and unbounded["during"] > 0
