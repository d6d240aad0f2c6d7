"""The `memos` command line: publish, tail, replay, status, worker, serve, models and data commands."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from memos.application.service import MemoryService
from memos.runtime import Runtime
from schemas.errors import MemorySystemError
from schemas.topics import ALL_TOPICS
from streams.feed import format_cursor, parse_cursor, subscribe
from streams.replay import replay_cube
from streams.settings import AppSettings, load_settings

__all__ = ["app"]

logger = logging.getLogger(__name__)

app = typer.Typer(help="An event-sourced memory OS for LLM agents (MemOS-compatible).", no_args_is_help=True)
models_app = typer.Typer(help="Local models for offline use.")
app.add_typer(models_app, name="models")
console = Console()
err = Console(stderr=True)
T = TypeVar("T")

CONFIG = typer.Option(None, "--config", "-c", help="Config name in configs/ or a YAML path (default: default).")


def _settings(config: str | None) -> AppSettings:
    return load_settings(config)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except MemorySystemError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


class PublishLine(BaseModel):
    """One line of a publish file: a conversation to record for a cube."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1)
    cube_id: str = Field(min_length=1)
    messages: list[dict[str, Any]] | str = Field(min_length=1)
    session_id: str = "default_session"
    mode: str = Field(default="fast", pattern="^(fast|fine)$")
    info: dict[str, Any] = Field(default_factory=dict)
    custom_tags: list[str] = Field(default_factory=list)
    task_id: str | None = None


def _read_publish_file(path: Path) -> list[PublishLine]:
    lines: list[PublishLine] = []
    problems: list[str] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            lines.append(PublishLine.model_validate_json(raw))
        except ValidationError as exc:
            for e in exc.errors():
                where = ".".join(str(p) for p in e["loc"]) or "line"
                problems.append(f"line {number}: field {where!r}: {e['msg']}")
    if problems:
        for problem in problems:
            err.print(f"[red]refused:[/red] {problem}")
        raise typer.Exit(2)
    return lines


@app.command()
def publish(file: Path = typer.Argument(..., exists=True, readable=True, help="JSON lines, one conversation each."),
            config: str | None = CONFIG, wait: bool = typer.Option(False, help="Wait until memories are derived.")
            ) -> None:
    """Publish conversation events from a JSONL file (all lines are validated before any is published)."""
    lines = _read_publish_file(file)

    async def go() -> list[dict[str, Any]]:
        async with Runtime(_settings(config), run_stages=wait) as rt:
            service = MemoryService(rt)
            out = []
            for line in lines:
                messages = [{"role": "user", "content": line.messages}] if isinstance(line.messages, str) \
                    else line.messages
                out.extend(await service.add(line.user_id, [line.cube_id], messages, session_id=line.session_id,
                                             mode=line.mode, async_mode="sync" if wait else "async",  # type: ignore[arg-type]
                                             info=line.info, custom_tags=line.custom_tags, task_id=line.task_id))
            return out

    results = _run(go())
    console.print(f"published {len(results)} conversation event(s)")
    for r in results:
        console.print(f"  cube={r['cube_id']} task={r['task_id']} status={r['status']} memories={len(r['memories'])}")


