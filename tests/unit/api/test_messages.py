"""Message structure checks: accepted OpenAI shapes, and errors that point at the bad field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from memos.api.messages import MessageList, MessagesType, validate_messages


class _Holder(BaseModel):
    messages: MessagesType
    history: MessageList | None = None


def _error_locs(messages: Any) -> list[tuple[str | int, ...]]:
    with pytest.raises(ValidationError) as info:
        _Holder(messages=messages)
    return [tuple(err["loc"]) for err in info.value.errors()]


GOOD = [
    "just a string to remember",
    [{"role": "user", "content": "hi", "chat_time": "2025-01-01 10:00", "message_id": "m1"}],
    [{"role": "developer", "content": "be brief"}],
    [{"role": "user", "content": {"type": "text", "text": "one part, not a list"}}],
    [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}],
        }
    ],
    [{"role": "assistant", "tool_calls": {"id": "c", "type": "function", "function": {"name": "f"}}}],
    [{"role": "tool", "tool_call_id": "c", "content": ["raw", "strings"]}],
    [{"role": "user", "content": [{"type": "image_url", "image_url": "https://x/y.png"}]}],
    [{"role": "user", "content": [{"type": "file", "file": {"file_data": "aGVsbG8=", "filename": "a.txt"}}]}],
    [{"type": "text", "text": "a raw input item"}, {"type": "file", "file": {"file_id": "f1"}}],
    [{"role": "user", "content": "x", "vendor_field": {"kept": True}}],
    [],
]


@pytest.mark.parametrize("messages", GOOD)
def test_accepted_shapes_come_back_unchanged(messages: Any) -> None:
    assert _Holder(messages=messages).messages == messages
    assert validate_messages(messages) == messages


BAD = [
    ([{"content": "no role"}], [("messages", 0, "role")]),
    ([{"role": "bot", "content": "x"}], [("messages", 0, "role")]),
    ([{"role": "user", "content": 42}], [("messages", 0, "content")]),
    ([{"role": "user"}], [("messages", 0, "content")]),
    ([{"role": "system", "content": None}], [("messages", 0, "content")]),
    ([{"role": "assistant"}], [("messages", 0, "content")]),
    ([{"role": "tool", "content": "x"}], [("messages", 0, "tool_call_id")]),
    ([{"role": "tool", "content": "x", "tool_call_id": 7}], [("messages", 0, "tool_call_id")]),
    ([{"role": "user", "content": "x", "chat_time": 1700000000}], [("messages", 0, "chat_time")]),
    ([{"role": "user", "content": [{"text": "no type"}]}], [("messages", 0, "content", 0, "type")]),
    ([{"role": "user", "content": [{"type": "video"}]}], [("messages", 0, "content", 0, "type")]),
    ([{"role": "user", "content": [{"type": "text", "text": 3}]}], [("messages", 0, "content", 0, "text")]),
    ([{"role": "user", "content": [{"type": "text"}]}], [("messages", 0, "content", 0, "text")]),
    (
        [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
        [("messages", 0, "content", 0, "image_url", "url")],
    ),
    (
        [{"role": "user", "content": [{"type": "file", "file": {"filename": "a"}}]}],
        [("messages", 0, "content", 0, "file")],
    ),
    ([{"role": "user", "content": [{"type": "file", "file": "x"}]}], [("messages", 0, "content", 0, "file")]),
    ([{"role": "user", "content": [3]}], [("messages", 0, "content", 0)]),
    (
        [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"arguments": "{}"}}]}],
        [("messages", 0, "tool_calls", 0, "function", "name")],
    ),
    ([{"role": "assistant", "tool_calls": [{"id": "c"}]}], [("messages", 0, "tool_calls", 0, "function")]),
    ([{"role": "assistant", "tool_calls": "f()"}], [("messages", 0, "tool_calls")]),
    (
        [{"role": "assistant", "tool_calls": [{"id": 1, "function": {"name": "f"}}]}],
        [("messages", 0, "tool_calls", 0, "id")],
    ),
    (["a string in a list"], [("messages", 0)]),
    (42, [("messages",)]),
    ({"role": "user", "content": "not in a list"}, [("messages",)]),
]


@pytest.mark.parametrize(("messages", "locs"), BAD)
def test_bad_shapes_are_rejected_at_the_field(messages: Any, locs: list[tuple[str | int, ...]]) -> None:
    assert _error_locs(messages) == locs


def test_every_bad_message_is_reported_at_once() -> None:
    locs = _error_locs([{"role": "user", "content": "fine"}, {"role": "bot"}, {"content": "x"}])
    assert locs == [("messages", 1, "role"), ("messages", 2, "role")]


def test_error_message_quotes_the_bad_value() -> None:
    with pytest.raises(ValidationError) as info:
        _Holder(messages=[{"role": "robot", "content": "x"}])
    assert "unknown role 'robot'" in str(info.value)


def test_message_list_rejects_a_plain_string() -> None:
    with pytest.raises(ValidationError) as info:
        _Holder(messages="ok", history="not a list")  # type: ignore[arg-type]
    assert [tuple(e["loc"]) for e in info.value.errors()] == [("history",)]


def test_json_schema_describes_roles_and_parts() -> None:
    schema = _Holder.model_json_schema()
    text = str(schema["properties"]["messages"])
    assert "assistant" in text and "image_url" in text
