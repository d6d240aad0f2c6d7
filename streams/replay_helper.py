"""ReplayHelper: a pre-started process that replays the stores this process lends it, on another core."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import pickle
import subprocess
import sys
from collections.abc import Mapping, Sequence
from contextlib import suppress
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from memory_store.base import Lending, Projection
from schemas.envelope import Position
from schemas.errors import StoreUnavailable
from schemas.memory import MemoryRecord, RelationRecord
from schemas.ops import AnyOp, DropCube, RetireMemory, ReviseMemory, UpsertMemory, UpsertRelation, as_is
from schemas.topics import MEMORIES

__all__ = ["HelperJob", "ReplayHelper", "main", "merged_reads", "pack_ops", "unpack_ops"]

logger = logging.getLogger(__name__)

_READY = b"ready"
_END = b""
"""Ends a job's batches (from this process), or asks the helper to exit (in place of a job)."""


class ReplayHelper:
    """A Python process started ahead of replays (``python -m streams.replay_helper``) that replays a cube
    into stores lent to it, beside the process that lends them.

    A replay is bound by one interpreter lock: the stores' Python work, decoding included, runs on one core
    however many threads apply it. The helper is a second interpreter: this process decodes the log and
    sends it each batch's ops, cut down to the fields the lent stores read (``Projection.lending``), and
    it applies them to its own handles on those stores while this process applies the rest. It is started
    ahead because an interpreter with the store modules loaded takes about half a second to start; a replay
    begun before it is ready runs here and hands the lent stores over at the first batch boundary after it
    is. One job at a time; ``aclose`` lets it exit.
    """

    def __init__(self, preload: Sequence[str] = ()) -> None:
        self.preload = tuple(preload)
        """Modules the helper imports before it reports ready (the lent stores' own)."""
        self._process: subprocess.Popen[bytes] | None = None
        self._down: Connection | None = None
        self._up: Connection | None = None
        self._ready = False
        self._busy = False
        self.jobs = 0
        """Jobs the helper finished (applied in full)."""

    @property
    def alive(self) -> bool:
        """Whether the process runs."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        return self._process.pid if self.alive and self._process is not None else None

    def start(self) -> None:
        """Start the process (returns at once; ``ready`` says when it can take a job). Does nothing if it runs."""
        if self.alive:
            return
        self.kill()
        down_read, down_write = os.pipe()
        up_read, up_write = os.pipe()
        root = str(Path(__file__).resolve().parents[1])  # the code this process runs, wherever the helper starts
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
        try:  # its own session: a Ctrl-C at the terminal is this process's to handle (the helper exits on EOF)
            self._process = subprocess.Popen(
                [sys.executable, "-m", "streams.replay_helper", str(down_read), str(up_write), *self.preload],
                pass_fds=(down_read, up_write), stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            )
        except OSError:
            for fd in (down_read, down_write, up_read, up_write):
                os.close(fd)
            raise
        os.close(down_read)
        os.close(up_write)
        self._down, self._up = Connection(down_write, readable=False), Connection(up_read, writable=False)
        self._ready = self._busy = False

    def ready(self) -> bool:
        """Whether the helper runs, has loaded its modules and has no job (never blocks)."""
        return self._loaded() and not self._busy

    def _loaded(self) -> bool:
        if not self.alive or self._up is None:
            return False
        if not self._ready:
            try:
                if self._up.poll(0):
                    self._ready = self._up.recv_bytes() == _READY
            except (EOFError, OSError):
                self.kill()
        return self._ready

    async def wait_ready(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the helper to have loaded its modules; whether it has."""
        if not self._loaded() and self._up is not None:
            with suppress(OSError, EOFError):
                await asyncio.to_thread(self._up.poll, timeout_s)
        return self._loaded()

    def begin(self, lendings: Sequence[Lending], *, cube_id: str, drop: bool) -> HelperJob:
        """A job replaying ``cube_id`` into the stores ``lendings`` open, from the ops ``send`` gives
        (``drop``: the cube is dropped from them first). The stores must have been lent (``Projection.lend``),
        and nothing else may write them until ``finish``."""
        if self._busy or not self._loaded():
            raise StoreUnavailable("the replay helper is not ready")
        self._busy = True
        kinds = _kinds(merged_reads(lendings))
        header = ([lending.opener for lending in lendings], cube_id, drop, kinds)
        return HelperJob(self, pickle.dumps(header, protocol=pickle.HIGHEST_PROTOCOL), kinds)

    def _send(self, payload: bytes) -> None:
        if self._down is None:
            raise OSError("the replay helper is not running")
        self._down.send_bytes(payload)

    def _receive(self) -> bytes:
        if self._up is None:
            raise OSError("the replay helper is not running")
        return self._up.recv_bytes()

    def _done(self) -> None:
        self._busy = False

    def kill(self) -> None:
        """Stop the process now (a job in progress is lost: its stores are left as they are)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None
        for conn in (self._down, self._up):
            if conn is not None:
                with suppress(OSError):
                    conn.close()
        self._down = self._up = None
        self._ready = self._busy = False

    async def aclose(self) -> None:
        """Ask the helper to exit (killed after 5 s). Idempotent."""
        process = self._process
        if process is not None and process.poll() is None and not self._busy:
            with suppress(OSError):
                self._send(_END)
            with suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(process.wait, 5.0)
        self.kill()


class HelperJob:
    """One replay handed to the helper: batches of ops in log order, then ``finish``."""

    def __init__(self, helper: ReplayHelper, header: bytes, kinds: Kinds) -> None:
        self._helper = helper
        self._kinds = kinds
        self._sending: asyncio.Future[None] | None = asyncio.ensure_future(self._write(header))

    async def _write(self, payload: bytes) -> None:
        try:
            await asyncio.to_thread(self._helper._send, payload)
        except OSError as exc:
            self._helper.kill()
            raise StoreUnavailable(f"the replay helper stopped: {exc}") from exc

    async def send(self, ops: Sequence[AnyOp], last: Position) -> None:
        """Queue one batch (``last``: the position of its last record); waits until the batch before it is
        written, so this process runs at most one batch ahead of the helper. StoreUnavailable if it stopped."""
        rows = pack_ops(ops, self._kinds)
        if self._sending is not None:
            await self._sending
        payload = pickle.dumps(((last.topic, last.partition, last.offset), rows), protocol=5)
        self._sending = asyncio.ensure_future(self._write(payload))

    async def finish(self) -> int:
        """Wait until the helper applied every batch and closed its stores; returns the ops it applied.
        StoreUnavailable when it failed or stopped (what it wrote is left as it is)."""
        try:
            if self._sending is not None:
                await self._sending
            await self._write(_END)
            try:
                reply = await asyncio.to_thread(self._helper._receive)
            except (EOFError, OSError) as exc:
                self._helper.kill()
                raise StoreUnavailable(f"the replay helper stopped: {exc!r}") from exc
        finally:
            self._helper._done()
        status, detail = pickle.loads(reply)
        if status != "ok":
            raise StoreUnavailable(f"the replay helper failed: {detail}")
        self._helper.jobs += 1
        return int(detail)

    def abandon(self) -> None:
        """This process gave up on the replay: stop the helper (its stores are left as they are)."""
        if self._sending is not None:
            self._sending.cancel()
        self._helper.kill()


# --- ops as they travel ------------------------------------------------------------------------------------

Reads = Mapping[type[AnyOp], tuple[str, ...]]
_KINDS: tuple[type[AnyOp], ...] = (UpsertMemory, ReviseMemory, RetireMemory, UpsertRelation, DropCube)
_RECORDS: dict[type[AnyOp], tuple[str, type[BaseModel]]] = {
    UpsertMemory: ("memory", MemoryRecord), UpsertRelation: ("relation", RelationRecord)}
"""The op types that wrap a record: the reads name the record's fields."""


