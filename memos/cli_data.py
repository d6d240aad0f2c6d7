"""Data and access commands of the `memos` CLI: users, keys, cubes, add, search, get, delete, forget, export,
import. Each is one call of the application layer (``memos.application``), imported when the command runs."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from memos.cli import CONFIG, PLAIN, app, console, fail, run, service, settings

if TYPE_CHECKING:
    from memos.application.service import MemoryService

__all__ = ["cubes_app", "keys_app", "users_app"]

logger = logging.getLogger(__name__)

users_app = typer.Typer(help="Users.", **PLAIN)
keys_app = typer.Typer(help="API keys (stored hashed).", **PLAIN)
cubes_app = typer.Typer(help="Cubes: create, list, share.", **PLAIN)
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
app.add_typer(cubes_app, name="cubes")
T = TypeVar("T")
JSON = typer.Option(False, "--json", help="Machine-readable output (one JSON document).")


CONTROL = frozenset({"control"})
"""Stages a registry write hosts: the control stage projects users, keys, cubes and shares from the log."""


def _call(config: str | None, fn: Callable[[MemoryService], Awaitable[T]], *,
          stages: bool | frozenset[str] = False) -> T:
    """Run one use case on a fresh runtime. ``stages``: host every processor (True, for writes that wait
    for derived memories) or the named ones (registry writes wait for the control stage only)."""

    async def go() -> T:
        names = set(stages) if isinstance(stages, frozenset) else None
        async with service(config, stages=bool(stages), stage_names=names) as svc:
            return await fn(svc)

    return run(go())


def _plain(data: Any) -> Any:
    if is_dataclass(data) and not isinstance(data, type):
        return asdict(data)
    if isinstance(data, list | tuple):
        return [_plain(d) for d in data]
    return data


def _emit(data: Any, as_json: bool) -> None:
    text = json.dumps(_plain(data), ensure_ascii=False, default=str)
    if as_json:
        sys.stdout.write(text + "\n")
    else:
        console().print_json(text)


# --- users and keys ---------------------------------------------------------------------------------------


@users_app.command("create")
def users_create(user_id: str, name: str = "", admin: bool = False, config: str | None = CONFIG) -> None:
    """Register a user."""
    created = _call(config, lambda s: s.create_user(user_id, user_name=name, role="admin" if admin else "user"),
                    stages=CONTROL)
    console().print(f"user {user_id!r} {'created' if created else 'already exists'}", highlight=False)


@users_app.command("list")
def users_list(config: str | None = CONFIG, as_json: bool = JSON) -> None:
    """List users."""
    _emit(_call(config, lambda s: s.list_users()), as_json)


@keys_app.command("issue")
def keys_issue(user_id: str, name: str = "", config: str | None = CONFIG) -> None:
    """Issue an API key for a user; the key is printed once (only its hash is stored)."""
    key = _call(config, lambda s: s.issue_key(user_id, name=name), stages=CONTROL)
    sys.stdout.write(key + "\n")


@keys_app.command("revoke")
def keys_revoke(user_id: str, key_id: str, config: str | None = CONFIG) -> None:
    """Revoke an API key by its id (the part after 'mk_')."""
    _call(config, lambda s: s.revoke_key(key_id, user_id=user_id), stages=CONTROL)
    console().print(f"revoked {key_id}", highlight=False)


# --- cubes ------------------------------------------------------------------------------------------------


@cubes_app.command("create")
def cubes_create(cube_id: str, owner: str = typer.Option(..., "--owner"), config: str | None = CONFIG) -> None:
    """Create a cube owned by a user."""
    created = _call(config, lambda s: s.create_cube(cube_id, owner_id=owner), stages=CONTROL)
    console().print(f"cube {cube_id!r} {'created' if created else 'already exists'}", highlight=False)


@cubes_app.command("list")
def cubes_list(user: str = typer.Option(..., "--user", help="Whose cubes: owned, or shared with them."),
               config: str | None = CONFIG, as_json: bool = JSON) -> None:
    """List the cubes a user owns or that are shared with them, with the user's access."""
    cubes = _call(config, lambda s: s.list_cubes(user))
    if as_json:
        _emit(cubes, True)
        return
    if not cubes:
        console().print(f"user {user!r} has no cubes", highlight=False)
        return
    from rich.table import Table

    table = Table(title=f"cubes of {user}")
    for column in ("cube", "name", "owner", "access"):
        table.add_column(column)
    for c in cubes:
        table.add_row(c.cube_id, c.cube_name, c.owner_id, c.access)
    console().print(table)


@cubes_app.command("share")
def cubes_share(cube_id: str, owner: str = typer.Option(..., "--owner"), user: str = typer.Option(..., "--user"),
                access: str = typer.Option("read", help="read, write or none (none withdraws the share)"),
                config: str | None = CONFIG) -> None:
    """Share a cube with another user."""
    if access not in ("read", "write", "none"):
        raise fail(f"--access must be read, write or none, not {access!r}")
    _call(config, lambda s: s.share_cube(cube_id, owner_id=owner, user_id=user, access=access),  # type: ignore[arg-type]
          stages=CONTROL)
    console().print(f"cube {cube_id!r} shared with {user!r} ({access})", highlight=False)


# --- memories ---------------------------------------------------------------------------------------------


