"""Data and access commands of the `memos` CLI: users, keys, cubes, add, search, get, delete, forget."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import typer

from memos.application.service import MemoryService
from memos.cli import CONFIG, _run, _settings, app, console
from memos.runtime import Runtime

__all__ = ["cubes_app", "keys_app", "users_app"]

logger = logging.getLogger(__name__)

users_app = typer.Typer(help="Users.")
keys_app = typer.Typer(help="API keys (stored hashed).")
cubes_app = typer.Typer(help="Cubes.")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
app.add_typer(cubes_app, name="cubes")
T = TypeVar("T")
JSON = typer.Option(False, "--json", help="Machine-readable output.")


def _with_service(config: str | None, fn: Callable[[MemoryService], Awaitable[T]], *, stages: bool = True) -> T:
    async def go() -> T:
        async with Runtime(_settings(config), run_stages=stages) as rt:
            return await fn(MemoryService(rt))

    return _run(go())


def _emit(data: Any, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")
    else:
        console.print_json(json.dumps(data, ensure_ascii=False, default=str))


@users_app.command("create")
def users_create(user_id: str, name: str = "", admin: bool = False, config: str | None = CONFIG) -> None:
    """Register a user."""
    created = _with_service(config, lambda s: s.create_user(user_id, user_name=name,
                                                             role="admin" if admin else "user"), stages=False)
    console.print(f"user {user_id!r} {'created' if created else 'already exists'}")


@users_app.command("list")
def users_list(config: str | None = CONFIG, as_json: bool = JSON) -> None:
    """List users."""
    async def fn(s: MemoryService) -> Any:
        return s.control.users()

    _emit(_with_service(config, fn, stages=False), as_json)


@keys_app.command("issue")
def keys_issue(user_id: str, name: str = "", config: str | None = CONFIG) -> None:
    """Issue an API key for a user; the key is printed once."""
    key = _with_service(config, lambda s: s.issue_key(user_id, name=name), stages=False)
    sys.stdout.write(key + "\n")


@keys_app.command("revoke")
def keys_revoke(user_id: str, key_id: str, config: str | None = CONFIG) -> None:
    """Revoke an API key by its id (the part after 'mk_')."""
    _with_service(config, lambda s: s.revoke_key(key_id, user_id=user_id), stages=False)
    console.print(f"revoked {key_id}")


@cubes_app.command("create")
def cubes_create(cube_id: str, owner: str = typer.Option(..., "--owner"), config: str | None = CONFIG) -> None:
    """Create a cube owned by a user."""
    created = _with_service(config, lambda s: s.create_cube(cube_id, owner_id=owner), stages=False)
    console.print(f"cube {cube_id!r} {'created' if created else 'already exists'}")


@cubes_app.command("share")
def cubes_share(cube_id: str, owner: str = typer.Option(..., "--owner"), user: str = typer.Option(..., "--user"),
                access: str = typer.Option("read", help="read, write or none"), config: str | None = CONFIG) -> None:
    """Share a cube with another user."""
    _with_service(config, lambda s: s.share_cube(cube_id, owner_id=owner, user_id=user,
                                                 access=access), stages=False)  # type: ignore[arg-type]
    console.print(f"cube {cube_id!r} shared with {user!r} ({access})")


@app.command()
def add(text: str, user: str = typer.Option(..., "--user"), cube: str = typer.Option(..., "--cube"),
        mode: str = typer.Option("fine", help="fast or fine"), config: str | None = CONFIG, as_json: bool = JSON) -> None:
    """Add a message (sync: returns once its memories are searchable)."""
    result = _with_service(config, lambda s: s.add(user, [cube], [{"role": "user", "content": text}],
                                                   mode=mode))  # type: ignore[arg-type]
    _emit(result, as_json)


@app.command()
def search(query: str, user: str = typer.Option(..., "--user"), cube: list[str] = typer.Option(..., "--cube"),
           top_k: int = 10, config: str | None = CONFIG, as_json: bool = JSON) -> None:
    """Search cubes the user may read."""
    _emit(_with_service(config, lambda s: s.search(user, cube, query, top_k=top_k), stages=False), as_json)


@app.command()
def get(user: str = typer.Option(..., "--user"), cube: str = typer.Option(..., "--cube"),
        memory_id: str | None = typer.Option(None, "--id"), config: str | None = CONFIG, as_json: bool = JSON) -> None:
    """Get one memory by id, or every memory of a cube."""
    if memory_id:
        _emit(_with_service(config, lambda s: s.get_memory(user, cube, memory_id), stages=False), as_json)
    else:
        _emit(_with_service(config, lambda s: s.get_all(user, cube), stages=False), as_json)


@app.command()
def delete(user: str = typer.Option(..., "--user"), cube: str = typer.Option(..., "--cube"),
           memory_id: list[str] = typer.Option(..., "--id"), config: str | None = CONFIG) -> None:
    """Delete (retire) memories of one cube."""
    done = _with_service(config, lambda s: s.delete(user, cube, memory_id))
    console.print(f"deleted {len(done)} memories")


@app.command()
def forget(user: str | None = typer.Option(None, "--user"), cube: str | None = typer.Option(None, "--cube"),
           config: str | None = CONFIG) -> None:
    """Remove every trace of a user (and its cubes) or of a cube, from every projection and the log."""
    if bool(user) == bool(cube):
        console.print("[red]give exactly one of --user or --cube[/red]")
        raise typer.Exit(2)
    started = time.perf_counter()
    if cube:
        _with_service(config, lambda s: s.forget_cube(cube), stages=False)
        console.print(f"forgot cube {cube!r} in {time.perf_counter() - started:.3f}s")
    else:
        assert user is not None
        cubes = _with_service(config, lambda s: s.forget_user(user), stages=False)
        console.print(f"forgot user {user!r} and cubes {cubes} in {time.perf_counter() - started:.3f}s")


@app.command("export")
def export_cube(directory: str, user: str = typer.Option(..., "--user"), cube: str = typer.Option(..., "--cube"),
                include_retired: bool = typer.Option(False, help="Also export retired memories (history)."),
                config: str | None = CONFIG) -> None:
    """Export a cube as a MemCube directory (config.json plus textual_memory.jsonl, embeddings included)."""
    from pathlib import Path

    folder = Path(directory)
    if folder.exists() and any(folder.iterdir()):
        console.print(f"[red]directory {directory!r} is not empty[/red]")
        raise typer.Exit(2)
    records = _with_service(config, lambda s: s.export_memories(user, cube, include_retired=include_retired),
                            stages=False)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"cube_id": cube, "user_id": user, "exported_by": "memos"},
                                                   indent=2) + "\n")
    with (folder / "textual_memory.jsonl").open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    console.print(f"exported {len(records)} memories of {cube!r} to {directory}")


@app.command("import")
def import_cube(directory: str, user: str = typer.Option(..., "--user"), cube: str = typer.Option(..., "--cube"),
                config: str | None = CONFIG) -> None:
    """Import a MemCube directory's memories into a cube (idempotent by memory id)."""
    from pathlib import Path

    path = Path(directory) / "textual_memory.jsonl"
    if not path.is_file():
        console.print(f"[red]{str(path)!r} does not exist[/red]")
        raise typer.Exit(2)
    from memos.memories.textual.cube_memory import memory_draft

    drafts = [memory_draft(json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    async def run(s: MemoryService) -> list[str]:
        await s.check_write(user, cube)
        return await s.import_memories(user, cube, drafts)

    added = _with_service(config, run)
    console.print(f"imported {len(added)} memories into {cube!r} ({len(drafts) - len(added)} already there)")
