"""The whole search a user calls, on LoCoMo-size cubes: ``full_p50_ms_locomo`` / ``full_p95_ms_locomo``.

The LoCoMo dev conversations (one cube each) are added in fast mode through ``MemoryService`` on an
embedded Runtime in a fresh data directory; then every question of each conversation is asked of its
cube with ``MemoryService.search`` (query embedding, k-NN + BM25 + graph expansion in every bucket,
fusion, MMR, MemOS shaping), ``top_k`` 10 (the API default) and 50 (what the recall@1000w benchmark
asks). ``--profile`` writes cProfile stats of the timed searches.
"""

from __future__ import annotations

import asyncio
import cProfile
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.locomo_data import LocomoCube, load_locomo

__all__ = ["locomo_search_phase"]

logger = logging.getLogger(__name__)


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def _run(cubes: list[LocomoCube], questions: int, profile: str) -> dict[str, Any]:
    from bench.ingest import wait_searchable
    from memos.application.service import MemoryService
    from memos.runtime import Runtime
    from streams.settings import load_settings

    with tempfile.TemporaryDirectory(prefix="bench-search-locomo-") as home:
        settings = load_settings().model_copy(update={"home": Path(home)})
        async with Runtime(settings) as rt:
            service = MemoryService(rt)
            for cube in cubes:
                await service.create_cube(cube.cube_id, owner_id="bench")
                for n, session in enumerate(cube.sessions):
                    await service.add(
                        "bench", [cube.cube_id], session, session_id=f"{cube.cube_id}:{n}",
                        mode="fast", async_mode="async", origin="local",  # held back past the per-user bound
                    )  # fmt: skip
            await wait_searchable(rt)
            memories = [await rt.graph.count(c.cube_id) for c in cubes]
            asked = [(c.cube_id, q) for c in cubes for q in c.questions[: questions or None]]
            for cube_id, question in asked[:5]:  # warm caches and the model
                await service.search("bench", [cube_id], question)
            figures: dict[str, Any] = {
                "locomo_cubes": len(cubes),
                "locomo_memories_per_cube": round(sum(memories) / max(1, len(memories)), 1),
                "locomo_questions": len(asked),
            }
            profiler = cProfile.Profile() if profile else None
            for top_k, suffix in ((10, ""), (50, "_k50")):
                samples: list[float] = []
                empty = 0
                if profiler is not None and top_k == 10:
                    profiler.enable()
                for cube_id, question in asked:
                    started = time.perf_counter()
                    data = await service.search("bench", [cube_id], question, top_k=top_k)
                    samples.append((time.perf_counter() - started) * 1000)
                    empty += not data["text_mem"][0]["memories"]
                if profiler is not None and top_k == 10:
                    profiler.disable()
                    profiler.dump_stats(profile)
                figures[f"full_p50_ms_locomo{suffix}"] = _pct(samples, 0.5)
                figures[f"full_p95_ms_locomo{suffix}"] = _pct(samples, 0.95)
                figures[f"locomo_empty_answers{suffix}"] = empty
    return figures


def locomo_search_phase(path: str, conversations: int, questions: int, profile: str = "") -> dict[str, Any]:
    """Add ``conversations`` LoCoMo conversations, ask up to ``questions`` each; the latency figures."""
    cubes = load_locomo(Path(path), conversations=conversations)
    logging.getLogger("memos").setLevel(logging.WARNING)
    return asyncio.run(_run(cubes, questions, profile))
