"""Ingest benchmark: fast-mode turns/s end to end, next to the raw speed of the same embedder on the same texts.

    python -m bench.ingest [--locomo ../shared/data/locomo-dev.json [--conversations N]]
                           [--turns 600] [--session-turns 20] [--sessions 10] [--profile out.prof] [--chart PNG]

The LoCoMo dev conversations (``--locomo``; one cube each), or synthetic two-person conversations
(generated here, deterministic: ``--turns``), are added session by session with
``MemoryService.add(mode="fast", async_mode="async")`` on an embedded Runtime in a fresh data directory;
the clock runs from the first add until everything is searchable (the deriver has read every
conversation and the projections hold what it wrote). Every call the pipeline made to its embedder is
recorded (texts and batch structure); afterwards the same embedder embeds exactly those batches again,
alone: ``ratio`` = pipeline turns/s divided by the raw embedder's turns/s for those texts (1.0 means the
pipeline costs nothing beyond embedding). ``cpu_ratio`` compares the process's CPU seconds (all threads)
of the two phases instead: other load on the machine slows wall-clock figures but hardly moves it;
``cpu_s_per_1000_turns`` is the pipeline's CPU cost on the same footing, and ``tokens_per_turn`` the
model tokens its passage embeddings read per turn.
``turns_per_s`` is the headline (target >= 100 on the LoCoMo dev conversations); a bar chart of the
throughputs is written to ``--chart`` (default docs/bench/ingest.png). The last line printed is one
JSON object of headline figures.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import os
import random
import tempfile
import time
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.charts import ingest_chart
from bench.locomo_data import load_locomo
from memos.application.service import MemoryService
from memos.runtime import Runtime
from schemas.topics import CONVERSATIONS
from streams.settings import load_settings

__all__ = ["EmbedRecorder", "conversations", "main", "measure", "wait_searchable"]

logger = logging.getLogger(__name__)

_NAMES = (
    "Avery",
    "Jordan",
    "Priya",
    "Mateo",
    "Hannah",
    "Kenji",
    "Lucia",
    "Omar",
    "Sofia",
    "Tobias",
    "Nia",
    "Felix",
)
_SLOTS: dict[str, tuple[str, ...]] = {
    "place": (
        "Lisbon",
        "the farmers market",
        "Denver",
        "grandma's cabin",
        "the climbing gym",
        "Osaka",
        "the library",
        "Lake Tahoe",
        "the new ramen place",
        "Montreal",
        "the community garden",
        "Berlin",
        "the science museum",
        "Cape Cod",
        "the bowling alley",
        "Vancouver",
        "the old train station",
        "Marrakesh",
    ),
    "thing": (
        "pottery class",
        "half marathon",
        "sourdough starter",
        "guitar lessons",
        "book club",
        "road trip",
        "job interview",
        "volunteer shift",
        "photography course",
        "kitchen renovation",
        "chess tournament",
        "camping weekend",
        "salsa workshop",
        "charity bake sale",
        "coding bootcamp",
        "birdwatching walk",
    ),
    "person": (
        "my sister",
        "my manager",
        "our neighbour",
        "my dad",
        "an old college friend",
        "my cousin",
        "my partner",
        "the kids",
        "my mentor",
        "my roommate",
        "my grandmother",
        "a coworker named Sam",
    ),
    "feeling": (
        "exhausting but worth it",
        "honestly a lot of fun",
        "harder than I expected",
        "really calming",
        "a bit nerve-wracking",
        "the highlight of my month",
        "surprisingly emotional",
        "pure chaos",
    ),
    "day": (
        "last Tuesday",
        "over the weekend",
        "yesterday",
        "two weeks ago",
        "this morning",
        "on Friday night",
        "last month",
        "on my birthday",
    ),
    "month": ("January", "March", "May", "July", "September", "November"),
    "food": (
        "spicy noodles",
        "lemon cake",
        "grilled peaches",
        "mushroom risotto",
        "fish tacos",
        "banana bread",
    ),
    "pet": ("dog Biscuit", "cat Miso", "parrot Kiwi", "rabbit Pepper"),
}
_TEMPLATES = (
    "I finally signed up for the {thing} {day}. It was {feeling}, and {person} came along too.",
    "We drove to {place} {day}; {person} insisted we stop for coffee twice on the way.",
    "Guess what, {person} is moving to {place} in {month}, so I've been helping pack boxes every evening.",
    "Work has been {feeling} lately. The project deadline slipped to {month} and I'm trying not to stress.",
    "How did the {thing} go? Last time you said it was {feeling}.",
    "That sounds great! I'd love to see photos from {place} when you get a chance.",
    "I've been thinking about starting a {thing} myself, maybe in {month} once things calm down.",
    "Thanks for asking! {person} loved the gift, we're planning a trip to {place} together.",
    "Honestly the {thing} was {feeling}. I learned that I need to pace myself and sleep more.",
    "Oh nice, {place} is one of my favourite spots. Did you try the {food} there?",
    "I took {person} to the {thing} {day} and we stayed until they closed the doors.",
    "Not much new here, just saving up for a trip to {place} and practising for the {thing}.",
    "My {pet} got into the pantry {day} and ate half of the {food}, so that was {feeling}.",
    "I baked {food} for {person}; it took {n} tries before it came out right.",
    "We counted {n} people at the {thing}, way more than last year.",
    "Can you believe it has been {n} years since we first went to {place}?",
    "I'm so proud of you for sticking with the {thing}. What made you keep going?",
    "Do you remember the name of that café near {place}? {person} keeps asking me.",
)


def _turn(rng: random.Random) -> str:
    sentences = rng.choice((1, 1, 2, 2, 3))
    parts = []
    for _ in range(sentences):
        values = {k: rng.choice(v) for k, v in _SLOTS.items()}
        parts.append(rng.choice(_TEMPLATES).format(n=rng.randint(2, 40), **values))
    return " ".join(parts)


def conversations(
    turns: int, *, session_turns: int = 20, sessions: int = 10, seed: int = 7
) -> list[list[list[dict[str, Any]]]]:
    """Conversations -> sessions -> messages ("Name: text", chat_time, message_id), ``turns`` in all."""
    rng = random.Random(seed)
    out: list[list[list[dict[str, Any]]]] = []
    made = 0
    while made < turns:
        a, b = rng.sample(_NAMES, 2)
        conversation: list[list[dict[str, Any]]] = []
        for s in range(sessions):
            day = date(2023, 1, 2) + timedelta(days=14 * s + rng.randint(0, 6))
            when = f"{rng.randint(1, 11)}:{rng.randint(0, 59):02d} pm on {day.day} {day:%B}, {day.year}"
            session = []
            for t in range(min(session_turns, turns - made)):
                speaker, role = (a, "user") if t % 2 == 0 else (b, "assistant")
                session.append(
                    {
                        "role": role,
                        "content": f"{speaker}: {_turn(rng)}",
                        "chat_time": when,
                        "message_id": f"C{len(out)}:D{s + 1}:{t + 1}",
                    }
                )
            made += len(session)
            if session:
                conversation.append(session)
            if made >= turns:
                break
        out.append(conversation)
    return out


class EmbedRecorder:
    """Wraps an embedder instance's ``embed`` to record every call (texts, kind) and the time spent in it."""

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder
        self.calls: list[tuple[list[str], str]] = []
        self.seconds = 0.0
        self.tokens = 0
        self.original = embedder.embed

        async def recording(texts: Sequence[str], *, kind: str = "passage") -> Any:
            started = time.perf_counter()
            try:
                result = await self.original(texts, kind=kind)
                if kind == "passage":
                    self.tokens += result.tokens
                return result
            finally:
                self.seconds += time.perf_counter() - started
                self.calls.append((list(texts), kind))

        self.embedder.embed = recording

    def restore(self) -> None:
        """Put the embedder's own ``embed`` back."""
        self.embedder.embed = self.original

    async def replay(self) -> float:
        """Embed every recorded batch again, alone, in order; seconds taken."""
        started = time.perf_counter()
        for texts, kind in self.calls:
            await self.original(texts, kind=kind)
        return time.perf_counter() - started


