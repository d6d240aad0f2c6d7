"""LoCoMo conversations as the benchmarks add them: sessions of MemOS messages per cube, and the questions.

Reads the file the caller names (``../shared/data/locomo-dev.json``); nothing of it is copied. Turn
text and roles follow ``bench.retrieval`` (speaker name in the content, speaker_a is the user).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.retrieval import session_messages, turns_of

__all__ = ["DEFAULT_LOCOMO", "LocomoCube", "load_locomo"]

logger = logging.getLogger(__name__)

DEFAULT_LOCOMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo-dev.json"
"""The dev conversations in ``../shared/data`` beside the repository (never copied into it)."""


@dataclass(frozen=True, slots=True)
class LocomoCube:
    """One conversation: its cube id, its sessions (one add each) and its questions."""

    cube_id: str
    sessions: list[list[dict[str, Any]]]
    questions: list[str]

    @property
    def turns(self) -> int:
        return sum(len(s) for s in self.sessions)


def load_locomo(path: Path, *, conversations: int = 0) -> list[LocomoCube]:
    """The first ``conversations`` (0: all) of a LoCoMo file, as cubes to add."""
    samples = json.loads(path.read_text(encoding="utf-8"))[: conversations or None]
    cubes: list[LocomoCube] = []
    for number, sample in enumerate(samples):
        conversation = sample["conversation"]
        turns = turns_of(conversation)
        speaker_a = str(conversation["speaker_a"])
        sessions = [
            session_messages([t for t in turns if t.session == n], speaker_a)
            for n in sorted({t.session for t in turns})
        ]
        questions = [str(qa["question"]) for qa in sample.get("qa", []) if qa.get("question")]
        cubes.append(LocomoCube(str(sample.get("sample_id") or f"conv-{number}"), sessions, questions))
    return cubes
