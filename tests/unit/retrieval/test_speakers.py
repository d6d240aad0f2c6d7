"""Speaker names in queries: labels read from candidate texts, names stripped from the dense query."""

from __future__ import annotations

from processors.speakers import (
    line_speakers,
    named_speakers,
    speaker_free_query,
    speaker_names,
    without_names,
)

TEXTS = [
    "[1:56 pm on 8 May, 2023] user: Caroline: Hey Mel!\nassistant: Melanie: Hi Caroline!",
    "user: Caroline: I went to a support group.\nassistant: Melanie: Wow, Caroline!",
    "assistant: Melanie: I painted a lake sunrise last year.",
    "user: I will choose 7 Days Inn. Note: Hilton is full.",
]


def test_line_speakers_reads_every_label_of_a_line() -> None:
    assert line_speakers(TEXTS[0]) == {"caroline", "melanie"}  # names, not the lower-case role labels
    assert line_speakers("The time is 1:56 pm") == set()
    assert "note" in line_speakers(TEXTS[3])  # a label-like word counts, a share decides what is a speaker


def test_speaker_names_need_a_share_of_the_texts() -> None:
    assert speaker_names(TEXTS, share=0.5) == {"caroline", "melanie"}
    assert speaker_names(TEXTS, share=0.7) == {"melanie"}
    assert speaker_names([], share=0.3) == set()


def test_named_speakers_and_without_names() -> None:
    speakers = {"caroline", "melanie"}
    assert named_speakers("What is Caroline's identity?", speakers) == ["caroline"]
    assert named_speakers("Did Melanie and Caroline meet? Melanie did.", speakers) == ["melanie", "caroline"]
    assert named_speakers("What did Carolines do?", speakers) == []
    assert without_names("What is Caroline's identity?", ["caroline"]) == "What is identity?"
    assert without_names("Did Melanie’s kids like it, melanie?", ["melanie"]) == "Did kids like it, ?"


def test_speaker_free_query() -> None:
    assert speaker_free_query("What is Caroline's identity?", TEXTS, share=0.3) == "What is identity?"
    assert speaker_free_query("What is Caroline's identity?", TEXTS, share=0.0) is None
    assert speaker_free_query("Where is Guangzhou?", TEXTS, share=0.3) is None  # names no speaker
    assert speaker_free_query("Caroline?", TEXTS, share=0.3) is None  # nothing but the name left