@app.command()
def replay(cube: str = typer.Option(..., "--cube", help="Cube to rebuild."), config: str | None = CONFIG) -> None:
    """Drop a cube's projections and rebuild them from the log."""

    async def go() -> int:
        async with Runtime(_settings(config), run_stages=False) as rt:
            with Progress(console=console, transient=False) as bar:
                task = bar.add_task(f"replaying {cube}", total=None)

                def advance(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                return await replay_cube(rt, cube, progress=advance)

    applied = _run(go())
    console.print(f"replayed cube {cube!r}: {applied} memory event(s) applied")


@app.command()
def tail(cube: list[str] = typer.Option(None, "--cube", help="Only these cubes (repeatable)."),
         from_beginning: bool = typer.Option(False, "--from-beginning", help="Start at offset 0."),
         from_offset: int | None = typer.Option(None, "--from-offset", help="Start at this offset per partition."),
         cursor: str | None = typer.Option(None, "--cursor", help="Resume exactly: 'partition:offset,...'."),
         as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
         limit: int | None = typer.Option(None, "--limit", help="Stop after N events."),
         follow: bool = typer.Option(True, "--follow/--no-follow", help="Wait for new events."),
         config: str | None = CONFIG) -> None:
    """Print memory-change events with their positions (resumable with --cursor)."""
    start: Any = "now"
    if from_beginning:
        start = "beginning"
    if from_offset is not None:
        start = from_offset
    if cursor:
        start = parse_cursor(cursor)
    if limit is not None and limit <= 0:
        return

    async def go() -> None:
        async with Runtime(_settings(config), run_stages=False) as rt:
            count = 0
            async for envelope, after in subscribe(rt.log, cube_ids=cube or None, start=start, follow=follow):
                event = envelope.event
                if as_json:
                    sys.stdout.write(json.dumps({"position": {"topic": envelope.position.topic,
                                                              "partition": envelope.position.partition,
                                                              "offset": envelope.position.offset},
                                                 "cursor": format_cursor(after),
                                                 "event": event.model_dump(mode="json", exclude={"embedding"})},
                                                ensure_ascii=False) + "\n")
                    sys.stdout.flush()
                else:
                    text = getattr(event, "memory", "") or getattr(event, "reason", "")
                    console.print(f"{envelope.position} {event.event_type} cube={event.key} "
                                  f"{getattr(event, 'memory_id', '')} {text[:80]!r}", markup=False)
                count += 1
                if limit is not None and count >= limit:
                    return

    try:
        _run(go())
    except KeyboardInterrupt:
        pass


@app.command()
def status(config: str | None = CONFIG, as_json: bool = typer.Option(False, "--json")) -> None:
    """Topics, end offsets and consumer lag per processor."""
    groups = ("deriver", "refiner", "projector", "control", "scheduler", "kv-warmer")

    async def go() -> dict[str, Any]:
        async with Runtime(_settings(config), run_stages=False) as rt:
            report: dict[str, Any] = {"log": rt.settings.log_url(), "topics": {}, "lag": {}}
            for topic in ALL_TOPICS:
                ends = await rt.log.end_offsets(topic)
                report["topics"][topic] = {str(p): o for p, o in sorted(ends.items())}
                for group in groups:
                    committed = await rt.log.committed(group, topic)
                    if committed:
                        lag = sum(max(0, end - committed.get(p, 0)) for p, end in ends.items())
                        report["lag"].setdefault(group, {})[topic] = lag
            report["tasks"] = rt.control.task_counts()
            report["cubes"] = len(rt.control.all_cubes())
            return report

    report = _run(go())
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
        return
    table = Table(title=f"log {report['log']}")
    table.add_column("topic")
    table.add_column("end offsets (partition: offset)")
    for topic, ends in report["topics"].items():
        table.add_row(topic, ", ".join(f"{p}:{o}" for p, o in ends.items()))
    console.print(table)
    lag = Table(title="consumer lag per processor")
    lag.add_column("processor")
    lag.add_column("topic")
    lag.add_column("lag", justify="right")
    for group, topics in report["lag"].items():
        for topic, value in topics.items():
            lag.add_row(group, topic, str(value))
    console.print(lag)
    console.print(f"cubes: {report['cubes']}  tasks: {report['tasks']}")


@app.command()
def demo(config: str | None = CONFIG) -> None:
    """Add a short conversation on the embedded default and search it."""
    messages = [
        {"role": "user", "content": "I'm planning a trip to Guangzhou this summer. Which chain hotels are there?"},
        {"role": "assistant", "content": "You could consider 7 Days Inn, Ji Hotel or Hilton."},
        {"role": "user", "content": "I'll choose 7 Days Inn. I prefer quiet rooms."},
    ]

    async def go() -> dict[str, Any]:
        async with Runtime(_settings(config)) as rt:
            service = MemoryService(rt)
            cube = f"demo_cube_{uuid.uuid4().hex[:6]}"
            added = await service.add("demo_user", [cube], messages, mode="fine")
            found = await service.search("demo_user", [cube], "Which hotel did I pick?", top_k=3)
            return {"added": added, "found": found}

    result = _run(go())
    for entry in result["added"]:
        console.print(f"[bold]added[/bold] {len(entry['memories'])} memories to {entry['cube_id']}")
        for m in entry["memories"]:
            console.print(f"  - [{m['memory_type']}] {m['memory']}", markup=False)
    console.print("[bold]search[/bold] 'Which hotel did I pick?'")
    for bucket in result["found"].get("text_mem", []):
        for m in bucket["memories"]:
            console.print(f"  {m['metadata'].get('relativity', 0):.3f} {m['memory']}", markup=False)


@app.command()
def worker(config: str | None = CONFIG,
           engine: str = typer.Option("runner", help="runner (our runner) or faust (faust-streaming app)."),
           stages: str = typer.Option("all", help="Comma list of stages to host (all: every stage)."),
           group_prefix: str = typer.Option("", help="Prefix of the consumer groups (faust engine).")) -> None:
    """Host the processors over the configured log until interrupted (scaled mode: one of many workers)."""
    settings = _settings(config)
    wanted = None if stages == "all" else {s.strip() for s in stages.split(",") if s.strip()}
    if engine == "faust":
        from streams.pipeline.faust_app import run_faust_worker

        try:
            run_faust_worker(settings, stage_names=wanted, group_prefix=group_prefix)
        except MemorySystemError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from exc
        return

    async def go() -> None:
        import signal

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with Runtime(settings, stage_names=wanted):
            console.print(f"worker running on {settings.log_url()} (Ctrl-C to stop)")
            await stop.wait()

    _run(go())
    console.print("worker stopped: batches finished and committed")


@models_app.command("make-tiny")
def make_tiny(directory: Path = typer.Argument(..., help="Where to write the model."),
              arch: str = typer.Option("llama", help="llama or qwen2")) -> None:
    """Write a small random-weight causal LM with a real tokenizer and chat template."""
    from memory_store.kv.tiny import make_tiny_model

    path = make_tiny_model(directory, arch=arch)  # type: ignore[arg-type]
    console.print(f"wrote tiny {arch} model to {path}")


def main() -> None:
    """Entry point."""
    app()


from memos import cli_data as _cli_data  # noqa: E402,F401  (registers the data commands)
from memos import cli_kv as _cli_kv  # noqa: E402,F401  (registers kv-worker)
from memos import cli_server as _cli_server  # noqa: E402,F401  (registers serve and mcp)
