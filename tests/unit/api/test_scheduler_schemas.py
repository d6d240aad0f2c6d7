"""Scheduler schemas at MemOS's import paths: messages, labels, time and YAML helpers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from memos.configs.base import ConfigFileNotFound
from memos.mem_scheduler import schemas as scheduler_schemas
from memos.mem_scheduler.schemas import task_schemas
from memos.mem_scheduler.schemas.message_schemas import ScheduleMessageItem
from memos.mem_scheduler.schemas.task_schemas import (
    ADD_TASK_LABEL,
    ANSWER_TASK_LABEL,
    API_MIX_SEARCH_TASK_LABEL,
    BUILTIN_TASK_LABELS,
    MEM_ARCHIVE_TASK_LABEL,
    MEM_FEEDBACK_TASK_LABEL,
    MEM_ORGANIZE_TASK_LABEL,
    MEM_READ_TASK_LABEL,
    MEM_UPDATE_TASK_LABEL,
    PREF_ADD_TASK_LABEL,
    QUERY_TASK_LABEL,
    RunningTaskItem,
    TaskPriorityLevel,
)
from memos.mem_scheduler.utils.db_utils import get_utc_now
from memos.mem_scheduler.utils.misc_utils import group_messages_by_user_and_mem_cube, parse_yaml
from schemas.errors import ConfigError


class _Cube:
    """Stands in for a live cube object: not serialisable on purpose."""


def _item(**overrides: object) -> ScheduleMessageItem:
    fields: dict[str, object] = {
        "user_id": "u1",
        "mem_cube_id": "c1",
        "label": QUERY_TASK_LABEL,
        "content": "hi",
    }
    fields.update(overrides)
    return ScheduleMessageItem(**fields)  # type: ignore[arg-type]


def test_labels_match_memos() -> None:
    # MemOS src/memos/mem_scheduler/schemas/task_schemas.py (wustzdy/MemOS fork of MemTensor/MemOS)
    assert (QUERY_TASK_LABEL, ANSWER_TASK_LABEL, ADD_TASK_LABEL) == ("query", "answer", "add")
    assert (MEM_READ_TASK_LABEL, MEM_UPDATE_TASK_LABEL, MEM_ORGANIZE_TASK_LABEL) == (
        "mem_read",
        "mem_update",
        "mem_organize",
    )
    assert (PREF_ADD_TASK_LABEL, MEM_FEEDBACK_TASK_LABEL, MEM_ARCHIVE_TASK_LABEL) == (
        "pref_add",
        "mem_feedback",
        "mem_archive",
    )
    assert API_MIX_SEARCH_TASK_LABEL == "api_mix_search"
    assert len(set(BUILTIN_TASK_LABELS)) == len(BUILTIN_TASK_LABELS) == 10
    assert [level.value for level in TaskPriorityLevel] == [1, 2, 3]


def test_message_defaults_follow_memos() -> None:
    item = _item()
    assert len(item.item_id) == 36 and item.item_id != _item().item_id
    assert item.session_id == "" and item.user_name == "" and item.task_id is None and item.info is None
    assert item.mem_cube is None
    assert item.timestamp.tzinfo is not None


def test_model_copy_relabels_as_in_example_5() -> None:
    item = _item(mem_cube=_Cube(), task_id="biz-1")
    copy = item.model_copy(update={"label": MEM_UPDATE_TASK_LABEL})
    assert copy.label == MEM_UPDATE_TASK_LABEL and item.label == QUERY_TASK_LABEL
    assert (copy.item_id, copy.content, copy.task_id) == (item.item_id, item.content, "biz-1")
    assert copy.mem_cube is item.mem_cube


def test_round_trip_through_dump_and_json_drops_only_the_cube() -> None:
    item = _item(mem_cube=_Cube(), session_id="s", info={"k": [1, 2]}, task_id="t", user_name="Ann")
    dumped = item.model_dump()
    assert "mem_cube" not in dumped
    again = ScheduleMessageItem.model_validate(dumped)
    assert again == item.model_copy(update={"mem_cube": None})
    from_json = ScheduleMessageItem.model_validate_json(item.model_dump_json())
    assert from_json.model_dump() == dumped
    assert "mem_cube" not in json.loads(item.model_dump_json())


def test_queue_dict_round_trip_uses_memos_keys() -> None:
    item = _item(session_id="s", task_id=None, user_name="Ann")
    flat = item.to_dict()
    assert flat["cube_id"] == "c1" and flat["cube"] == "Not Applicable" and flat["task_id"] == ""
    again = ScheduleMessageItem.from_dict(flat)
    assert again.model_dump() == item.model_dump()


@pytest.mark.parametrize("missing", ["user_id", "mem_cube_id", "label", "content"])
def test_required_fields_are_named(missing: str) -> None:
    fields = {"user_id": "u1", "mem_cube_id": "c1", "label": "query", "content": "hi"}
    del fields[missing]
    with pytest.raises(ValidationError) as info:
        ScheduleMessageItem(**fields)  # type: ignore[arg-type]
    assert [tuple(e["loc"]) for e in info.value.errors()] == [(missing,)]


def test_naive_timestamp_and_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        _item(timestamp=datetime(2025, 1, 1))
    assert [tuple(e["loc"]) for e in info.value.errors()] == [("timestamp",)]
    with pytest.raises(ValidationError) as info:
        _item(cube_id="c1")
    assert [tuple(e["loc"]) for e in info.value.errors()] == [("cube_id",)]


def test_get_utc_now_is_aware_utc() -> None:
    now = get_utc_now()
    assert now.tzinfo is not None and now.utcoffset() == timedelta(0)
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)


def test_running_task_records_completion() -> None:
    task = RunningTaskItem(item_id="i", user_id="u", mem_cube_id="c", task_info="x", task_name="query")
    assert task.status == "running" and task.duration_seconds is None
    task.mark_completed({"ok": True}, at=task.start_time + timedelta(seconds=2))
    assert (task.status, task.duration_seconds, task.result) == ("completed", 2.0, {"ok": True})
    failed = RunningTaskItem(item_id="i", user_id="u", mem_cube_id="c", task_info="x", task_name="q")
    failed.mark_failed("boom")
    assert failed.status == "failed" and failed.error_message == "boom"


def test_grouping_keeps_order_per_user_and_cube() -> None:
    items = [_item(user_id="a", mem_cube_id="x", content=str(i)) for i in range(3)]
    items.insert(1, _item(user_id="b", mem_cube_id="y", content="other"))
    grouped = group_messages_by_user_and_mem_cube(items)
    assert [m.content for m in grouped["a"]["x"]] == ["0", "1", "2"]
    assert [m.content for m in grouped["b"]["y"]] == ["other"]


def test_parse_yaml_reads_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("user_id: root\nnested:\n  top_k: 5\n", encoding="utf-8")
    assert parse_yaml(path) == {"user_id": "root", "nested": {"top_k": 5}}
    assert parse_yaml(str(path)) == {"user_id": "root", "nested": {"top_k": 5}}


def test_parse_yaml_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(FileNotFoundError) as info:
        parse_yaml(missing)
    assert isinstance(info.value, ConfigFileNotFound) and isinstance(info.value, ConfigError)
    assert repr(str(missing)) in str(info.value)


@pytest.mark.parametrize(("text", "needle"), [("a: [1,\n", "not valid YAML"), ("- 1\n- 2\n", "mapping")])
def test_parse_yaml_bad_content_is_a_config_error(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=needle):
        parse_yaml(path)


def test_all_names_are_exported() -> None:
    for module in (scheduler_schemas, task_schemas):
        for name in module.__all__:
            assert hasattr(module, name), name
