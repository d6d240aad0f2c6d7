"""KV benchmark: time to first token on a warm memory cache versus memories injected in the prompt.

Run ``python -m bench.kv`` (``--quick`` for a short run). A random-weight Llama of 8 layers and hidden
size 512 (``make_tiny_model``; cached under ``$MEMOS_HOME/models``) answers queries of 20 and 200 tokens
after memory prefixes of 500, 1k, 2k and 4k tokens, on the CPU and on CUDA when present:

- warm: fetch the cache (built with ``WARM_ROOM_TOKENS`` spare slots, as warm caches are) from the
  shared ``LocalKVCacheStore`` and run the query tokens on a view of it (``generate_with_cache``), up
  to the first token;
- injected: one forward over prefix + query, up to the first token.

Both give the same first token (checked). Also reported: cache build time, bytes per token, and
``warm_latency_s``: from appending a ``mem_update`` TaskSubmitted for a small cube to its
``KVCacheWarmed`` being readable on ``memos.activation.v1``, with an idle kv-warmer stage (target: < 1 s).
Threads: ``OMP_NUM_THREADS`` when set, else 1. Prints a table (and a chart of time to first token
against prefix length to ``--chart``, default docs/bench/kv.png), then one JSON object as the last line
(with ``load_avg_1m``: ratios measured on a busy machine understate what a quiet one gives).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from memory_store.kv.cache import cache_bytes, layer_tensors
from memory_store.kv.generation import build_prefix_cache, generate_from_prompt, generate_with_cache
from memory_store.kv.store import CacheKey, LocalKVCacheStore, WarmCache
from memory_store.kv.tiny import make_tiny_model
from memory_store.llm.huggingface import WARM_ROOM_TOKENS, HuggingFaceChatModel, memos_models_dir
from memos.runtime import Runtime
from processors.kv_warmer import compose_memory_text, prefix_hash
from schemas.codec import decode
from schemas.events import Event, KVCacheWarmed, MemoryAdded, TaskSubmitted
from schemas.topics import ACTIVATION, TASKS
from streams.log.base import partition_for
from streams.settings import AppSettings, KVSettings

__all__ = ["main"]

logger = logging.getLogger(__name__)

_WARM_TIMEOUT_S = 300.0
"""How long one mem_update task may take to be answered by a KVCacheWarmed event before the run fails."""

_WORDS = (
    "user likes football hiking green tea noodles Lisbon sister meeting Thursday design team hotel travel "
    "Guangzhou summer vacation code word pineapple birthday March piano lessons dentist appointment garden "
    "project deadline budget review coffee morning evening weekend train ticket museum book novel recipe"
).split()


def _memory_texts(count: int, seed: int) -> list[str]:
    import random

    rnd = random.Random(seed)
    return [
        f"Memory {i}: " + " ".join(rnd.choice(_WORDS) for _ in range(rnd.randint(8, 20))) + "."
        for i in range(count)
    ]


def _median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _exact_ids(llm: HuggingFaceChatModel, text_for: Callable[[int], str], n: int) -> list[int]:
    grow = 1
    while True:
        ids = llm.encode(text_for(grow))
        if len(ids) >= n:
            return ids[:n]
        grow *= 2


def bench_device(
    llm: HuggingFaceChatModel, prefixes: Sequence[int], queries: Sequence[int], repeats: int
) -> dict[str, Any]:
    """TTFT of both paths for every (prefix, query) size on the model's device."""
    model, tok, device = llm.model, llm.tokenizer, llm.device
    store = LocalKVCacheStore(max_bytes=8 * 1024**3)
    rows: list[dict[str, Any]] = []
    warmup = llm.encode("warm up the kernels")
    generate_from_prompt(model, tok, warmup, max_new_tokens=1)
    for p in prefixes:
        texts = _memory_texts(4 * p, seed=p)
        per_step = max(1, p // 48)

        def memory_prefix(k: int, texts: list[str] = texts, per_step: int = per_step) -> str:
            return compose_memory_text(texts[: per_step * k])

        prefix_ids = _exact_ids(llm, memory_prefix, p)
        started = time.perf_counter()
        cache, _ = build_prefix_cache(model, prefix_ids, room=WARM_ROOM_TOKENS)
        _sync(device)
        build_s = time.perf_counter() - started
        key = CacheKey(llm.model_id, prefix_hash(llm.model_id, [str(p)]))
        store.put(WarmCache(key, cache, tuple(prefix_ids)), cube_id=f"cube-{p}")
        size = sum(k.nbytes + v.nbytes for k, v in layer_tensors(cache))  # room excluded
        held = cache_bytes(cache)
        for q in queries:
            query_ids = _exact_ids(
                llm, lambda k: "Please tell me what I said about the hotel and the code. " * k, q
            )

            def warm(ids: list[int] = query_ids, k: CacheKey = key) -> int:
                entry = store.get(k)
                assert entry is not None
                out = generate_with_cache(model, tok, entry.cache, entry.tokens, ids, max_new_tokens=1)
                _sync(device)
                return out.token_ids[0] if out.token_ids else -1

            def injected(ids: list[int] = query_ids, prefix: list[int] = prefix_ids) -> int:
                out = generate_from_prompt(model, tok, prefix + ids, max_new_tokens=1)
                _sync(device)
                return out.token_ids[0] if out.token_ids else -1

            warm()  # first call per shape pays allocator and kernel selection
            injected()
            warm_s, warm_tok = _median_time(warm, max(3, repeats * 2))
            inj_s, inj_tok = _median_time(injected, repeats)
            rows.append(
                {
                    "prefix": p,
                    "query": q,
                    "warm_ttft_s": warm_s,
                    "injected_ttft_s": inj_s,
                    "ratio": inj_s / warm_s,
                    "same_first_token": warm_tok == inj_tok,
                    "build_s": build_s,
                    "bytes_per_token": size / p,
                    "held_bytes": held,
                }
            )
    return {"device": str(device), "rows": rows}


async def _warm_latency(model: str, device: str, repeats: int) -> tuple[float, float]:
    home = Path(tempfile.mkdtemp(prefix="bench-kv-"))
    try:
        settings = AppSettings().model_copy(update={  # $MEMOS_HOME must not win over the temp dir
            "home": home, "kv": KVSettings(enabled=True, model=model, device=device)})
        async with Runtime(settings, stage_names={"kv-warmer", "projector"}) as rt:
            stage = rt.kv_warmer
            if stage is None:
                raise RuntimeError("the runtime hosts no KV warmer stage (kv.enabled with the kv-warmer stage)")
            await stage.ready.wait()
            if stage.failure is not None:
                raise stage.failure
            cubes = [f"bench-cube-{i}" for i in range(repeats + 1)]
            memories: list[Event] = []
            for i, cube in enumerate(cubes):
                texts = _memory_texts(5, seed=1000 + i)
                vectors = (await rt.embedder.embed(texts, kind="passage")).vectors
                memories += [
                    MemoryAdded(
                        event_id=uuid.uuid4(),
                        occurred_at=rt.now(),
                        key=cube,
                        producer="bench",
                        memory_id=f"m{i}-{j}",
                        cube_id=cube,
                        user_id="bench",
                        memory=text,
                        embedding=vector,
                        embedding_model=rt.embedder.model_id,
                    )  # fmt: skip
                    for j, (text, vector) in enumerate(zip(texts, vectors, strict=True))
                ]
            ends = {(p.topic, p.partition): p.offset + 1 for p in await rt.publish(memories)}
            for group in ("projector", "kv-warmer"):  # projected, and seen by the (then idle) worker
                await rt.wait_for(group, ends, timeout_s=120)
            latencies = []
            for i, cube in enumerate(cubes):
                partition = partition_for(cube.encode(), await rt.log.partitions(ACTIVATION))
                offset = (await rt.log.end_offsets(ACTIVATION)).get(partition, 0)
                task = TaskSubmitted(
                    event_id=uuid.uuid4(), occurred_at=rt.now(), key=cube, producer="bench", task_id=uuid.uuid4().hex,
                    user_id="bench", cube_id=cube, label="mem_update", content="What do I do at the weekend?",
                )  # fmt: skip
                started = time.perf_counter()
                (position,) = await rt.publish([task])
                warmed: KVCacheWarmed | None = None
                deadline = started + _WARM_TIMEOUT_S
                while warmed is None:  # follow the cube's activation partition, as a chat process does
                    if time.perf_counter() > deadline:
                        raise TimeoutError(f"no KVCacheWarmed for cube {cube!r} within {_WARM_TIMEOUT_S:g}s of its "
                                           "mem_update task (is the kv-warmer stage running?)")
                    for record in await rt.log.read(ACTIVATION, partition, offset):
                        event = decode(record.value)
                        if isinstance(event, KVCacheWarmed) and event.cube_id == cube:
                            warmed = event
                        offset = record.position.offset + 1
                    if warmed is None:
                        await asyncio.sleep(0.001)
                if i:  # the first one warms up the process
                    elapsed = time.perf_counter() - started
                    latencies.append((elapsed, elapsed - warmed.build_ms / 1000.0))
                await rt.wait_for(
                    "kv-warmer", {(TASKS, position.partition): position.offset + 1}, timeout_s=60
                )
            return (
                statistics.median(t for t, _ in latencies),
                statistics.median(o for _, o in latencies),
            )
    finally:
        shutil.rmtree(home, ignore_errors=True)


def warm_latency(model: str, device: str, repeats: int) -> tuple[float, float]:
    """Median seconds from appending a ``mem_update`` TaskSubmitted to its ``KVCacheWarmed`` on the log,
    and the median of that time less the cache build (``build_ms`` of the event): the pipeline's share.

    An idle kv-warmer (``Runtime`` hosting the kv-warmer and projector stages, the model on ``device``)
    warms a new cube of 5 short memories each time; the clock stops when the event is readable on
    ``memos.activation.v1`` (what a chat process follows), so it includes the log round trips, the query
    embedding, the plan, the build and the dump.
    """
    return asyncio.run(_warm_latency(model, device, repeats))


def _table(result: dict[str, Any]) -> Table:
    table = Table(
        title=f"KV cache time to first token ({result['device']}, {torch.get_num_threads()} thread(s))"
    )
    for column in (
        "prefix",
        "query",
        "warm ms",
        "injected ms",
        "ratio",
        "same token",
        "build ms",
        "bytes/token",
    ):
        table.add_column(column, justify="right")
    for r in result["rows"]:
        table.add_row(
            str(r["prefix"]), str(r["query"]), f"{r['warm_ttft_s'] * 1000:.1f}", f"{r['injected_ttft_s'] * 1000:.1f}",
            f"{r['ratio']:.1f}x", "yes" if r["same_first_token"] else "NO", f"{r['build_s'] * 1000:.0f}",
            f"{r['bytes_per_token']:.0f}",
        )  # fmt: skip
    return table


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return 0, or 1 when the two paths disagreed on a first token."""
    parser = argparse.ArgumentParser(prog="python -m bench.kv", description=__doc__.splitlines()[0])
    parser.add_argument("--prefixes", default="500,1000,2000,4000")
    parser.add_argument("--queries", default="20,200")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="prefixes 500,2000 and one repeat")
    parser.add_argument("--chart", default="docs/bench/kv.png", help="PNG chart path ('' for none)")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))
    prefixes = [500, 2000] if args.quick else [int(x) for x in args.prefixes.split(",")]
    queries = [int(x) for x in args.queries.split(",")]
    repeats = 1 if args.quick else args.repeats
    console = Console(width=120)
    model_dir = make_tiny_model(
        memos_models_dir() / "bench-llama-8x512", arch="llama", layers=8, hidden=512, heads=8, vocab_size=4096
    )
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results, figures = [], {}
    for device in devices:
        dtype = "float32" if device == "cpu" else None
        llm = HuggingFaceChatModel(str(Path(model_dir)), device=device, dtype=dtype)
        result = bench_device(llm, prefixes, queries, repeats)
        latency, overhead = warm_latency(str(model_dir), device, 5 if not args.quick else 2)
        result["warm_latency_s"], result["warm_overhead_s"] = latency, overhead
        results.append(result)
        console.print(_table(result))
        console.print(
            f"warm latency (mem_update appended -> KVCacheWarmed on the log, idle kv-warmer, small cube): "
            f"{result['warm_latency_s'] * 1000:.1f} ms, of which {result['warm_overhead_s'] * 1000:.1f} ms not building"
        )
    cpu = results[0]
    by = {(r["prefix"], r["query"]): r for r in cpu["rows"]}
    for (p, q), r in by.items():
        figures[f"ttft_ratio_{p // 1000}k_q{q}" if p % 1000 == 0 else f"ttft_ratio_{p}_q{q}"] = round(
            r["ratio"], 2
        )
        figures[f"bytes_per_token_{p}"] = round(r["bytes_per_token"], 1)
        figures[f"build_s_{p}"] = round(r["build_s"], 4)
    summary = {
        "ttft_ratio_2k_q20": figures.get("ttft_ratio_2k_q20"),
        "ttft_ratio_4k_q20": figures.get("ttft_ratio_4k_q20"),
        "warm_latency_s": round(cpu["warm_latency_s"], 4),
        "warm_overhead_s": round(cpu["warm_overhead_s"], 4),
        **figures,
        "threads": torch.get_num_threads(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "room_tokens": WARM_ROOM_TOKENS,
        "devices": devices,
    }
    if len(results) > 1:
        for r in results[1]["rows"]:
            summary[f"cuda_ttft_ratio_{r['prefix']}_q{r['query']}"] = round(r["ratio"], 2)
        summary["cuda_warm_latency_s"] = round(results[1]["warm_latency_s"], 4)
        summary["cuda_warm_overhead_s"] = round(results[1]["warm_overhead_s"], 4)
    agree = all(r["same_first_token"] for res in results for r in res["rows"])
    summary["same_first_token"] = agree
    if args.chart:
        from bench.charts import kv_chart

        kv_chart(cpu["rows"], summary, Path(args.chart))
    sys.stdout.write(json.dumps(summary) + "\n")
    sys.stdout.flush()
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
