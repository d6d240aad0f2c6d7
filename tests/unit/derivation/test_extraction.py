"""LLM extraction, pure parts: tolerant JSON, drafts from answers, vision drafts, and merging fast/fine phases."""

from __future__ import annotations

import json

import pytest

from processors.chunking import plan_windows
from processors.extraction import (
    drafts_from_output,
    extraction_messages,
    image_draft,
    merge_phases,
    parse_json_lenient,
    reference_time,
    retry_messages,
    split_usage,
    vision_messages,
)
from processors.fast import FastSettings, plan_fast
from processors.reader import read_messages
from schemas.errors import ModelOutputInvalid
from schemas.events import ModelUsage
from tests.support.examples import EXAMPLE_1, example_2

GOOD = {
    "memories": [
        {
            "key": "travel plan",
            "memory": "The user plans to travel to Guangzhou in the summer vacation.",
            "memory_type": "UserMemory",
            "tags": ["travel", "Guangzhou"],
            "background": "Asked about hotels.",
        },
        {"key": "empty", "memory": ""},
        {
            "key": "odd type",
            "value": "The assistant listed 7 Days Inn, Ji Hotel and Hilton.",
            "memory_type": "Bogus",
        },
    ],
    "preferences": [
        {
            "preference": "The user prefers budget chain hotels such as 7 Days Inn.",
            "preference_type": "implicit",
            "topic": "Hotel",
            "context_summary": "Choosing a hotel in Guangzhou.",
            "reasoning": "The user picked 7 Days Inn over Hilton.",
        }
    ],
    "tool_trajectories": [],
}


def window():  # type: ignore[no-untyped-def]
    return plan_windows(read_messages(EXAMPLE_1).items)[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('```json\n{"a": [1, 2]}\n```', {"a": [1, 2]}),
        ('Sure! Here it is:\n```\n{"a": "x"}\n``` Anything else?', {"a": "x"}),
        ('Result: {"a": 1} -- and {"b": 2}', {"a": 1}),
        ("{'a': 'it\\'s', 'b': True, 'c': None,}", {"a": "it's", "b": True, "c": None}),
        ('{"a": [1, 2,], }', {"a": [1, 2]}),
        ('<think>hmm {"no": 1}</think>{"a": 2}', {"a": 2}),
        (
            '{"m": [{"k": "x", "v": "done"}, {"k": "y", "v": "The user li',
            {"m": [{"k": "x", "v": "done"}, {"k": "y"}]},
        ),
        ('{"m": [{"k": "x", "v": "done"}', {"m": [{"k": "x", "v": "done"}]}),
        ('```json\n{"a": 1, "b": ', {"a": 1}),
        ('{"text": "line one\nline two"}', {"text": "line one\nline two"}),
    ],
)
def test_parse_json_lenient(text: str, expected: object) -> None:
    assert parse_json_lenient(text) == expected


def test_parse_json_lenient_gives_up_clearly() -> None:
    with pytest.raises(ModelOutputInvalid, match="holds no JSON"):
        parse_json_lenient("I cannot help with that.")


def test_drafts_from_good_output() -> None:
    usage = ModelUsage(
        model_id="m1", kind="llm", latency_ms=30.0, prompt_tokens=10, completion_tokens=5, attempts=2
    )
    drafts = drafts_from_output(json.dumps(GOOD), window(), model_id="m1", usage=usage)
    assert [(d.memory_type, d.title) for d in drafts] == [
        ("UserMemory", "travel plan"),
        ("LongTermMemory", "odd type"),
        ("PreferenceMemory", "preference: hotel"),
    ]
    assert [d.key for d in drafts] == ["fine:0:0", "fine:0:1", "fine:0:2"]
    assert all(d.extractor == "llm:m1" and d.refines == "window:0" for d in drafts)
    assert (
        drafts[0].tags == ("mode:fine", "travel", "Guangzhou")
        and drafts[0].background == "Asked about hotels."
    )
    pref = drafts[2]
    assert pref.metadata["preference_type"] == "implicit" and pref.metadata["topic"] == "Hotel"
    assert pref.metadata["reasoning"] == "The user picked 7 Days Inn over Hilton."
    assert sum(d.usage[0].prompt_tokens for d in drafts) == 10
    assert sum(d.usage[0].completion_tokens for d in drafts) == 5
    assert all(d.usage[0].attempts == 2 for d in drafts)


