"""Fast mode: windows, file chunks, tool memories and placeholders -> MemoryAdded events (event in, events out)."""

from __future__ import annotations

import base64

from processors.fast import FastSettings, build_memory_events, follows_relations, plan_fast
from processors.reader import attach_fetched, read_messages
from schemas.errors import FetchFailed
from schemas.events import ModelUsage, derive_id
from tests.support.examples import EXAMPLE_1, REPORT_MD, conversation, example_2

BASE = "http://files.test"


def vectors(n: int, dim: int = 4) -> list[list[float]]:
    return [[float(i + 1)] + [0.0] * (dim - 1) for i in range(n)]


def test_example_1_is_one_window_memory() -> None:
    event = conversation(EXAMPLE_1, custom_tags=["travel"])
    drafts = plan_fast(read_messages(event.messages).items, FastSettings())
    assert len(drafts) == 1
    usage = ModelUsage(model_id="emb", kind="embedding", latency_ms=10.0, prompt_tokens=7)
    [added] = build_memory_events(event, drafts, vectors(1), embedding_model="emb", embed_usage=usage)
    assert added.memory.splitlines() == [
        "user: I’ve planned to travel to Guangzhou during the summer vacation. "
        "What chain hotels are available for accommodation?",
        "assistant: You can consider [7 Days Inn, Ji Hotel, Hilton], etc.",
        "user: I’ll choose 7 Days Inn.",
        "assistant: Okay, feel free to ask me if you have any other questions.",
    ]
    assert added.memory_id == str(derive_id(event.event_id, "fast:0"))
    assert added.event_id == derive_id(event.event_id, "fast:0:added")
    assert added.memory_type == "LongTermMemory" and added.extractor == "fast"
    assert added.title == "I’ve planned to travel to Guangzhou during the…"
    assert added.tags == ["mode:fast", "travel"]
    assert added.embedding == [1.0, 0.0, 0.0, 0.0] and added.embedding_model == "emb"
    assert added.usage == [usage]
    assert added.occurred_at == event.occurred_at and added.key == "cube_test" and added.task_id == "task-1"
    assert [s.message_index for s in added.sources] == [0, 1, 2, 3]


def test_user_only_windows_are_user_memory_with_chat_time_and_names() -> None:
    messages = [
        {
            "role": "user",
            "name": "Caroline",
            "content": "I went to a LGBTQ support group.",
            "chat_time": "8 May 2023",
        },
        {"role": "user", "name": "Caroline", "content": "It was powerful.", "chat_time": "8 May 2023"},
        {"role": "user", "name": "Caroline", "content": "Then I slept.", "chat_time": "9 May 2023"},
    ]
    [draft] = plan_fast(read_messages(messages).items, FastSettings())
    assert draft.memory_type == "UserMemory"
    assert draft.memory == (  # the time is written where it changes, not repeated on every line, in ISO
        "[2023-05-08] user (Caroline): I went to a LGBTQ support group.\n"
        "user (Caroline): It was powerful.\n"
        "[2023-05-09] user (Caroline): Then I slept."
    )
    assert [s.chat_time for s in draft.sources] == ["8 May 2023", "8 May 2023", "9 May 2023"]


def test_long_conversations_are_windowed_with_overlap() -> None:
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " + "word " * 20}
        for i in range(8)
    ]
    drafts = plan_fast(read_messages(messages).items, FastSettings(window_tokens=60, window_overlap=1))
    windows = [d.metadata["messages"] for d in drafts]
    assert windows == [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [5, 6], [6, 7]]
    assert [d.key for d in drafts] == [f"fast:{n}" for n in range(7)]


def test_consecutive_windows_are_linked_by_follows_edges_after_dedup() -> None:
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " + "word " * 20}
        for i in range(4)
    ]
    drafts = plan_fast(read_messages(messages).items, FastSettings(window_tokens=60, window_overlap=1))
    event = conversation(messages)
    ids = [str(derive_id(event.event_id, d.key)) for d in drafts]
    assert len(ids) == 3
    edges = follows_relations(event, drafts, {i: i for i in ids})
    assert [(e.source_id, e.target_id, e.relation) for e in edges] == [
        (ids[1], ids[0], "FOLLOWS"),
        (ids[2], ids[1], "FOLLOWS"),
    ]
    assert follows_relations(event, drafts, {i: i for i in ids}) == edges  # deterministic ids
    # the middle window was a duplicate of a stored memory: the chain runs through that one instead
    edges = follows_relations(event, drafts, {ids[0]: ids[0], ids[1]: "stored", ids[2]: ids[2]})
    assert [(e.source_id, e.target_id) for e in edges] == [("stored", ids[0]), (ids[2], "stored")]
    assert {e.cube_id for e in edges} == {event.cube_id}


def test_usage_shares_sum_to_the_call() -> None:
    messages = [{"role": "user", "content": "word " * (10 * (i + 1))} for i in range(3)]
    event = conversation(messages)
    drafts = plan_fast(read_messages(messages).items, FastSettings(window_tokens=20, window_overlap=0))
    usage = ModelUsage(model_id="emb", kind="embedding", latency_ms=9.0, prompt_tokens=100)
    added = build_memory_events(event, drafts, vectors(len(drafts)), embedding_model="emb", embed_usage=usage)
    assert sum(a.usage[0].prompt_tokens for a in added) == 100
    assert abs(sum(a.usage[0].latency_ms for a in added) - 9.0) < 1e-9


