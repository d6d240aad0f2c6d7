"""The parsing sandbox: documents are parsed in a fresh worker process with memory, CPU and wall-time limits.

A zip bomb, a PDF whose streams inflate to gigabytes or a file of NULs costs a short-lived child process,
never the server: the child runs ``processors.documents.parse_document`` under ``RLIMIT_AS`` (address
space) and ``RLIMIT_CPU``, the parent kills it at the wall-time limit, and at most ``concurrency`` children
run at once (a freed place goes to the user holding fewest: ``FairSlots``). The parent waits in a thread, so
the serving event loop never parses. Small plain-text files (text, markdown, csv under ``inline_bytes``) are
parsed in a thread of this process: decoding them is linear and capped by the character budget, and a process
start would cost more than the parse.

Results: a ParsedDocument, or OverBudget (memory, time, inflated size, pages) or FetchFailed (unreadable),
whose message names the file and the limit; the shell turns both into a memory that says so.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import schemas
from processors.documents import DocumentBudget, ParsedDocument, detect_kind, parse_document
from schemas.errors import FetchFailed, OverBudget
from streams.pipeline.fairness import FairSlots

__all__ = ["AddParseBudget", "DocumentSandbox", "SandboxLimits", "UserParseTime"]

logger = logging.getLogger(__name__)

_INLINE_KINDS = {"text", "markdown"}
_MIN_PARSE_S = 1.0
"""Least parse time worth starting a process for (it takes about 0.1 s to start)."""
_BOOT = (
    "import sys, types; package = types.ModuleType('schemas'); package.__path__ = [{schemas!r}]; "
    "sys.modules['schemas'] = package; from streams.pipeline.sandbox import _child_main; "
    "raise SystemExit(_child_main(sys.argv))"
)
"""Child entry: ``schemas`` as a bare package, so the child loads ``schemas.errors`` without the codec (and
numpy): a parse then starts in about 0.1 s instead of 1.5 s."""


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Limits of one parse: address space and CPU of the child, wall time seen by the parent."""

    memory_bytes: int = 1024 * 1024 * 1024
    cpu_s: int = 30
    wall_s: float = 45.0
    concurrency: int = 2
    inline_bytes: int = 256 * 1024
    """Plain text and markdown up to this size are parsed in a thread instead of a process."""
    per_add_s: float = 60.0
    """Parse time the files of one add may use together (:class:`AddParseBudget`)."""
    per_user_s: float = 120.0
    """Parse time one user's adds may use per ``user_window_s`` (:class:`UserParseTime`; 0: no limit)."""
    user_window_s: float = 600.0


