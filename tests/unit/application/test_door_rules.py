"""The rules that live in one place each in memos.application: ids, bounds, the status map, the bucketing."""

from __future__ import annotations

import base64
import unicodedata

import pytest

from memos.application.buckets import BUCKET_KEYS, bucket_of, bucketed, types_for
from memos.application.errors import (
    AddTimedOut,
    BacklogFull,
    CubeBusy,
    ProjectorElsewhere,
    describe,
    retry_after,
    status_of,
)
from memos.application.ids import MAX_ID_CHARS, MAX_IDS_PER_REQUEST, check_id, check_ids, is_valid_id
from memos.application.limits import (
    MAX_LINK_CHARS,
    MAX_MEMORY_ID_CHARS,
    MAX_MEMORY_IDS,
    MAX_MESSAGE_FIELD_CHARS,
    MAX_QUERY_CHARS,
    MAX_TAG_CHARS,
    MAX_TAGS,
    MAX_TAGS_TOTAL_CHARS,
    MAX_TOP_K,
    check_add_size,
    check_count,
    check_memory_ids,
    check_message_fields,
    check_query,
    check_strings,
    check_tags,
    named_ids,
)
from memos.application.models import SearchRequest, build
from processors.retrieval import BUCKET_TYPES
from schemas.errors import (
    BrokerUnavailable,
    ConfigError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    StoreBackpressure,
    ValidationFailed,
)

GOOD = ["ann", "ann_cube", "a.b:c@d-e", "7", "x" * MAX_ID_CHARS, "Zoë", "用户一", "0f8fad5b-d9cb-469f-a165-70867728950e"]
BAD = [
    "", " ann", "ann ", "an n", "ann\n", "ann\x00", "ann\t", "a\u202eb", "a\u200bb", "ann'; DROP TABLE cubes;--",
    "a/b", "a\\b", "x" * (MAX_ID_CHARS + 1), "a\ud800b", "ann\u0301\u0301\u0301x\u034f",
]


@pytest.mark.parametrize("value", GOOD)
def test_good_ids_pass_unchanged(value: str) -> None:
    assert check_id(value, "cube_id") == value
    assert is_valid_id(value)