def merged_reads(lendings: Sequence[Lending]) -> Reads:
    """Every field that any of the stores reads, per op type."""
    merged: dict[type[AnyOp], tuple[str, ...]] = {}
    for lending in lendings:
        for kind, names in lending.reads.items():
            merged[kind] = tuple(dict.fromkeys((*merged.get(kind, ()), *names)))
    return merged


Kinds = Mapping[int, tuple[type[AnyOp], tuple[str, ...]]]
"""The op types sent, by their index in the rows, with the fields sent of each."""


def _kinds(reads: Reads) -> dict[int, tuple[type[AnyOp], tuple[str, ...]]]:
    return {index: (kind, reads[kind]) for index, kind in enumerate(_KINDS) if kind in reads}


def pack_ops(ops: Sequence[AnyOp], sent: Kinds) -> list[tuple[object, ...]]:
    """``ops`` as rows of (kind, the fields read...); ops of a type no store reads are left out."""
    kinds = {kind: (index, names) for index, (kind, names) in sent.items()}
    rows: list[tuple[object, ...]] = []
    for op in ops:
        entry = kinds.get(type(op))
        if entry is None:
            continue
        index, names = entry
        record = _RECORDS.get(type(op))
        values = (getattr(op, record[0]) if record is not None else op).__dict__
        rows.append((index, *[values[name] for name in names]))
    return rows


