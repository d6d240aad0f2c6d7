"""The MemOS request/response models: seed example payloads, MemOS defaults, clear errors."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pydantic import ValidationError

from memos.api import product_models
from memos.api.product_models import (
    APIADDRequest,
    APIChatCompleteRequest,
    APISearchRequest,
    ChatRequest,
    DeleteMemoryRequest,
    GetMemoryRequest,
    MemoryResponse,
    SearchMode,
    SearchResponse,
    StatusResponse,
    StatusResponseItem,
)
from tests.unit.api.example_calls import SEED_EXAMPLES, request_kwargs


def _locs(exc: ValidationError) -> list[tuple[str | int, ...]]:
    return [tuple(err["loc"]) for err in exc.errors()]


@pytest.mark.parametrize("example", SEED_EXAMPLES)
def test_seed_add_requests_are_accepted_with_every_field_kept(example: str) -> None:
    calls = request_kwargs(example, "APIADDRequest")
    assert calls, f"no APIADDRequest call found in {example}"
    for kwargs in calls:
        original = copy.deepcopy(kwargs["messages"])
        request = APIADDRequest(**kwargs)
        assert request.messages == original  # nothing dropped, nothing normalised
        assert request.model_dump(mode="json")["messages"] == original
        assert request.async_mode == "sync"
        assert request.mode == "fine"
        assert request.writable_cube_ids == kwargs["writable_cube_ids"]
        assert request.user_id == kwargs["user_id"]


@pytest.mark.parametrize("example", SEED_EXAMPLES)
def test_seed_search_requests_are_accepted(example: str) -> None:
    calls = request_kwargs(example, "APISearchRequest")
    assert calls
    for kwargs in calls:
        request = APISearchRequest(**kwargs)
        assert request.readable_cube_ids == kwargs["readable_cube_ids"]
        assert request.include_preference is kwargs["include_preference"]
        assert request.query == kwargs["query"]


def test_mixed_example_keeps_tool_calls_tool_messages_and_parts() -> None:
    (kwargs,) = request_kwargs("02_multi_source_mixed.py", "APIADDRequest")
    messages = APIADDRequest(**kwargs).messages
    assert isinstance(messages, list)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert messages[2]["tool_calls"][0]["function"]["name"] == "file_reader"
    assert "content" not in messages[2]
    assert messages[3]["tool_call_id"] == "call_file_reader_001"
    assert [p["type"] for p in messages[1]["content"]] == ["text", "file", "image_url"]
    assert "<tool_schema>" in messages[0]["content"][0]["text"]


def test_request_round_trips_through_json() -> None:
    (kwargs,) = request_kwargs("02_multi_source_mixed.py", "APIADDRequest")
    request = APIADDRequest(**kwargs)
    again = APIADDRequest.model_validate_json(request.model_dump_json())
    assert again == request


def test_add_request_defaults_follow_memos() -> None:
    # MemOS src/memos/api/product_models.py (commit 98e882d2): APIADDRequest
    request = APIADDRequest(messages="I like tea.")
    assert request.async_mode == "async"
    assert request.mode is None
    assert request.user_id is None
    assert request.writable_cube_ids is None
    assert request.is_feedback is False
    assert request.messages == "I like tea."


def test_search_request_defaults_follow_memos() -> None:
    # MemOS src/memos/api/product_models.py (commit 98e882d2 + later relativity 0.45): APISearchRequest
    request = APISearchRequest(query="q", user_id="u")
    assert request.mode is SearchMode.FAST
    assert request.top_k == 10
    assert request.relativity == 0.45
    assert request.dedup == "mmr"
    assert request.pref_top_k == 6
    assert request.include_preference is True
    assert request.search_tool_memory is True
    assert request.tool_mem_top_k == 6
    assert request.include_skill_memory is True
    assert request.skill_mem_top_k == 3
    assert request.internet_search is False
    assert request.search_memory_type == "All"
    assert request.readable_cube_ids is None


def test_chat_complete_defaults_follow_memos() -> None:
    # MemOS src/memos/api/product_models.py (commit 98e882d2 + later relativity 0.45): APIChatCompleteRequest
    request = APIChatCompleteRequest(user_id="u", query="q")
    assert (request.top_k, request.pref_top_k, request.threshold, request.relativity) == (10, 6, 0.5, 0.45)
    assert request.add_message_on_answer is True
    assert request.mode is SearchMode.FAST


def test_deprecated_add_fields_are_mapped_like_memos() -> None:
    request = APIADDRequest(mem_cube_id="c1", memory_content="likes tea", doc_path="/tmp/a.pdf", source="web")
    assert request.writable_cube_ids == ["c1"]
    assert request.messages == [
        {"type": "text", "text": "likes tea"},
        {"type": "file", "file": {"path": "/tmp/a.pdf"}},
    ]
    assert request.info == {"source": "web"}


def test_deprecated_content_is_appended_after_string_messages() -> None:
    request = APIADDRequest(messages="hello", memory_content="likes tea")
    assert request.messages == [{"type": "text", "text": "hello"}, {"type": "text", "text": "likes tea"}]


def test_async_add_drops_the_sync_only_mode() -> None:
    assert APIADDRequest(messages="x", async_mode="async", mode="fast").mode is None


def test_deprecated_cube_ids_map_to_readable_and_writable() -> None:
    assert APISearchRequest(query="q", user_id="u", mem_cube_id="c").readable_cube_ids == ["c"]
    chat = ChatRequest(user_id="u", query="q", mem_cube_id="c")
    assert (chat.readable_cube_ids, chat.writable_cube_ids) == (["c"], ["c"])
    keep = APISearchRequest(query="q", user_id="u", mem_cube_id="c", readable_cube_ids=["a", "b"])
    assert keep.readable_cube_ids == ["a", "b"]


def test_empty_add_is_an_error_naming_messages() -> None:
    with pytest.raises(ValidationError) as info:
        APIADDRequest(user_id="u", writable_cube_ids=["c"], messages=[])
    assert _locs(info.value) == [("messages",)]
    assert "nothing to add" in str(info.value)


def test_unknown_request_field_is_an_error() -> None:
    with pytest.raises(ValidationError) as info:
        APISearchRequest(query="q", user_id="u", readble_cube_ids=["c"])  # type: ignore[call-arg]
    assert _locs(info.value) == [("readble_cube_ids",)]


@pytest.mark.parametrize(
    ("kwargs", "loc"),
    [
        ({"query": "q", "user_id": "u", "top_k": 0}, ("top_k",)),
        ({"query": "q", "user_id": "u", "mode": "slow"}, ("mode",)),
        ({"query": "q", "user_id": "u", "readable_cube_ids": [""]}, ("readable_cube_ids", 0)),
        ({"query": "q"}, ("user_id",)),
        ({"user_id": "u"}, ("query",)),
    ],
)
def test_bad_search_requests_name_the_field(kwargs: dict[str, Any], loc: tuple[str | int, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        APISearchRequest(**kwargs)
    assert _locs(info.value) == [loc]


def test_bad_async_mode_names_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        APIADDRequest(messages="x", async_mode="later")  # type: ignore[arg-type]
    assert _locs(info.value) == [("async_mode",)]


def test_delete_must_be_scoped_to_cubes() -> None:
    with pytest.raises(ValidationError) as info:
        DeleteMemoryRequest(memory_ids=["m1"])  # type: ignore[call-arg]
    assert _locs(info.value) == [("writable_cube_ids",)]
    with pytest.raises(ValidationError) as info:
        DeleteMemoryRequest(writable_cube_ids=[], memory_ids=["m1"])
    assert _locs(info.value) == [("writable_cube_ids",)]


def test_delete_must_say_what_to_delete() -> None:
    with pytest.raises(ValidationError) as info:
        DeleteMemoryRequest(writable_cube_ids=["c"], filter={})
    assert _locs(info.value) == [("memory_ids",)]
    request = DeleteMemoryRequest(writable_cube_ids=["c"], file_ids=["f1"])
    assert request.file_ids == ["f1"] and request.memory_ids is None


def test_get_memory_request_defaults_and_paging() -> None:
    request = GetMemoryRequest(mem_cube_id="c")
    assert (request.include_preference, request.include_tool_memory, request.page) == (True, True, None)
    with pytest.raises(ValidationError) as info:
        GetMemoryRequest(mem_cube_id="c", page=0)
    assert _locs(info.value) == [("page",)]


def test_responses_have_code_message_data() -> None:
    search = SearchResponse(message="Search completed successfully", data={"text_mem": [], "pref_mem": []})
    assert search.code == 200
    assert json.loads(search.model_dump_json()) == {
        "code": 200,
        "message": "Search completed successfully",
        "data": {"text_mem": [], "pref_mem": []},
    }
    assert MemoryResponse(message="ok", data=[{"memory": "m"}]).data == [{"memory": "m"}]
    status = StatusResponse(data=[StatusResponseItem(task_id="t", status="completed")])
    assert status.message == "Memory get status successfully"
    with pytest.raises(ValidationError):
        StatusResponseItem(task_id="t", status="done")  # type: ignore[arg-type]


def test_all_names_are_exported() -> None:
    for name in product_models.__all__:
        assert hasattr(product_models, name), name