class UserParseTime:
    """Parse time each user has left in the current window: adds with files share one derivation lane, so a
    user's files may take only so much of it before they are recorded unparsed instead of parsed."""

    def __init__(self, seconds: float, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.window_s, self._clock = seconds, window_s, clock
        self._spent: dict[str, tuple[float, float]] = {}  # user -> (window start, seconds spent)

    def left(self, user_id: str) -> float:
        if self.seconds <= 0:
            return math.inf
        now = self._clock()
        start, spent = self._spent.get(user_id, (now, 0.0))
        if now - start >= self.window_s:
            start, spent = now, 0.0
        self._spent[user_id] = (start, spent)
        if len(self._spent) > 10_000:  # forget users whose window ended
            self._spent = {u: v for u, v in self._spent.items() if now - v[0] < self.window_s}
        return max(0.0, self.seconds - spent)

    def spend(self, user_id: str, seconds: float) -> None:
        if self.seconds > 0 and user_id in self._spent:
            start, spent = self._spent[user_id]
            self._spent[user_id] = (start, max(0.0, spent + seconds))


class AddParseBudget:
    """The parse time one add's files share: a parse reserves what it may take, and gives back what it did not
    use, so an add of many expensive files costs ``seconds`` of parsing, not ``wall_s`` per file; with a
    ``user`` ledger, the add's user's time left in the window bounds it too."""

    def __init__(self, seconds: float, user: tuple[UserParseTime, str] | None = None) -> None:
        self.seconds = seconds
        self.left = seconds
        self.user = user

    def reserve(self, want: float) -> float:
        got = max(0.0, min(want, self.left, self.user[0].left(self.user[1]) if self.user else math.inf))
        self.left -= got
        if self.user:
            self.user[0].spend(self.user[1], got)
        return got

    def give_back(self, unused: float) -> None:
        unused = max(0.0, min(unused, self.seconds - self.left))
        self.left += unused
        if self.user:
            self.user[0].spend(self.user[1], -unused)

    def spent_reason(self) -> str:
        """Which budget ran out, in words naming its setting."""
        if self.left >= _MIN_PARSE_S and self.user is not None:
            ledger = self.user[0]
            return (f"user {self.user[1]!r} used up their parse time ({ledger.seconds:g}s per "
                    f"{ledger.window_s:g}s, derivation.parse_budget_per_user_s)")
        return f"the add's files used up their parse time ({self.seconds:g}s, derivation.parse_budget_per_add_s)"


class DocumentSandbox:
    """Parses documents off the event loop: in a limited child process, or in a thread for small text."""

    def __init__(self, limits: SandboxLimits | None = None, budget: DocumentBudget | None = None) -> None:
        self.limits = limits or SandboxLimits()
        self.budget = budget or DocumentBudget()
        self._slots = FairSlots(self.limits.concurrency)

    async def parse(self, data: bytes, *, name: str, mime: str | None,
                    shared: AddParseBudget | None = None) -> ParsedDocument:
        """The parsed document. Raises OverBudget or FetchFailed (the message names the file and the limit).
        ``shared``: the parse time of the add the file belongs to (a parse in a process takes its time from it)."""
        kind = detect_kind(data, name=name, mime=mime)
        if kind in _INLINE_KINDS and len(data) <= self.limits.inline_bytes:
            return await asyncio.to_thread(parse_document, data, name=name, mime=mime, budget=self.budget)
        owner = shared.user[1] if shared is not None and shared.user is not None else ""
        async with self._slots.held(owner):  # a freed parser goes to the user holding fewest, not the first queued
            wall_s = self.limits.wall_s
            if shared is not None and (wall_s := shared.reserve(wall_s)) < min(_MIN_PARSE_S, self.limits.wall_s):
                shared.give_back(wall_s)
                raise OverBudget(f"file {name!r} was not parsed: {shared.spent_reason()}")
            started = time.perf_counter()
            try:
                status, value = await asyncio.to_thread(self._run, data, name, mime, wall_s)
            finally:
                if shared is not None:
                    shared.give_back(wall_s - (time.perf_counter() - started))
        logger.info(
            "sandbox parse name=%r bytes=%d status=%s ms=%.0f", name, len(data), status,
            (time.perf_counter() - started) * 1000,
        )  # fmt: skip
        if isinstance(value, ParsedDocument):
            return value
        if status == "over":
            raise OverBudget(str(value))
        raise FetchFailed(str(value))

    def _run(self, data: bytes, name: str, mime: str | None, wall_s: float) -> tuple[str, str | ParsedDocument]:
        """Run one child (a fresh ``python``) with the file on stdin; always reap it.

        A fresh interpreter, not multiprocessing: spawn would re-run the caller's main script (a user's
        script without a ``__main__`` guard would run itself again), and fork would copy the server.
        The child answers JSON, never pickle: it has just read hostile input.
        """
        limits = self.limits
        cpu_s = max(1, min(limits.cpu_s, math.ceil(wall_s)))
        params = {
            "name": name,
            "mime": mime,
            "budget": asdict(self.budget),
            "memory_bytes": limits.memory_bytes,
            "cpu_s": cpu_s,
        }
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _BOOT.format(schemas=str(Path(schemas.__file__).parent)),
                json.dumps(params),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        try:
            out, err = child.communicate(data, timeout=wall_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            return "over", f"parsing file {name!r} took longer than {wall_s:g}s, the time budget"
        try:
            answer = json.loads(out)
            status = str(answer["status"])
            if status == "ok":
                doc = answer["document"]
                return status, ParsedDocument(
                    str(doc["text"]), doc["kind"], name, int(doc["pages"]), int(doc["truncated_chars"])
                )
            return status, str(answer["error"])
        except (ValueError, KeyError, TypeError):
            tail = err.decode("utf-8", "replace")[-300:]
            logger.warning(
                "sandbox child for %r ended without an answer (exit %s): %s", name, child.returncode, tail
            )
            return "over", (
                f"parsing file {name!r} went over the budget of {limits.memory_bytes // (1024 * 1024)} MB memory "
                f"or {cpu_s}s CPU (the parser was stopped)"
            )


def _child_main(argv: list[str]) -> int:
    """Child process body: set the limits, read the file from stdin, parse, print one JSON answer."""
    params = json.loads(argv[1])
    memory_bytes, cpu_s = int(params["memory_bytes"]), int(params["cpu_s"])
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    name = str(params["name"])
    answer: dict[str, Any]
    try:
        data = sys.stdin.buffer.read()
        budget = DocumentBudget(**params["budget"])
        doc = parse_document(data, name=name, mime=params["mime"], budget=budget)
        answer = {"status": "ok", "document": {"text": doc.text, "kind": doc.kind, "pages": doc.pages,
                                               "truncated_chars": doc.truncated_chars}}  # fmt: skip
    except OverBudget as exc:
        answer = {"status": "over", "error": str(exc)}
    except FetchFailed as exc:
        answer = {"status": "failed", "error": str(exc)}
    except MemoryError:
        answer = {
            "status": "over",
            "error": f"parsing file {name!r} needed more than {memory_bytes >> 20} MB",
        }
    sys.stdout.write(json.dumps(answer, ensure_ascii=True))
    sys.stdout.flush()
    return 0
