"""OpenAI-format chat messages as MemOS accepts them: kept exactly as given, checked for structure.

Messages travel as plain dicts (``MessageDict``) so that no field is lost (``chat_time``,
``message_id``, ``tool_calls``, unknown vendor keys...). ``MessagesType`` and ``MessageList`` are
pydantic-annotated types that validate the structure and report problems at the exact place:
``messages.2.role``, ``messages.1.content.0.file``, ``messages.3.tool_calls.0.function.name``.

Accepted shapes (MemOS ``memos.types`` ``MessagesType = str | MessageList | RawMessageList``):

- a plain string: one piece of text to remember;
- a list of role messages: ``system``/``developer``/``user`` (``content`` required), ``assistant``
  (``content`` or ``tool_calls``), ``tool`` (``content`` and ``tool_call_id``); ``content`` is a
  string, a list of content parts, or one content part;
- a list of raw input items (no ``role``): content parts such as ``{"type": "text", "text": ...}``
  or ``{"type": "file", "file": {...}}``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated, Any, Final

from pydantic import PlainValidator, ValidationError, WithJsonSchema
from pydantic_core import InitErrorDetails, PydanticCustomError

__all__ = [
    "CONTENT_PART_TYPES",
    "MESSAGE_ROLES",
    "MessageDict",
    "MessageList",
    "MessagesType",
    "validate_message_list",
    "validate_messages",
]

logger = logging.getLogger(__name__)

MessageDict = dict[str, Any]
"""One message or raw input item, exactly as the caller gave it."""

MESSAGE_ROLES: Final = ("system", "developer", "user", "assistant", "tool")
"""Roles of the OpenAI chat format (MemOS ``ChatCompletionMessageParam``)."""

CONTENT_PART_TYPES: Final = (
    "text",
    "image_url",
    "file",
    "input_audio",
    "video_url",
    "refusal",
    "input_text",
    "input_image",
    "input_file",
    "tool_description",
    "tool_input",
    "tool_output",
)
"""Content-part ``type`` values: OpenAI's, plus MemOS's raw tool/input items."""

_OPTIONAL_STRING_KEYS: Final = ("chat_time", "message_id", "role_id", "role_name", "name")
_FILE_SOURCE_KEYS: Final = ("file_data", "file_id", "path")


class _Errors:
    """Collects line errors with their location, then raises one ValidationError."""

    def __init__(self) -> None:
        self.details: list[InitErrorDetails] = []

    def add(self, loc: tuple[str | int, ...], value: Any, message: str) -> None:
        error = PydanticCustomError("invalid_message", message)
        self.details.append({"type": error, "loc": loc, "input": value})

    def missing(self, loc: tuple[str | int, ...], container: Any) -> None:
        self.details.append({"type": "missing", "loc": loc, "input": container})

    def raise_if_any(self, title: str) -> None:
        if self.details:
            raise ValidationError.from_exception_data(title, self.details)


def _type_name(value: Any) -> str:
    return type(value).__name__


def _check_optional_str(
    errors: _Errors, item: Mapping[str, Any], key: str, loc: tuple[str | int, ...]
) -> None:
    if key in item and item[key] is not None and not isinstance(item[key], str):
        errors.add((*loc, key), item[key], f"{key!r} must be a string or null, got {_type_name(item[key])}")


def _check_part(errors: _Errors, part: Any, loc: tuple[str | int, ...]) -> None:
    """Check one content part (or raw input item)."""
    if isinstance(part, str):
        return  # MemOS accepts bare strings in content lists (raw tool output); they read as text
    if not isinstance(part, Mapping):
        errors.add(loc, part, f"a content part must be an object or a string, got {_type_name(part)}")
        return
    if "type" not in part:
        errors.missing((*loc, "type"), part)
        return
    kind = part["type"]
    if kind not in CONTENT_PART_TYPES:
        errors.add(
            (*loc, "type"),
            kind,
            f"unknown content part type {kind!r}; expected one of {CONTENT_PART_TYPES!r}",
        )
        return
    if kind in ("text", "input_text"):
        if "text" not in part:
            errors.missing((*loc, "text"), part)
        elif not isinstance(part["text"], str):
            errors.add(
                (*loc, "text"), part["text"], f"'text' must be a string, got {_type_name(part['text'])}"
            )
    elif kind == "image_url":
        image = part.get("image_url")
        if image is None:
            errors.missing((*loc, "image_url"), part)
        elif isinstance(image, Mapping):
            if not isinstance(image.get("url"), str):
                errors.add((*loc, "image_url", "url"), image.get("url"), "'image_url.url' must be a string")
        elif not isinstance(image, str):
            errors.add((*loc, "image_url"), image, "'image_url' must be an object with 'url' or a string")
    elif kind == "file":
        file = part.get("file")
        if file is None:
            errors.missing((*loc, "file"), part)
        elif not isinstance(file, Mapping):
            errors.add((*loc, "file"), file, f"'file' must be an object, got {_type_name(file)}")
        else:
            for key in (*_FILE_SOURCE_KEYS, "filename"):
                _check_optional_str(errors, file, key, (*loc, "file"))
            if not any(isinstance(file.get(key), str) and file.get(key) for key in _FILE_SOURCE_KEYS):
                errors.add((*loc, "file"), file, f"'file' needs one of {_FILE_SOURCE_KEYS!r}")


def _check_content(errors: _Errors, content: Any, loc: tuple[str | int, ...]) -> None:
    if content is None or isinstance(content, str):
        return
    if isinstance(content, Mapping):
        _check_part(errors, content, loc)
    elif isinstance(content, list):
        for index, part in enumerate(content):
            _check_part(errors, part, (*loc, index))
    else:
        errors.add(
            loc, content, f"'content' must be a string, a list of parts or a part, got {_type_name(content)}"
        )


def _check_tool_calls(errors: _Errors, calls: Any, loc: tuple[str | int, ...]) -> None:
    items: list[Any]
    if isinstance(calls, Mapping):
        items = [calls]
    elif isinstance(calls, list):
        items = calls
    else:
        errors.add(loc, calls, f"'tool_calls' must be a list of objects, got {_type_name(calls)}")
        return
    for index, call in enumerate(items):
        call_loc = (*loc, index) if isinstance(calls, list) else loc
        if not isinstance(call, Mapping):
            errors.add(call_loc, call, f"a tool call must be an object, got {_type_name(call)}")
            continue
        _check_optional_str(errors, call, "id", call_loc)
        _check_optional_str(errors, call, "type", call_loc)
        function = call.get("function")
        if function is None:
            if call.get("type", "function") == "function":
                errors.missing((*call_loc, "function"), call)
            continue
        if not isinstance(function, Mapping):
            errors.add(
                (*call_loc, "function"), function, "'function' must be an object with 'name' and 'arguments'"
            )
            continue
        if not isinstance(function.get("name"), str) or not function.get("name"):
            errors.add(
                (*call_loc, "function", "name"),
                function.get("name"),
                "'function.name' must be a non-empty string",
            )
        arguments = function.get("arguments")
        if arguments is not None and not isinstance(arguments, str | Mapping):
            errors.add(
                (*call_loc, "function", "arguments"),
                arguments,
                f"'function.arguments' must be a JSON string (or an object), got {_type_name(arguments)}",
            )


def _check_message(errors: _Errors, message: Any, loc: tuple[str | int, ...]) -> None:
    if not isinstance(message, Mapping):
        errors.add(loc, message, f"a message must be an object, got {_type_name(message)}")
        return
    if "role" not in message:
        if "type" in message:
            _check_part(errors, message, loc)  # a raw input item
        else:
            errors.add(
                (*loc, "role"), message, "a message needs a 'role' (or, for a raw input item, a 'type')"
            )
        return
    role = message["role"]
    if role not in MESSAGE_ROLES:
        errors.add((*loc, "role"), role, f"unknown role {role!r}; expected one of {MESSAGE_ROLES!r}")
        return
    for key in _OPTIONAL_STRING_KEYS:
        _check_optional_str(errors, message, key, loc)
    content = message.get("content")
    if role == "assistant":
        has_calls = message.get("tool_calls") is not None or message.get("function_call") is not None
        if content is None and not has_calls and message.get("refusal") is None:
            errors.add((*loc, "content"), message, "an assistant message needs 'content' or 'tool_calls'")
        if message.get("tool_calls") is not None:
            _check_tool_calls(errors, message["tool_calls"], (*loc, "tool_calls"))
    elif content is None:
        errors.missing((*loc, "content"), message)
    if role == "tool":
        if "tool_call_id" not in message:
            errors.missing((*loc, "tool_call_id"), message)
        elif not isinstance(message["tool_call_id"], str):
            errors.add((*loc, "tool_call_id"), message["tool_call_id"], "'tool_call_id' must be a string")
    _check_content(errors, content, (*loc, "content"))


def validate_message_list(value: Any) -> list[MessageDict]:
    """Validate a list of messages or raw input items; return it unchanged (a new list, same dicts)."""
    errors = _Errors()
    if not isinstance(value, list | tuple):
        errors.add((), value, f"expected a list of messages, got {_type_name(value)}")
        errors.raise_if_any("MessageList")
    for index, message in enumerate(value):
        _check_message(errors, message, (index,))
    errors.raise_if_any("MessageList")
    return [dict(message) for message in value]


def validate_messages(value: Any) -> str | list[MessageDict]:
    """Validate ``MessagesType``: a string or a list of messages / raw input items."""
    if isinstance(value, str):
        return value
    return validate_message_list(value)


_PART_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"type": {"type": "string", "enum": list(CONTENT_PART_TYPES)}},
    "required": ["type"],
    "additionalProperties": True,
}
_MESSAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "role": {"type": "string", "enum": list(MESSAGE_ROLES)},
        "content": {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": _PART_SCHEMA},
                _PART_SCHEMA,
                {"type": "null"},
            ]
        },
        "tool_calls": {"type": "array", "items": {"type": "object", "additionalProperties": True}},
        "tool_call_id": {"type": "string"},
        **{key: {"type": ["string", "null"]} for key in _OPTIONAL_STRING_KEYS},
    },
    "additionalProperties": True,
}
_LIST_SCHEMA: dict[str, Any] = {"type": "array", "items": {"anyOf": [_MESSAGE_SCHEMA, _PART_SCHEMA]}}

MessageList = Annotated[
    list[MessageDict], PlainValidator(validate_message_list), WithJsonSchema(_LIST_SCHEMA)
]
"""A list of OpenAI-format messages (or raw input items), validated, kept as dicts."""

MessagesType = Annotated[
    str | list[MessageDict],
    PlainValidator(validate_messages),
    WithJsonSchema({"anyOf": [{"type": "string"}, _LIST_SCHEMA]}),
]
"""What ``messages`` accepts: a plain string or a ``MessageList``."""