def test_tool_trajectories_refine_the_fast_trajectory() -> None:
    items = read_messages(example_2("http://h")).items
    answer = {
        "tool_trajectories": [
            {
                "tool_name": "file_reader",
                "task": "Read the fault report",
                "success": True,
                "experience": "file_reader returns the report text; read it before summarizing.",
            }
        ]
    }
    [draft] = drafts_from_output(json.dumps(answer), plan_windows(items)[0], model_id="m1")
    assert draft.memory_type == "ToolTrajectoryMemory" and draft.refines == "tool_trajectory"
    assert draft.memory.startswith("Task: Read the fault report. Tool file_reader succeeded.")
    assert {s.type for s in draft.sources} == {"tool_call", "tool_result"}


def test_unusable_answers_raise_model_output_invalid() -> None:
    with pytest.raises(ModelOutputInvalid, match="has none of"):
        drafts_from_output('{"answer": "hello"}', window(), model_id="m1")
    with pytest.raises(ModelOutputInvalid, match="holds no JSON"):
        drafts_from_output('"just a string"', window(), model_id="m1")
    assert drafts_from_output("[1, 2]", window(), model_id="m1") == []
    assert drafts_from_output('{"memories": []}', window(), model_id="m1") == []
    assert len(drafts_from_output('[{"memory": "The user likes tea."}]', window(), model_id="m1")) == 1


def test_prompt_carries_reference_time_and_conversation() -> None:
    w = plan_windows(
        read_messages([{"role": "user", "content": "hi there", "chat_time": "2024-07-20"}]).items
    )[0]
    assert reference_time(w, "fallback") == "2024-07-20"
    messages = extraction_messages(w, reference_time="2024-07-20", user_id="u1")
    assert messages[0]["role"] == "system" and "third person" in messages[0]["content"]
    assert "in the language of the conversation" in messages[0]["content"]  # Chinese in, Chinese memories out
    assert (
        "Reference time: 2024-07-20" in messages[1]["content"]
        and "[2024-07-20] user: hi there" in messages[1]["content"]
    )
    again = retry_messages(messages, "oops", "no JSON")
    assert again[-2] == {"role": "assistant", "content": "oops"} and "no JSON" in again[-1]["content"]


def test_vision_messages_and_image_draft() -> None:
    read = read_messages(
        [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAEC", "detail": "low"}}
                ],
            }
        ]
    )
    image = next(i for i in read.items if i.kind == "image")
    messages = vision_messages(image)
    part = messages[1]["content"][1]
    assert part == {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAEC", "detail": "low"}}
    draft = image_draft(image, "A  pressure gauge\nreading 2.1 bar.", model_id="v1", usage=None, index=0)
    assert draft.memory == "Image inline image shared by the user: A pressure gauge reading 2.1 bar."
    assert draft.key == "fine:image:0" and draft.extractor == "llm:v1"


def test_merge_phases() -> None:
    items = read_messages(example_2("http://h")).items
    fast = plan_fast(items, FastSettings())
    window_key = fast[0].key
    fine = drafts_from_output(json.dumps(GOOD), plan_windows(items)[0], model_id="m1")
    add, retire = merge_phases(fast, fine, after_fast=False)
    assert window_key not in {d.key for d in add}
    assert {d.key for d in fast[1:]} <= {d.key for d in add}  # schema, trajectory, placeholders are kept
    assert retire == {}
    add, retire = merge_phases(fast, fine, after_fast=True)
    assert add == fine and retire == {window_key: ["fine:0:0", "fine:0:1", "fine:0:2"]}
    add, retire = merge_phases(fast, [], after_fast=False)
    assert add == fast and retire == {}


def test_split_usage_is_exact() -> None:
    usage = ModelUsage(model_id="m", kind="llm", latency_ms=10.0, prompt_tokens=10, completion_tokens=7)
    shares = [s[0] for s in split_usage(usage, 3)]
    assert [s.prompt_tokens for s in shares] == [4, 3, 3] and sum(s.completion_tokens for s in shares) == 7
    assert split_usage(None, 2) == [(), ()]
