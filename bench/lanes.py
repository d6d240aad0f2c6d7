"""Tenant isolation in the derivation lanes: one tenant's sync add while another's expensive adds are derived.

    python -m bench.lanes [--adds 3] [--files 6] [--sheet-mb 63] [--batches 1,4]
                          [--flood 60] [--small-batches 1,4]

Alice queues ``--adds`` async adds, each carrying ``--files`` copies of a small (bzip2, a few KB) spreadsheet
that inflates to ``--sheet-mb`` MB of empty cells: each parse runs until a budget stops it (the per-add and
per-user parse budgets, ``derivation.parse_budget_*``). A second later bob makes a sync add with a short text
file, which takes the same lane, and the clock runs until it returns with its memories. Each
``derivation.large_lane_batches`` value runs in a fresh data directory of its own, in this process: 1 is the
lane taking batches in turn (as before the setting), 4 the default. The baseline is bob's same add with nothing
else queued, in the same directory. The last line printed is one JSON object: ``bob_alone_s_<batches>``,
``bob_during_s_<batches>`` and ``held_back_x_<batches>`` (during over alone).

``--flood N``: the small lane. Mallory makes N async adds of 62,000 characters (just under ``large_add_chars``)
into cubes on alice's log partition, then alice makes a sync add: with ``door.max_pending_bytes_per_user`` 0 (the
count of adds alone bounds mallory) and with its default, and ``derivation.small_lane_batches`` 1 (the lane in
turn) and its default, each in a fresh directory (``alice_during_s_bytes_<b>_small_<n>``,
``refused_bytes_<b>_small_<n>``: mallory's adds refused with 429).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import logging
import random
import string
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from memos.application.errors import BacklogFull
from memos.application.service import MemoryService
from memos.runtime import Runtime
from streams.log.base import partition_for
from streams.settings import AppSettings, DoorSettings

__all__ = ["flood", "main", "measure", "sheet"]

_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_PARTS = {
    "[Content_Types].xml": '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
    'content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships'
    '+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override '
    'PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.'
    'spreadsheetml.worksheet+xml"/></Types>',
    "_rels/.rels": '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/'
    'relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>',
    "xl/workbook.xml": f'<?xml version="1.0"?><workbook xmlns="{_NS}" xmlns:r="http://schemas.openxmlformats.org/'
    'officeDocument/2006/relationships"><sheets><sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>',
    "xl/_rels/workbook.xml.rels": '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/'
    'package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/'
    '2006/relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>',
}


def sheet(megabytes: float) -> bytes:
    """An xlsx whose one sheet is ``megabytes`` MB of empty cells once inflated (a few KB compressed)."""
    row = b"<row><c/><c/><c/><c/><c/><c/><c/><c/></row>"
    rows = row * int(megabytes * 1e6 / len(row))
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w", zipfile.ZIP_BZIP2) as archive:
        for name, text in _PARTS.items():
            archive.writestr(name, text)
        archive.writestr("xl/worksheets/sheet1.xml",
                         f'<?xml version="1.0"?><worksheet xmlns="{_NS}"><sheetData>'.encode() + rows
                         + b"</sheetData></worksheet>")
    return data.getvalue()


def _file(name: str, data: bytes, mime: str) -> dict[str, Any]:
    return {"type": "file", "file": {"filename": name,
                                     "file_data": f"data:{mime};base64,{base64.b64encode(data).decode()}"}}


async def _bob(service: MemoryService, tag: str) -> float:
    note = _file(f"{tag}.txt", f"Bob's packing list {tag}: tent, stove, two mugs.".encode(), "text/plain")
    started = time.perf_counter()
    added = await service.add("bob", ["bob_cube"], [{"role": "user", "content": [note]}], mode="fast")
    elapsed = time.perf_counter() - started
    if not added[0]["memories"]:
        raise RuntimeError(f"bob's add came back without memories: {added}")
    return elapsed


async def measure(batches: int, adds: int, files: int, sheet_mb: float) -> dict[str, float]:
    """Bob's add alone, then during alice's adds, in a fresh data directory with that many batches at once."""
    parts = [_file(f"r{i}.xlsx", sheet(sheet_mb), "application/octet-stream") for i in range(files)]
    with tempfile.TemporaryDirectory(prefix="memos-bench-lanes-") as home:
        settings = AppSettings(home=Path(home))
        settings.derivation.large_lane_batches = batches
        async with Runtime(settings) as rt:
            service = MemoryService(rt)
            await _bob(service, "warm-up")  # models loaded, bob's cube made
            alone = await _bob(service, "alone")
            for _ in range(adds):
                await service.add("alice", ["alice_cube"], [{"role": "user", "content": parts}], mode="fast",
                                  async_mode="async")
            await asyncio.sleep(1.0)  # the lane has taken alice's adds: bob's arrives while they parse
            during = await _bob(service, "during")
    return {"alone": alone, "during": during}


async def flood(adds: int, bytes_bound: int, small_batches: int = 4) -> dict[str, float]:
    """Mallory's ``adds`` async adds of 62,000 characters (the small lane, just under ``large_add_chars``) into
    cubes on alice's partition, as a remote caller (refused past the bounds); then alice's sync add."""
    with tempfile.TemporaryDirectory(prefix="memos-bench-lanes-") as home:
        settings = AppSettings(home=Path(home))
        settings.door.max_pending_bytes_per_user = bytes_bound
        settings.derivation.small_lane_batches = small_batches
        async with Runtime(settings) as rt:
            service = MemoryService(rt)
            turn = [{"role": "user", "content": "My dog Pixel likes the beach."}]
            await service.add("alice", ["alice_cube"], turn, mode="fast")  # models loaded, alice's cube made
            started = time.perf_counter()
            await service.add("alice", ["alice_cube"], turn, mode="fast")
            alone = time.perf_counter() - started
            target = partition_for(b"alice_cube", settings.log.partitions)
            cubes = [c for c in (f"m{i}" for i in range(4000)) if partition_for(c.encode(), settings.log.partitions)
                     == target][:50]
            rng = random.Random(1)
            refused = 0
            for n in range(adds):
                words = (("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9)))) for _ in range(9000))
                try:
                    await service.add("mallory", [cubes[n % len(cubes)]], [
                        {"role": "user", "content": " ".join(words)[:62_000]}], mode="fast", async_mode="async")
                except BacklogFull:
                    refused += 1
            started = time.perf_counter()
            await service.add("alice", ["alice_cube"], [{"role": "user", "content": "Pixel's vet is Dr. Lima."}],
                              mode="fast")
            return {"alone": alone, "during": time.perf_counter() - started, "refused": refused}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m bench.lanes", description=__doc__.split("\n")[0])
    parser.add_argument("--adds", type=int, default=3, help="alice's async adds")
    parser.add_argument("--files", type=int, default=6, help="spreadsheets per add")
    parser.add_argument("--sheet-mb", type=float, default=63.0, help="inflated size of each sheet")
    parser.add_argument("--batches", default="1,4", help="derivation.large_lane_batches values to run")
    parser.add_argument("--flood", type=int, default=0,
                        help="also: alice's sync add after this many 62,000-character async adds of mallory's on her "
                        "partition, with door.max_pending_bytes_per_user 0 (the count alone) and the default")
    parser.add_argument("--small-batches", default="1,4", help="derivation.small_lane_batches values of the flood")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    out: dict[str, float] = {}
    table = Table(title="bob's sync file add (s)")
    for column in ("large_lane_batches", "alone", "during alice's adds", "held back"):
        table.add_column(column, justify="right")
    for batches in (int(b) for b in args.batches.split(",")):
        got = asyncio.run(measure(batches, args.adds, args.files, args.sheet_mb))
        out[f"bob_alone_s_{batches}"] = round(got["alone"], 2)
        out[f"bob_during_s_{batches}"] = round(got["during"], 2)
        out[f"held_back_x_{batches}"] = round(got["during"] / got["alone"], 1)
        table.add_row(str(batches), f"{got['alone']:.2f}", f"{got['during']:.2f}",
                      f"{got['during'] / got['alone']:.1f}x")
    Console().print(table)
    if args.flood:
        flooded = Table(title=f"alice's sync add after {args.flood} adds of 62,000 characters of mallory's (s)")
        for column in ("max_pending_bytes_per_user", "small_lane_batches", "alone", "during", "mallory's refused"):
            flooded.add_column(column, justify="right")
        for bound in (0, DoorSettings().max_pending_bytes_per_user):
            for small in (int(b) for b in args.small_batches.split(",")):
                got = asyncio.run(flood(args.flood, bound, small))
                name = f"bytes_{bound}_small_{small}"
                out[f"alice_alone_s_{name}"] = round(got["alone"], 2)
                out[f"alice_during_s_{name}"] = round(got["during"], 2)
                out[f"refused_{name}"] = got["refused"]
                flooded.add_row(str(bound), str(small), f"{got['alone']:.2f}", f"{got['during']:.2f}",
                                str(int(got["refused"])))
        Console().print(flooded)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