def unpack_ops(rows: Sequence[tuple[object, ...]], kinds: Kinds) -> list[AnyOp]:
    """The ops ``pack_ops`` gave rows of, holding the fields read alone (reading another raises AttributeError)."""
    ops: list[AnyOp] = []
    for row in rows:
        kind, names = kinds[int(row[0])]  # type: ignore[call-overload]
        values: dict[str, Any] = dict(zip(names, row[1:], strict=True))
        record = _RECORDS.get(kind)
        if record is not None:
            values = {record[0]: as_is(record[1], values)}
        ops.append(as_is(kind, values))
    return ops


# --- the helper process -----------------------------------------------------------------------------------


async def _run_job(down: Connection, header: bytes) -> int:
    """Apply one job's batches as they arrive (reading the next while the last is applied); every batch is
    read up to the end mark even after a failure, which is raised at the end."""
    from streams.pipeline.stages import apply_planned
    from streams.replay import collector_relaxed

    stores: list[Projection] = []
    failure: BaseException | None = None
    applying: asyncio.Task[None] | None = None
    applied = 0
    kinds: dict[int, tuple[type[AnyOp], tuple[str, ...]]] = {}
    try:
        openers, cube_id, drop, kinds = pickle.loads(header)
        for opener in openers:
            stores.append(opener())
            await stores[-1].start()
        if drop:
            await apply_planned(stores, [([DropCube(cube_id=cube_id)], Position(MEMORIES, 0, -1))], replay=True)
    except Exception as exc:  # noqa: BLE001 - reported to the lending process, which replays them itself
        failure = exc
    try:
        with collector_relaxed():  # as in the lending process: no young passes over a batch's objects
            while data := await asyncio.to_thread(down.recv_bytes):
                if failure is not None:
                    continue
                try:
                    last, rows = pickle.loads(data)
                    ops = unpack_ops(rows, kinds)
                    if applying is not None:
                        await applying
                        applying = None
                    if ops:
                        applied += len(ops)
                        applying = asyncio.create_task(apply_planned(stores, [(ops, Position(*last))], replay=True))
                except Exception as exc:  # noqa: BLE001 - as above
                    failure = exc
            if applying is not None:
                try:
                    await applying
                except Exception as exc:  # noqa: BLE001 - as above
                    failure = failure or exc
    finally:
        for store in stores:
            with suppress(Exception):
                await store.aclose()
    if failure is not None:
        raise failure
    return applied


def main(argv: Sequence[str]) -> int:
    """The helper's loop: ``<read fd> <write fd> [module ...]``; jobs until the end mark or end of input."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="replay-helper %(levelname)s %(name)s: %(message)s")
    down, up = Connection(int(argv[0]), writable=False), Connection(int(argv[1]), readable=False)
    importlib.import_module("streams.pipeline.stages")
    for module in argv[2:]:
        importlib.import_module(module)
    up.send_bytes(_READY)
    while True:
        try:
            header = down.recv_bytes()
        except EOFError:  # the lending process is gone
            return 0
        if header == _END:
            return 0
        try:
            result: tuple[str, object] = ("ok", asyncio.run(_run_job(down, header)))
        except Exception as exc:  # noqa: BLE001 - the lending process decides (it replays the stores itself)
            logger.warning("replay job failed: %r", exc)
            result = ("error", f"{type(exc).__name__}: {exc}")
        up.send_bytes(pickle.dumps(result))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
