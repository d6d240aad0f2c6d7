"""The seed's example messages (EXAMPLES.md, Examples 1-3), with file and image URLs pointing at a test server."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from schemas.events import ConversationRecorded

__all__ = [
    "EXAMPLE_1",
    "EXAMPLE_2_SUMMARY",
    "EXAMPLE_3_LOVE",
    "IMAGE_PATH",
    "REPORT_MD",
    "REPORT_PATH",
    "TOOL_SCHEMA_TEXT",
    "conversation",
    "example_2",
]

logger = logging.getLogger(__name__)

EXAMPLE_1: list[dict[str, Any]] = [
    {
        "role": "user",
        "content": "I’ve planned to travel to Guangzhou during the summer vacation. "
        "What chain hotels are available for accommodation?",
    },
    {"role": "assistant", "content": "You can consider [7 Days Inn, Ji Hotel, Hilton], etc."},
    {"role": "user", "content": "I’ll choose 7 Days Inn."},
    {"role": "assistant", "content": "Okay, feel free to ask me if you have any other questions."},
]

EXAMPLE_3_LOVE: list[dict[str, Any]] = [
    {"role": "user", "content": "I love you, I need you."},
    {"role": "assistant", "content": "Wow, I love you too"},
]

EXAMPLE_2_SUMMARY = (
    "Final Summary: During the PMT boot-pressure startup test of the PM1 workshop on July 20, 2024, the drive "
    "could not run because the edge pressures on both sides failed to reach the 2.5-bar interlock requirement. "
    "After troubleshooting, the PLC output signals, hydraulic pipelines, and valves were all found to be normal. "
    "The root cause was ultimately identified as poor contact at the negative terminal of the proportional "
    "valve’s DC 24V power supply inside the PLC cabinet, caused by a short-jumpered terminal block. After "
    "re-connecting the negative incoming lines in parallel, the equipment returned to normal operation. It is "
    "recommended to replace terminal blocks in batches, inspect instruments with uncertain service life, and "
    "optimize the troubleshooting process by tracing common-mode issues from shared buses and power supply sources."
)

TOOL_SCHEMA_TEXT = (
    "You are a professional industrial fault analysis assistant. Please read the PDF, images, and instructions "
    "provided by the user and provide a professional technical summary.\n\n<tool_schema>\n[\n  {\n"
    '    "name": "file_reader",\n'
    '    "description": "Used to read the content of files uploaded by the user and return the text data '
    '(in JSON string format).",\n'
    '    "parameters": [\n'
    '      {"name": "file_id", "type": "string", "required": true, "description": "The file ID to be read"}\n'
    "    ],\n"
    '    "returns": {"type": "text", "description": "Returns the extracted text content of the file"}\n'
    "  }\n]\n</tool_schema>"
)

REPORT_MD = """# PM1 workshop PMT boot pressure fault report (2024-07-20)

## Symptom
- The drive could not start: edge pressure on both sides stayed below the 2.5 bar interlock.

## Investigation
1. PLC output signals: normal.
2. Hydraulic pipelines and valves: normal.

## Root cause
Poor contact at the negative terminal of the proportional valve DC 24V supply, caused by a short-jumpered
terminal block in the PLC cabinet.
"""

REPORT_PATH = (
    "/graph-test/algorithm/2025_11_13/PM1%E8%BD%A6%E9%97%B4PMT%E6%95%85%E9%9A%9C%E6%8A%A5%E5%91%8A20240720.md"
)
IMAGE_PATH = "/%E5%9B%BE%E7%89%871.jpeg"


def example_2(base_url: str) -> list[dict[str, Any]]:
    """Example 2's mixed messages (tool schema, file, image, tool call and result, summary) on ``base_url``."""
    return [
        {"role": "system", "content": [{"type": "text", "text": TOOL_SCHEMA_TEXT}]},
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "Please read this file and image, summarize the key points, and provide a final conclusion.",
                },
                {
                    "type": "file",
                    "file": {
                        "file_id": "file_123",
                        "filename": "report.pdf",
                        "file_data": "@" + base_url + REPORT_PATH,
                    },
                },
                {"type": "image_url", "image_url": {"url": base_url + IMAGE_PATH}},
            ],
        },
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_file_reader_001",
                    "type": "function",
                    "function": {"name": "file_reader", "arguments": '{"file_id": "file_123"}'},
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "call_file_reader_001",
            "content": [
                {
                    "type": "text",
                    "text": '{"file_id":"file_123","extracted_text":"PM1 workshop PMT boot pressure startup test '
                    "record… Final fault cause: poor contact at the negative terminal of the DC 24V power supply "
                    'circuit due to a short-jumped terminal block."}',
                }
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": EXAMPLE_2_SUMMARY}]},
    ]


def conversation(messages: Any, **overrides: Any) -> ConversationRecorded:
    """A ConversationRecorded with a fixed id and time (so derived ids are stable), for cube "cube_test"."""
    fields: dict[str, Any] = {
        "event_id": uuid.UUID("00000000-0000-4000-8000-000000000001"),
        "occurred_at": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        "key": "cube_test",
        "user_id": "test_user",
        "cube_id": "cube_test",
        "messages": messages,
        "task_id": "task-1",
    }
    fields.update(overrides)
    return ConversationRecorded(**fields)
