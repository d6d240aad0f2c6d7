"""Projector benchmark: CPU per live batch in each embedded store, keyword commits deferred against every batch.

Run ``python -m bench.projector [--cubes 50] [--per-cube 50] [--batch 16] [--batches 20]``. One process builds
the embedded graph, vector and tantivy keyword stores in a temporary folder, fills ``--cubes`` cubes with
``--per-cube`` memories each, then applies ``--batches`` live batches (``replay=False``, as the projector
applies them) of ``--batch`` adds, each to a different cube, and times each store alone (CPU ms per batch).
The keyword index runs twice: as configured (``flush_docs`` 128: a cube's index is written once 128 of its
documents are pending) and writing every batch (``flush_docs`` 1, the behaviour before), so the ratio is
measured in one process. Prints a table, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from memory_store.embedded import EmbeddedGraphStore, EmbeddedVectorStore
from memory_store.embedded.db import EmbeddedProjection
from memory_store.embedded.keyword_tantivy import TantivyKeywordIndex
from processors.projection import project
from schemas.envelope import Position
from schemas.events import MemoryAdded
from schemas.topics import MEMORIES

__all__ = ["measure"]


class _Events:
    """Memory events of numbered memories with random unit vectors, at increasing log offsets."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(1)
        self.offset = 0

    def planned(self, adds: list[tuple[str, int]]) -> list[tuple[Any, Position]]:
        out = []
        for cube, i in adds:
            vector = self.rng.standard_normal(384).astype(np.float32)
            vector /= np.linalg.norm(vector)
            event = MemoryAdded(event_id=uuid.uuid4(), occurred_at=datetime.now(UTC), key=cube, cube_id=cube,
                                memory_id=f"{cube}-m{i}", user_id="u", embedding=vector.tolist(),
                                memory=f"memory {i} about parcel {i % 17}, the depot {i % 5} and street {i % 11}",
                                embedding_model="bench")  # fmt: skip
            self.offset += 1
            out.append((project(event), Position(MEMORIES, 0, self.offset)))
        return out


async def _per_batch(store: EmbeddedProjection, args: argparse.Namespace) -> float:
    """CPU ms per live batch of ``store`` after the fill."""
    events, cubes = _Events(), [f"c{n}" for n in range(args.cubes)]
    await store.apply_many(events.planned([(c, i) for c in cubes for i in range(args.per_cube)]))
    started, n = time.process_time(), args.per_cube
    for b in range(args.batches):
        adds = [(cubes[(b * args.batch + j) % len(cubes)], n + j) for j in range(args.batch)]
        n += args.batch
        await store.apply_many(events.planned(adds))
    return float((time.process_time() - started) / args.batches * 1000)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Figures of one run (see the module docstring)."""
    figures: dict[str, Any] = {"cubes": args.cubes, "batch": args.batch, "batches": args.batches}
    with tempfile.TemporaryDirectory(prefix="bench-projector-") as home:
        stores: dict[str, EmbeddedProjection] = {
            "graph": EmbeddedGraphStore(f"sqlite:///{home}/graph.db"),
            "vector": EmbeddedVectorStore(f"sqlite:///{home}/vector.db"),
            "keyword": TantivyKeywordIndex(f"tantivy:///{home}/keyword.db"),
            "keyword_every_batch": TantivyKeywordIndex(f"tantivy:///{home}/keyword1.db", flush_docs=1),
        }
        for name, store in stores.items():
            async with store:
                figures[f"cpu_ms_per_batch_{name}"] = round(await _per_batch(store, args), 2)
    figures["keyword_speedup"] = round(figures["cpu_ms_per_batch_keyword_every_batch"]
                                       / max(figures["cpu_ms_per_batch_keyword"], 1e-9), 1)
    return figures


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.projector", description=__doc__.splitlines()[0])
    parser.add_argument("--cubes", type=int, default=50, help="cubes filled first (default 50)")
    parser.add_argument("--per-cube", type=int, default=50, help="memories per cube before timing (default 50)")
    parser.add_argument("--batch", type=int, default=16, help="adds per live batch, each to another cube")
    parser.add_argument("--batches", type=int, default=20, help="live batches timed (default 20)")
    args = parser.parse_args(argv)
    figures = asyncio.run(measure(args))
    table = Table("store", "CPU ms per live batch", title=f"{args.batch} adds to {args.batch} cubes per batch")
    for name in ("graph", "vector", "keyword", "keyword_every_batch"):
        table.add_row(name, f"{figures[f'cpu_ms_per_batch_{name}']:.1f}")
    Console(width=100).print(table)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
