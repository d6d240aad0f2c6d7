"""The publish file of `memos publish`: JSON lines, every line checked before any is published."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

__all__ = ["PublishFileInvalid", "PublishLine", "read_publish_file"]

logger = logging.getLogger(__name__)

MAX_PROBLEMS = 50
"""Problems reported before the rest are summarised in one line."""
RECORD_OVERHEAD_BYTES = 1024
"""Room for what the log record adds to a line's content (event and task ids, times, mode, schema header:
about 130 bytes measured); a line whose compact JSON plus this is over the add limit is refused up front,
so no add of the file can be refused after others were published."""


class PublishFileInvalid(Exception):
    """A publish file with problems, each naming its line number; nothing of it may be published."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} problem(s)")
        self.problems = problems


class PublishLine(BaseModel):
    """One line of a publish file: a conversation to record for a cube."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1)
    cube_id: str = Field(min_length=1)
    messages: list[dict[str, Any]] | str = Field(min_length=1)
    session_id: str = Field(default="default_session", min_length=1)
    mode: str = Field(default="fast", pattern="^(fast|fine)$")
    info: dict[str, Any] = Field(default_factory=dict)
    custom_tags: list[str] = Field(default_factory=list)
    task_id: str | None = None
    _number: int = PrivateAttr(default=0)

    @property
    def number(self) -> int:
        """The line's number in its file (1-based)."""
        return self._number

    def message_list(self) -> list[dict[str, Any]]:
        """The messages in OpenAI format (a bare string is one user message)."""
        if isinstance(self.messages, str):
            return [{"role": "user", "content": self.messages}]
        return self.messages


def _line_problems(number: int, raw: bytes, limit: int) -> tuple[PublishLine | None, list[str]]:
    from memos.application.ids import check_id
    from memos.application.limits import check_message_fields, check_strings, check_tags
    from schemas.errors import ValidationFailed

    where = f"line {number}"
    too_big = (f"{where}: {{size:,}} bytes, over the add limit of {limit:,} bytes per conversation once "
               "recorded (split its messages over several lines)")
    if len(raw) > 8 * limit:  # not worth parsing: even without whitespace it cannot fit
        return None, [too_big.format(size=len(raw))]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [f"{where}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, [f"{where}: not JSON: {exc.msg} at column {exc.colno}"]
    if not isinstance(data, dict):
        return None, [f"{where}: must be a JSON object with user_id, cube_id and messages, "
                      f"not {type(data).__name__}"]
    try:
        line = PublishLine.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"]) or "line"
            problems.append(f"{where}: field {field!r}: {error['msg']}")
        return None, problems
    size = len(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"))
    if size + RECORD_OVERHEAD_BYTES > limit:
        return None, [too_big.format(size=size + RECORD_OVERHEAD_BYTES)]
    problems = []
    for field in ("user_id", "cube_id"):
        try:
            check_id(getattr(line, field), field)
        except ValidationFailed as exc:
            problems.append(f"{where}: {exc}")
    for field in ("messages", "session_id", "info", "custom_tags", "task_id"):
        try:
            check_strings(getattr(line, field), field)
        except ValidationFailed as exc:
            problems.append(f"{where}: {exc}")
    try:  # the add's own bounds, so that no line is refused after others were published
        check_message_fields(line.message_list())
        check_tags(line.custom_tags)
    except ValidationFailed as exc:
        problems.append(f"{where}: {exc}")
    return (None if problems else line), problems


def read_publish_file(path: Path, *, limit: int | None = None) -> list[PublishLine]:
    """Every line of ``path`` parsed and checked; PublishFileInvalid listing every problem, by line number.

    Checked per line: UTF-8, JSON, the shape of a conversation, the identifier grammar of user_id and
    cube_id, text without NUL or lone surrogates, and the size against the add limit. Blank lines are
    skipped. A file that cannot be read is one problem.
    """
    from memos.application.limits import MAX_ADD_RECORD_BYTES

    limit = MAX_ADD_RECORD_BYTES if limit is None else limit
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise PublishFileInvalid([f"cannot read {str(path)!r}: {exc.strerror or exc}"]) from None
    lines: list[PublishLine] = []
    problems: list[str] = []
    for number, raw in enumerate(content.split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r")
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark
        if not raw.strip():
            continue
        line, found = _line_problems(number, raw, limit)
        problems.extend(found)
        if line is not None:
            line._number = number
            lines.append(line)
    if not lines and not problems:
        problems.append(f"{str(path)!r} holds no conversation (one JSON object per line)")
    if len(problems) > MAX_PROBLEMS:
        problems = [*problems[:MAX_PROBLEMS], f"... and {len(problems) - MAX_PROBLEMS} more problem(s)"]
    if problems:
        raise PublishFileInvalid(problems)
    return lines
