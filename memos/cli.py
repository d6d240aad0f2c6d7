"""The `memos` command line: publish, tail, replay, status, worker, demo and models (the data, access, KV
and server commands register from ``memos.cli_data``, ``memos.cli_kv`` and ``memos.cli_server``).

Importing this module is cheap: typer and the standard library only. The application layer, the runtime,
rich and the models are imported inside the commands that use them, so ``memos --help`` starts at once.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from memos.application.service import MemoryService
    from streams.settings import AppSettings

__all__ = ["CONFIG", "PLAIN", "app", "console", "err", "fail", "main", "run", "service", "settings"]

logger = logging.getLogger(__name__)

PLAIN: dict[str, Any] = {"rich_markup_mode": None, "pretty_exceptions_enable": False, "no_args_is_help": True}
"""Typer options of every command group: plain click help (rich is not imported for --help, which keeps
startup fast) and standard tracebacks (rich's show local variables, secrets included)."""

app = typer.Typer(help="An event-sourced memory OS for LLM agents (MemOS-compatible).", **PLAIN)
models_app = typer.Typer(help="Local models for offline use.", **PLAIN)
app.add_typer(models_app, name="models")
T = TypeVar("T")

CONFIG = typer.Option(None, "--config", "-c", help="Config name in configs/ or a YAML path (default: default).")
EXIT_ERROR = 2
"""Exit status of a refused or failed command (bad input, unknown or unreadable cube, engine error)."""


@cache
def console() -> Console:
    """Standard output, through rich (imported on first use)."""
    from rich.console import Console

    return Console()


@cache
def err() -> Console:
    """Standard error, through rich (imported on first use)."""
    from rich.console import Console

    return Console(stderr=True)


def fail(message: str) -> typer.Exit:
    """Print a one-line error to stderr; returns the Exit to raise."""
    err().print(f"[red]error:[/red] {message}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_ERROR)


def settings(config: str | None) -> AppSettings:
    """The settings of ``--config`` (ConfigError becomes a one-line error)."""
    from schemas.errors import ConfigError
    from streams.settings import load_settings

    try:
        return load_settings(config)
    except ConfigError as exc:
        raise fail(str(exc)) from exc


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; errors of the system's error tree become a one-line error and exit 2."""
    import asyncio

    from schemas.errors import MemorySystemError

    try:
        return asyncio.run(coro)
    except MemorySystemError as exc:
        raise fail(str(exc)) from exc
    except TimeoutError as exc:
        raise fail(f"timed out: {exc or 'the stages did not catch up in time'}") from exc


@asynccontextmanager
async def service(config: str | None, *, stages: bool = False, stage_names: set[str] | None = None,
                  replays: bool = False) -> AsyncIterator[MemoryService]:
    """The application layer over a started runtime (``stages``: this process hosts the processors;
    ``replays``: the replay helper starts before the runtime does, so it is ready by the first replay)."""
    from memos.application.service import MemoryService
    from memos.runtime import Runtime

    runtime = Runtime(settings(config), run_stages=stages, stage_names=stage_names)
    if replays:
        runtime.start_replay_helper()
    async with runtime as rt:
        yield MemoryService(rt)


# --- publish ----------------------------------------------------------------------------------------------


@app.command()
def publish(
    file: Path = typer.Argument(..., help="JSON lines, one conversation each: user_id, cube_id, messages."),
    config: str | None = CONFIG,
    wait: bool = typer.Option(
        False, "--wait", help="Host the processors here and wait until each line's memories are searchable."
    ),
) -> None:
    """Publish conversation events from a JSONL file. Every line is checked first (JSON shape, identifiers,
    text, size against the add limit, UTF-8); one bad line and nothing is published."""
    from memos.cli_publish import PublishFileInvalid, read_publish_file

    try:
        lines = read_publish_file(file)
    except PublishFileInvalid as exc:
        for problem in exc.problems:
            err().print(f"[red]refused:[/red] {problem}", highlight=False, soft_wrap=True)
        err().print(f"nothing published: {len(exc.problems)} problem(s) in {str(file)!r}", highlight=False)
        raise typer.Exit(EXIT_ERROR) from exc

    from schemas.errors import MemorySystemError

    done: list[dict[str, Any]] = []

    async def go() -> None:
        # without --wait only the control stage runs here (a new cube is registered before its first add)
        async with service(config, stages=True, stage_names=None if wait else {"control"}) as svc:
            for line in lines:
                try:
                    done.extend(await svc.add(
                        line.user_id, [line.cube_id], line.message_list(), session_id=line.session_id,
                        mode=line.mode, async_mode="sync" if wait else "async",  # type: ignore[arg-type]
                        info=line.info, custom_tags=line.custom_tags, task_id=line.task_id))
                except MemorySystemError as exc:  # refused by the service (access), or the engine failed
                    err().print(f"[red]refused:[/red] line {line.number}: {exc}", highlight=False, soft_wrap=True)
                    err().print(f"published {len(done)} conversation(s) before line {line.number}; "
                                f"lines {line.number}-{lines[-1].number} were not published", highlight=False)
                    raise typer.Exit(EXIT_ERROR) from exc

    run(go())
    results = done
    out = console()
    out.print(f"published {len(results)} conversation event(s)", highlight=False)
    for r in results:
        out.print(f"  cube={r['cube_id']} task={r['task_id']} status={r['status']} memories={len(r['memories'])}",
                  highlight=False, markup=False, soft_wrap=True)
    if not wait and results:
        out.print("memories are derived by the next process that hosts the processors "
                  "(memos worker, memos serve, or publish --wait)", highlight=False)


# --- replay, tail, status ----------------------------------------------------------------------------------

USER = typer.Option(None, "--user", help="Act as this user (access checked); default: operator, every cube.")


@app.command()
def replay(cube: str = typer.Option(..., "--cube", help="Cube to rebuild."), user: str | None = USER,
           config: str | None = CONFIG) -> None:
    """Drop a cube's projections and rebuild them from the log (an unknown cube is an error)."""

    async def go() -> int:
        async with service(config, replays=True) as svc:
            with console().status(f"replaying cube {cube!r}"):
                applied: int = await svc.replay(cube, user_id=user)
            return applied

    applied = run(go())
    console().print(f"replayed cube {cube!r}: {applied} memory event(s) applied", highlight=False)


@app.command()
def tail(
    cube: list[str] = typer.Option(None, "--cube", help="Only these cubes (repeatable); unknown cubes are an error."),
    user: str | None = USER,
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Start at offset 0."),
    from_offset: int | None = typer.Option(None, "--from-offset", min=0, help="Start at this offset per partition."),
    cursor: str | None = typer.Option(None, "--cursor", help="Resume exactly: 'partition:offset,...'."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Stop after N events."),
    follow: bool | None = typer.Option(
        None, "--follow/--no-follow",
        help="Wait for new events at the end of the log (default: follow, unless --limit is given).",
    ),
    config: str | None = CONFIG,
) -> None:
    """Print memory-change events with their positions (resumable with --cursor).

    Without --limit it follows the log until Ctrl-C; with --limit it stops after N events or at the
    current end of the log, whichever comes first (add --follow to wait for N events).
    """
    from memos.application.feeds import format_cursor, parse_cursor

    start: Any = "now"
    if from_beginning:
        start = "beginning"
    if from_offset is not None:
        start = from_offset
    keep_following = limit is None if follow is None else follow

    async def go() -> None:
        begin = parse_cursor(cursor) if cursor else start
        async with service(config) as svc:
            count = 0
            events = await svc.feed(user, cube or None, start=begin, follow=keep_following)
            async for envelope, after in events:
                position = envelope.position
                item = {"position": {"topic": position.topic, "partition": position.partition,
                                     "offset": position.offset},
                        "cursor": format_cursor(after),
                        "event": envelope.event.model_dump(mode="json", exclude={"embedding"})}
                _print_feed_item(item, as_json)
                count += 1
                if limit is not None and count >= limit:
                    return

    try:
        run(go())
    except KeyboardInterrupt:
        pass


def _print_feed_item(item: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(item, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        return
    event, pos = item["event"], item["position"]
    if "source_id" in event:  # an edge: its ends and kind
        what = f"{event['source_id']} -{event.get('relation', '')}-> {event.get('target_id', '')}"
    else:
        text = event.get("memory") or event.get("reason") or event.get("error") or ""
        what = f"{event.get('memory_id', '')} {text[:80]!r}"
    console().print(f"{pos['topic']}[{pos['partition']}]@{pos['offset']} cursor={item['cursor']} "
                    f"{event['event_type']} cube={event.get('cube_id', '')} {what}",
                    markup=False, highlight=False, soft_wrap=True)


@app.command()
def status(config: str | None = CONFIG, as_json: bool = typer.Option(False, "--json")) -> None:
    """Topics, end offsets and consumer lag per processor, derivation backlog, cubes and tasks."""

    async def go() -> dict[str, Any]:
        async with service(config) as svc:
            return (await svc.system_status()).as_dict()

    report = run(go())
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
        return
    from rich.table import Table

    table = Table(title=f"log {report['log']}")
    table.add_column("topic")
    table.add_column("end offsets (partition: offset)")
    for topic, ends in report["topics"].items():
        table.add_row(topic, ", ".join(f"{p}:{o}" for p, o in ends.items()))
    console().print(table)
    lag = Table(title="consumer lag per processor")
    lag.add_column("processor")
    lag.add_column("topic")
    lag.add_column("lag", justify="right")
    lag.add_column("oldest waited", justify="right")
    for group, topics in report["lag"].items():
        for topic, value in topics.items():
            waited = report["waited_s"].get(group, {}).get(topic)
            lag.add_row(group, topic, str(value), "" if waited is None else f"{waited:.1f} s")
    console().print(lag)
    for line in report["behind"]:
        console().print(f"behind: {line}", style="bold red", highlight=False)
    console().print(f"cubes: {report['cubes']}  tasks: {report['tasks']}  "
                    f"derivation backlog: {report['backlog']}", highlight=False)


# --- demo, worker, models ----------------------------------------------------------------------------------


@app.command()
def demo(config: str | None = CONFIG) -> None:
    """Add a short conversation on the embedded default and search it."""
    import uuid

    messages = [
        {"role": "user", "content": "I'm planning a trip to Guangzhou this summer. Which chain hotels are there?"},
        {"role": "assistant", "content": "You could consider 7 Days Inn, Ji Hotel or Hilton."},
        {"role": "user", "content": "I'll choose 7 Days Inn. I prefer quiet rooms."},
    ]

    async def go() -> dict[str, Any]:
        async with service(config, stages=True) as svc:
            cube = f"demo_cube_{uuid.uuid4().hex[:6]}"
            added = await svc.add("demo_user", [cube], messages, mode="fine")
            found = await svc.search("demo_user", [cube], "Which hotel did I pick?", top_k=3)
            return {"added": added, "found": found}

    result = run(go())
    out = console()
    for entry in result["added"]:
        out.print(f"[bold]added[/bold] {len(entry['memories'])} memories to {entry['cube_id']}")
        for m in entry["memories"]:
            out.print(f"  - [{m['memory_type']}] {m['memory']}", markup=False, soft_wrap=True)
    out.print("[bold]search[/bold] 'Which hotel did I pick?'")
    for bucket in ("text_mem", "pref_mem", "tool_mem", "skill_mem"):
        for group in result["found"].get(bucket) or []:
            for m in group.get("memories", []):
                relativity = m.get("metadata", {}).get("relativity", 0)
                out.print(f"  {relativity:.3f} [{bucket}] {m['memory']}", markup=False, soft_wrap=True)


@app.command()
def worker(config: str | None = CONFIG,
           engine: str = typer.Option("runner", help="runner (our runner) or faust (faust-streaming app)."),
           stages: str = typer.Option("all", help="Comma list of stages to host (all: every stage)."),
           group_prefix: str = typer.Option(
               "", help="Prefix of the consumer groups (faust engine; empty: log.group_prefix).")) -> None:
    """Host the processors over the configured log until interrupted (scaled mode: one of many workers)."""
    wanted = None if stages == "all" else {s.strip() for s in stages.split(",") if s.strip()}
    if engine not in ("runner", "faust"):
        raise fail(f"--engine must be runner or faust, not {engine!r}")
    loaded = settings(config)
    if engine == "faust":
        from memos.runtime_tools import run_faust_worker
        from schemas.errors import MemorySystemError

        try:
            run_faust_worker(loaded, stage_names=sorted(wanted) if wanted is not None else None,
                             group_prefix=group_prefix or None)
        except MemorySystemError as exc:
            raise fail(str(exc)) from exc
        return

    async def go() -> None:
        import asyncio
        import signal

        from schemas.errors import ProcessingError

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with service(config, stages=True, stage_names=wanted) as svc:
            console().print(f"worker running on {loaded.log_url()} (Ctrl-C to stop)", highlight=False)
            failure = asyncio.ensure_future(svc.stage_failure())
            await asyncio.wait({failure, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
            if failure.done() and failure.result():  # exit non-zero, for a supervisor (memos serve) to restart it
                raise ProcessingError(f"stopped: {'; '.join(failure.result())}; the worker exits to be restarted")
            failure.cancel()

    run(go())
    console().print("worker stopped: batches finished and committed")


@models_app.command("make-tiny")
def make_tiny(directory: Path = typer.Argument(..., help="Where to write the model."),
              arch: str = typer.Option("llama", help="llama or qwen2")) -> None:
    """Write a small random-weight causal LM with a real tokenizer and chat template."""
    from memos.runtime_tools import make_tiny_model
    from schemas.errors import ConfigError

    try:
        path = make_tiny_model(directory, arch=arch)
    except ConfigError as exc:
        raise fail(str(exc)) from exc
    console().print(f"wrote tiny {arch} model to {path}", highlight=False)


def main() -> None:
    """Entry point."""
    app()


from memos import cli_data as _cli_data  # noqa: E402,F401  (registers the data commands)
from memos import cli_kv as _cli_kv  # noqa: E402,F401  (registers kv-worker)
from memos import cli_server as _cli_server  # noqa: E402,F401  (registers serve and mcp)