async def wait_searchable(rt: Runtime, *, timeout_s: float = 1800.0) -> None:
    """Wait until the deriver has read every recorded conversation and the projections hold its output."""
    ends = await rt.log.end_offsets(CONVERSATIONS)
    await rt.wait_for(
        "deriver", {(CONVERSATIONS, p): e for p, e in ends.items() if e > 0}, timeout_s=timeout_s
    )
    await rt.settle([], timeout_s=timeout_s)


async def _uncovered(rt: Runtime, cubes: Sequence[str], ids: set[str]) -> int:
    """How many turn ids no current memory names as a source (0 when everything became searchable)."""
    seen: set[str] = set()
    for cube in cubes:
        for record in await rt.graph.list_memories(cube):
            seen.update(s.message_id for s in record.sources if s.message_id)
    return len(ids - seen)


async def measure(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    """Run the pipeline, then the raw embedder on the recorded batches; return the figures."""
    if args.locomo:
        loaded = load_locomo(Path(args.locomo), conversations=args.conversations)
        convs = [c.sessions for c in loaded]
        cubes = [c.cube_id for c in loaded]
    else:
        convs = conversations(args.turns, session_turns=args.session_turns, sessions=args.sessions)
        cubes = [f"bench-ingest-{n}" for n in range(len(convs))]
    turns = sum(len(s) for c in convs for s in c)
    ids = {m["message_id"] for c in convs for s in c for m in s}
    settings = load_settings().model_copy(update={"home": home})  # $MEMOS_HOME must not win over the temp dir
    async with Runtime(settings) as rt:
        service = MemoryService(rt)
        for cube in cubes:
            await service.create_cube(cube, owner_id="bench")
        await rt.embedder.embed(["warm-up"], kind="passage")
        recorder = EmbedRecorder(rt.embedder)
        profiler = cProfile.Profile() if args.profile else None
        if profiler is not None:
            profiler.enable()
        started, cpu_started = time.perf_counter(), time.process_time()
        for n, conversation in enumerate(convs):
            for s, session in enumerate(conversation):
                await service.add(
                    "bench",
                    [cubes[n]],
                    session,
                    session_id=f"{cubes[n]}:{s}",
                    mode="fast",
                    async_mode="async",
                    origin="local",  # in-process: held back, not refused, past door.max_pending_per_user
                )
        await wait_searchable(rt)
        pipeline_s = time.perf_counter() - started
        pipeline_cpu = time.process_time() - cpu_started
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        recorder.restore()
        missing = await _uncovered(rt, cubes, ids)
        passages = [c for c in recorder.calls if c[1] == "passage"]
        recorder.calls = passages
        cpu_started = time.process_time()
        raw_s = await recorder.replay()
        raw_cpu = time.process_time() - cpu_started
        memories = sum([await rt.graph.count(c) for c in cubes])
    texts = sum(len(t) for t, _ in passages)
    figures = {
        "turns_per_s": round(turns / pipeline_s, 2),
        "data": "locomo" if args.locomo else "synthetic",
        "ingest_turns_per_s": round(turns / pipeline_s, 2),
        "embedder_raw_per_s": round(turns / raw_s, 2),
        "ratio": round(raw_s / pipeline_s, 3),
        "turns": turns,
        "memories": memories,
        "texts_embedded": texts,
        "embed_calls": len(passages),
        "pipeline_s": round(pipeline_s, 2),
        "pipeline_embed_s": round(recorder.seconds, 2),
        "raw_embed_s": round(raw_s, 2),
        "pipeline_cpu_s": round(pipeline_cpu, 2),
        "cpu_s_per_1000_turns": round(1000 * pipeline_cpu / turns, 1),
        "tokens_per_turn": round(recorder.tokens / turns, 1),
        "raw_cpu_s": round(raw_cpu, 2),
        "cpu_ratio": round(raw_cpu / pipeline_cpu, 3) if pipeline_cpu else None,
        "turns_not_searchable": missing,
        "loadavg": round(os.getloadavg()[0], 2),
    }
    _print(figures, settings.derivation.embedder_url)
    return figures


def _print(f: dict[str, Any], embedder: str) -> None:
    table = Table(title=f"fast-mode ingest ({embedder}, async adds then settle)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row(
        "turns / memories / texts embedded", f"{f['turns']} / {f['memories']} / {f['texts_embedded']}"
    )
    table.add_row("embed calls (batches)", str(f["embed_calls"]))
    table.add_row("model tokens embedded per turn", f"{f['tokens_per_turn']:.1f}")
    table.add_row("pipeline: first add -> searchable (s)", f"{f['pipeline_s']:.2f}")
    table.add_row("  of which inside embedder calls (s)", f"{f['pipeline_embed_s']:.2f}")
    table.add_row("raw embedder, same batches (s)", f"{f['raw_embed_s']:.2f}")
    table.add_row("CPU s, all threads: pipeline / raw", f"{f['pipeline_cpu_s']:.2f} / {f['raw_cpu_s']:.2f}")
    table.add_row("CPU s per 1000 turns (pipeline; load-independent)", f"{f['cpu_s_per_1000_turns']:.1f}")
    table.add_row("pipeline turns/s", f"{f['ingest_turns_per_s']:.2f}")
    table.add_row("raw embedder turns/s", f"{f['embedder_raw_per_s']:.2f}")
    table.add_row("ratio (target >= 0.9)", f"{f['ratio']:.3f}")
    table.add_row("CPU ratio (raw / pipeline CPU s; load-independent)", f"{f['cpu_ratio']:.3f}")
    table.add_row("turns not searchable", str(f["turns_not_searchable"]))
    Console(width=120).print(table)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--locomo", default="", help="LoCoMo JSON file to add (else synthetic turns)")
    parser.add_argument("--conversations", type=int, default=0, help="first N LoCoMo conversations (0: all)")
    parser.add_argument("--chart", default="docs/bench/ingest.png", help="PNG chart path ('' for none)")
    parser.add_argument("--turns", type=int, default=600, help="synthetic turns to ingest")
    parser.add_argument("--session-turns", type=int, default=20, help="turns per session (one add each)")
    parser.add_argument("--sessions", type=int, default=10, help="sessions per conversation (one cube each)")
    parser.add_argument("--profile", default="", help="write cProfile stats of the pipeline phase here")
    parser.add_argument("--dir", default=None, help="parent folder of the temp data directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-", dir=args.dir) as home:
        figures = asyncio.run(measure(args, Path(home)))
    if args.chart:
        ingest_chart(figures, Path(args.chart))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