@app.command()
def add(text: str, user: str = typer.Option(..., "--user"), cube: str = typer.Option(..., "--cube"),
        mode: str = typer.Option("fine", help="fast or fine"), config: str | None = CONFIG,
        as_json: bool = JSON) -> None:
    """Add a message (sync: returns once its memories are searchable)."""
    if mode not in ("fast", "fine"):
        raise fail(f"--mode must be fast or fine, not {mode!r}")
    result = _call(config, lambda s: s.add(user, [cube], [{"role": "user", "content": text}], mode=mode),  # type: ignore[arg-type]
                    stages=True)
    if as_json:
        _emit(result, True)
        return
    for added in result:  # one line per cube, then its memories
        console().print(f"{added['cube_id']}: {added['status']}" + (f" ({added['error']})" if added.get("error") else ""),
                        markup=False, highlight=False)
        for memory in added.get("memories") or []:
            console().print(f"  {memory['memory_type']:<17} {memory['memory']}", markup=False, highlight=False,
                            soft_wrap=True)


@app.command()
def search(query: str, user: str = typer.Option(..., "--user"), cube: list[str] = typer.Option(..., "--cube"),
           top_k: int = 10, config: str | None = CONFIG, as_json: bool = JSON) -> None:
    """Search cubes the user may read (--json: the whole MemOS answer, with metadata and score parts)."""
    found = _call(config, lambda s: s.search(user, cube, query, top_k=top_k))
    if as_json:
        _emit(found, True)
        return
    for bucket, cubes in found.items():  # rank order within each bucket and cube; relativity in [0, 1]
        for each in cubes if isinstance(cubes, list) else []:
            for memory in each.get("memories") or []:
                relativity = (memory.get("metadata") or {}).get("relativity")
                shown = "  -  " if relativity is None else f"{relativity:.3f}"
                console().print(f"{bucket:<9} {each.get('cube_id', '')} {shown} {memory.get('memory', '')}",
                                markup=False, highlight=False, soft_wrap=True)


@app.command()
def get(user: str = typer.Option(..., "--user"), cube: str = typer.Option(..., "--cube"),
        memory_id: str | None = typer.Option(None, "--id"), config: str | None = CONFIG, as_json: bool = JSON) -> None:
    """Get one memory by id, or every memory of a cube."""
    if memory_id:
        _emit(_call(config, lambda s: s.get_memory(user, cube, memory_id)), as_json)
    else:
        _emit(_call(config, lambda s: s.get_all(user, cube)), as_json)


@app.command()
def delete(user: str = typer.Option(..., "--user"), cube: str = typer.Option(..., "--cube"),
           memory_id: list[str] = typer.Option(..., "--id"), config: str | None = CONFIG) -> None:
    """Delete (retire) memories of one cube."""
    done = _call(config, lambda s: s.delete(user, cube, memory_id), stages=True)
    console().print(f"deleted {len(done)} memories", highlight=False)


@app.command()
def forget(user: str | None = typer.Option(None, "--user"), cube: str | None = typer.Option(None, "--cube"),
           config: str | None = CONFIG) -> None:
    """Remove every trace of a user (and its cubes) or of a cube, from every projection and the log."""
    if bool(user) == bool(cube):
        raise fail("give exactly one of --user or --cube")
    from memos.application.forgetting import check_forgettable
    from memos.runtime import Runtime
    from schemas.errors import MemorySystemError

    try:  # before any stage starts here: no consumer group of a live deployment is joined for nothing
        check_forgettable(Runtime(settings(config), run_stages=False))
    except MemorySystemError as exc:
        raise fail(str(exc)) from exc
    started = time.perf_counter()
    if cube:
        _call(config, lambda s: s.forget_cube(cube), stages=True)
        console().print(f"forgot cube {cube!r} in {time.perf_counter() - started:.3f}s", highlight=False)
    else:
        assert user is not None
        cubes = _call(config, lambda s: s.forget_user(user), stages=True)
        console().print(f"forgot user {user!r} and cubes {cubes} in {time.perf_counter() - started:.3f}s",
                        highlight=False)


@app.command("export")
def export_cube(directory: str, user: str = typer.Option(..., "--user"), cube: str = typer.Option(..., "--cube"),
                include_retired: bool = typer.Option(False, help="Also export retired memories (history)."),
                config: str | None = CONFIG) -> None:
    """Export a cube as a MemCube directory (config.json plus textual_memory.jsonl, embeddings included)."""
    from pathlib import Path

    folder = Path(directory)
    if folder.exists() and any(folder.iterdir()):
        raise fail(f"directory {directory!r} is not empty")
    records = _call(config, lambda s: s.export_memories(user, cube, include_retired=include_retired))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"cube_id": cube, "user_id": user, "exported_by": "memos"},
                                                   indent=2) + "\n", encoding="utf-8")
    with (folder / "textual_memory.jsonl").open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    console().print(f"exported {len(records)} memories of {cube!r} to {directory}", highlight=False)


@app.command("import")
def import_cube(directory: str, user: str = typer.Option(..., "--user"), cube: str = typer.Option(..., "--cube"),
                config: str | None = CONFIG) -> None:
    """Import a MemCube directory's memories into a cube (idempotent by memory id)."""
    from pathlib import Path

    path = Path(directory) / "textual_memory.jsonl"
    if not path.is_file():
        raise fail(f"{str(path)!r} does not exist")
    from memos.memories.textual.cube_memory import memory_draft

    drafts = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            drafts.append(memory_draft(json.loads(line)))
        except (json.JSONDecodeError, ValueError, KeyError, TypeError, RecursionError) as exc:
            raise fail(f"{str(path)!r} line {number}: {exc}") from exc

    async def go(s: MemoryService) -> list[str]:
        await s.check_write(user, cube)
        added: list[str] = await s.import_memories(user, cube, drafts)
        return added

    added = _call(config, go, stages=True)
    console().print(f"imported {len(added)} memories into {cube!r} ({len(drafts) - len(added)} already there)",
                    highlight=False)