@pytest.mark.parametrize("value", BAD)
def test_bad_ids_are_refused_naming_the_field(value: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        check_id(value, "cube_id")
    assert info.value.field == "cube_id"
    assert "cube_id" in str(info.value)
    assert status_of(info.value) == 422


def test_ids_are_nfc_normalised() -> None:
    decomposed = unicodedata.normalize("NFD", "Zoë")
    assert decomposed != "Zoë"
    assert check_id(decomposed, "user_id") == "Zoë"
    assert not is_valid_id(decomposed)


def test_id_lists_name_the_bad_element_and_drop_duplicates() -> None:
    assert check_ids(["a", "b", "a"], "writable_cube_ids") == ["a", "b"]
    with pytest.raises(ValidationFailed) as info:
        check_ids(["a", "b c"], "writable_cube_ids")
    assert info.value.field == "writable_cube_ids.1"
    with pytest.raises(ValidationFailed):
        check_ids("abc", "writable_cube_ids")
    many = [f"c{n}" for n in range(MAX_IDS_PER_REQUEST)]
    assert check_ids(many, "readable_cube_ids") == many
    with pytest.raises(ValidationFailed, match=f"names {MAX_IDS_PER_REQUEST + 1} ids") as info:
        check_ids([*many, "c0"], "readable_cube_ids")  # bounded before any work: duplicates count
    assert info.value.field == "readable_cube_ids"


def test_memory_id_lists_are_bounded_and_errors_quote_few_of_them() -> None:
    assert check_memory_ids(("m1", "m2", "m1"), "memory_ids") == ["m1", "m2"]
    for bad, field in ((["ok", "a\x00b"], "memory_ids.1"), (["x" * (MAX_MEMORY_ID_CHARS + 1)], "memory_ids.0"),
                       ([""], "memory_ids.0"), ([7], "memory_ids.0"), ("m1", "memory_ids"),
                       (["m"] * (MAX_MEMORY_IDS + 1), "memory_ids")):
        with pytest.raises(ValidationFailed) as info:
            check_memory_ids(bad, "memory_ids")
        assert info.value.field == field
    quoted = named_ids([f"id{n}" + "z" * 100 for n in range(9)])
    assert quoted.endswith(" and 4 more") and quoted.count("'id") == 5 and len(quoted) < 400


def test_one_status_map() -> None:
    cases = {
        NotFound("x"): 404,
        PermissionDenied("x"): 403,
        PayloadTooLarge("x"): 413,
        ValidationFailed("x"): 422,
        BacklogFull("x", retry_after=2.4): 429,
        CubeBusy("x", retry_after=1.0): 409,
        ProjectorElsewhere("x"): 409,
        AddTimedOut("x", task_ids=["t"]): 504,
        StoreBackpressure("x", retry_after=1): 503,
        BrokerUnavailable("x"): 503,
        TimeoutError(): 504,
        ConfigError("x"): 500,
        RuntimeError("x"): 500,
    }
    assert {type(e).__name__: status_of(e) for e in cases} == {type(e).__name__: s for e, s in cases.items()}
    assert retry_after(BacklogFull("x", retry_after=2.4)) == 3  # rounded up: never earlier than said
    assert retry_after(NotFound("x")) is None
    assert describe(ValidationFailed("must not be empty", field="query")) == "query: must not be empty"
    assert AddTimedOut("x", task_ids=["t1"]).data == {"task_ids": ["t1"], "will_complete": True}


def test_one_bucketing_follows_the_search_buckets() -> None:
    for bucket, types in BUCKET_TYPES.items():
        for memory_type in types:
            assert bucket_of(memory_type) == BUCKET_KEYS[bucket]
    assert bucket_of("SomethingNew") == "text_mem"
    assert set(types_for()) == set(BUCKET_TYPES["text"])
    assert set(types_for(preference=True, tool=True, skill=True)) == {t for ts in BUCKET_TYPES.values() for t in ts}
    views = [{"metadata": {"memory_type": "PreferenceMemory"}}, {"metadata": {"memory_type": "LongTermMemory"}}]
    grouped = bucketed("c1", views)
    assert grouped["pref_mem"] == [{"cube_id": "c1", "memories": [views[0]], "total_nodes": 1}]
    assert grouped["text_mem"][0]["total_nodes"] == 1 and grouped["tool_mem"][0]["total_nodes"] == 0


def test_text_and_counts_are_bounded() -> None:
    with pytest.raises(ValidationFailed) as info:
        check_query("x" * (MAX_QUERY_CHARS + 1))
    assert info.value.field == "query"
    for bad in ("", "   ", "a\x00b", "a\udc00b"):
        with pytest.raises(ValidationFailed):
            check_query(bad)
    with pytest.raises(ValidationFailed) as info:
        check_strings({"messages": [{"role": "user", "content": "ok"}, {"role": "user", "content": "\ud83d"}]}, "body")
    assert info.value.field == "body.messages.1.content"
    with pytest.raises(ValidationFailed) as info:
        check_count(2**63, "top_k")
    assert "top_k" in str(info.value)
    check_count(MAX_TOP_K, "top_k")
    with pytest.raises(PayloadTooLarge) as too_big:
        check_add_size(1_048_577, 1_048_576, "c1")
    assert "1048576" in str(too_big.value) and status_of(too_big.value) == 413
    check_tags(["t" * (MAX_TAGS_TOTAL_CHARS // MAX_TAGS)] * MAX_TAGS)
    check_tags(["t" * MAX_TAG_CHARS] * (MAX_TAGS_TOTAL_CHARS // MAX_TAG_CHARS))
    for tags, field in ((["t"] * (MAX_TAGS + 1), "custom_tags"), (["ok", "t" * (MAX_TAG_CHARS + 1)], "custom_tags.1"),
                        (["t" * MAX_TAG_CHARS] * (MAX_TAGS_TOTAL_CHARS // MAX_TAG_CHARS) + ["t"], "custom_tags")):
        with pytest.raises(ValidationFailed) as info:
            check_tags(tags)  # every memory of the add carries them all: bounded, not only by the record size
        assert info.value.field == field and status_of(info.value) == 422
    fine = [{"role": "user", "content": "x" * 10_000, "chat_time": "t" * MAX_MESSAGE_FIELD_CHARS}, "plain"]
    check_message_fields(fine)  # content is bounded by the add's size; a bare string has no fields
    long = "t" * (MAX_MESSAGE_FIELD_CHARS + 1)
    for key in ("role", "chat_time", "name", "role_name", "role_id", "message_id"):
        with pytest.raises(ValidationFailed) as info:
            check_message_fields([{"role": "user", "content": "hi"}, {key: long}])
        assert info.value.field == f"messages.1.{key}" and status_of(info.value) == 422
    file = {"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "file", "file": {"filename": long}}]}
    call = {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": long}}]}
    for message, where in ((file, "messages.0.content.1.file.filename"), (call, "messages.0.tool_calls.0.function.name")):
        with pytest.raises(ValidationFailed) as info:
            check_message_fields([message])  # a file's name is in each of its chunks, a tool's in its memories
        assert info.value.field == where
    url = "https://example.com/" + "a" * MAX_LINK_CHARS
    image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}
    with pytest.raises(ValidationFailed) as info:
        check_message_fields([image])  # kept in the sources, the name shown and the reason it was not read
    assert info.value.field == "messages.0.content.0.image_url.url" and "link" in str(info.value)
    inline = "data:text/plain;base64," + base64.b64encode(b"x" * MAX_LINK_CHARS).decode()
    text = "plain words " * MAX_LINK_CHARS
    for data in (inline, text, base64.b64encode(b"\xff\xd8" * MAX_LINK_CHARS).decode()):  # content, not a link
        check_message_fields([{"role": "user", "content": [{"type": "file", "file": {"file_data": data}}]}])
    # the same walk checks every string and key of the messages as check_strings does (the add's only walk)
    for bad, where in (([{"role": "user", "content": [{"type": "text", "text": "a\x00b"}]}], "messages.0.content.0.text"),
                       ([{"role": "user", "content": "ok"}, {"role": "user", "content": "\ud83d"}], "messages.1.content"),
                       ([{"role": "user", "content": "ok", "x\udc00": 1}], "messages.0.'x\\udc00'")):
        with pytest.raises(ValidationFailed) as info:
            check_message_fields(bad)
        assert info.value.field == where and status_of(info.value) == 422


def test_typed_requests_refuse_out_of_range_numbers_naming_the_field() -> None:
    with pytest.raises(ValidationFailed) as info:
        build(SearchRequest, user_id="ann", query="q", top_k=2**63)
    assert info.value.field == "top_k"
    request = SearchRequest.from_memos("ann", ["c"], "q", {"top_k": 5, "mode": "fast", "moscube": True,
                                                           "session_id": None})
    assert request.top_k == 5 and request.options == {"mode": "fast"}