def test_example_2_gives_window_file_tool_and_placeholder_memories() -> None:
    read = read_messages(example_2(BASE))
    items = attach_fetched(
        read,
        {
            3: (REPORT_MD.encode(), "text/markdown"),
            4: FetchFailed(f"HTTP 404 Not Found fetching '{BASE}/x.jpeg'"),
        },
    )
    drafts = plan_fast(items, FastSettings())
    by_type = [(d.memory_type, d.title) for d in drafts]
    assert by_type[0][0] == "LongTermMemory"  # the conversation window
    assert ("LongTermMemory", "PM1 workshop PMT boot pressure fault report (2024-07-20)") in by_type
    assert ("ToolSchemaMemory", "file_reader") in by_type
    assert ("ToolTrajectoryMemory", "Tool use: file_reader") in by_type
    window = drafts[0]
    assert '[tool_call file_reader({"file_id": "file_123"})]' in window.memory
    assert {s.type for s in window.sources} >= {"chat", "file", "image", "tool_call", "tool_result", "system"}
    chunk = next(d for d in drafts if d.metadata.get("file") == "report.pdf")
    assert chunk.memory.startswith("File report.pdf (part 1 of 1):\n# PM1 workshop")
    assert (
        chunk.sources[0].url
        == BASE + example_2(BASE)[1]["content"][1]["file"]["file_data"][len("@" + BASE) :]
    )
    trajectory = next(d for d in drafts if d.memory_type == "ToolTrajectoryMemory")
    assert trajectory.metadata["success"] is True and trajectory.metadata["calls"][0]["arguments"] == {
        "file_id": "file_123"
    }
    assert trajectory.memory.startswith("Task: Please read this file and image")
    placeholder = next(d for d in drafts if d.metadata.get("placeholder"))
    assert placeholder.memory.startswith(
        "Image http://files.test/%E5%9B%BE%E7%89%871.jpeg from the user (message 1) could not be fetched: HTTP 404"
    )
    assert placeholder.sources[0].status == "unfetched" and placeholder.tags == ("placeholder", "unfetched")


def test_failed_tool_results_and_bad_files() -> None:
    messages = [
        {"role": "system", "content": "<tool_schema>not json</tool_schema>"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look it up"},
                {
                    "type": "file",
                    "file": {
                        "filename": "z.bin",
                        "file_data": "data:application/zip;base64,"
                        + base64.b64encode(b"PK\x03\x04zz").decode(),
                    },
                },
            ],
        },
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"error": "not found"}'},
    ]
    drafts = plan_fast(read_messages(messages).items, FastSettings())
    trajectory = next(d for d in drafts if d.memory_type == "ToolTrajectoryMemory")
    assert (
        trajectory.metadata["success"] is False and "lookup did not work" in trajectory.metadata["experience"]
    )
    statuses = {(d.memory_type, d.sources[0].status) for d in drafts if d.metadata.get("placeholder")}
    assert statuses == {("ToolSchemaMemory", "unparsed"), ("LongTermMemory", "unparsed")}
    bad_schema = next(d for d in drafts if d.memory_type == "ToolSchemaMemory")
    assert "could not be read: invalid JSON in <tool_schema>" in bad_schema.memory


def _call(call_id: str, name: str) -> dict[str, object]:
    return {
        "role": "assistant",
        "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}}],
    }


def test_tool_experience_names_what_worked_and_what_failed() -> None:
    messages = [
        {"role": "user", "content": "Check the weather, then book the Hilton."},
        _call("w1", "get_weather"),
        {"role": "tool", "tool_call_id": "w1", "content": '{"forecast": "sunny"}'},
        _call("b1", "book_hotel"),
        {"role": "tool", "tool_call_id": "b1", "content": "ERROR 503: booking service unavailable"},
        _call("p1", "pay"),
        {"role": "tool", "tool_call_id": "p1", "content": "ERROR 500: card declined"},
        _call("p2", "pay"),
        {"role": "tool", "tool_call_id": "p2", "content": '{"paid": true}'},
    ]
    drafts = plan_fast(read_messages(messages).items, FastSettings())
    experience = next(d for d in drafts if d.memory_type == "ToolTrajectoryMemory").metadata["experience"]
    assert "book_hotel did not work for this task (ERROR 503: booking service unavailable)" in experience
    assert "pay worked after 1 failed call" in experience
    assert "get_weather worked" in experience and "get_weather did not work" not in experience
    assert experience.endswith("Check the failed calls before reusing them.")


def test_skipped_parts_ride_in_the_window_sources() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "hello there"}, {"type": "video", "url": "v"}]},
        {"role": "assistant", "content": None},
    ]
    [draft] = plan_fast(read_messages(messages).items, FastSettings())
    skipped = [(s.message_index, s.status, s.error) for s in draft.sources if s.status != "ok"]
    assert skipped == [
        (0, "skipped", "unsupported content part type 'video' in message 0"),
        (1, "skipped", "message 1 (assistant) is empty"),
    ]


def test_only_unreadable_input_plans_nothing() -> None:
    assert plan_fast(read_messages([{"role": "user", "content": ""}]).items, FastSettings()) == []
