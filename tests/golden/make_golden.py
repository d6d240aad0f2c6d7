"""Write golden payloads for event types that have none yet; existing files are never overwritten."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas.codec import encode
from schemas.events import EVENT_TYPES, Event

HERE = Path(__file__).parent
AT = datetime(2025, 6, 1, 12, 30, tzinfo=UTC)

SAMPLES: dict[str, dict[str, Any]] = {
    "ConversationRecorded": {"user_id": "u1", "cube_id": "c1", "task_id": "t1", "session_id": "s1",
                             "messages": [{"role": "user", "content": "I'll choose 7 Days Inn.",
                                           "chat_time": "2025-06-01"}],
                             "info": {"app": "golden"}, "custom_tags": ["travel"], "mode": "fine",
                             "origin": "local"},
    "MemoryAdded": {"memory_id": "m1", "cube_id": "c1", "user_id": "u1", "memory": "The user chose 7 Days Inn.",
                    "memory_type": "UserMemory", "title": "hotel choice", "tags": ["travel"],
                    "sources": [{"type": "chat", "role": "user", "message_index": 0, "content": "I'll choose"}],
                    "metadata": {"extractor": "rules"}, "embedding": [0.25, -0.5], "embedding_model": "e5",
                    "extractor": "rules", "usage": [{"model_id": "e5", "kind": "embedding", "latency_ms": 1.5}]},
    "MemoryRevised": {"memory_id": "m1", "cube_id": "c1", "revision": 2, "memory": "The user chose 7 Days Inn twice.",
                      "reason": "duplicate"},
    "MemoryRetired": {"memory_id": "m1", "cube_id": "c1", "reason": "superseded", "successor_ids": ["m2"]},
    "RelationAdded": {"relation_id": "r1", "cube_id": "c1", "source_id": "m2", "target_id": "m1",
                      "relation": "SUPERSEDES"},
    "DerivationFailed": {"cube_id": "c1", "origin_event_id": "00000000-0000-0000-0000-000000000001",
                         "stage": "llm", "error": "unparsable answer"},
    "TaskSubmitted": {"task_id": "t2", "user_id": "u1", "cube_id": "c1", "label": "mem_update", "content": "q"},
    "TaskStatusChanged": {"task_id": "t2", "cube_id": "c1", "status": "completed", "result": {"n": 1}},
    "KVCacheWarmed": {"cube_id": "c1", "cache_key": "k", "model_id": "tiny", "memory_ids": ["m1"], "tokens": 12},
    "KVCacheEvicted": {"cube_id": "c1", "cache_key": "k", "reason": "budget"},
    "UserCreated": {"user_id": "u1", "user_name": "Ann"},
    "UserForgotten": {"user_id": "u1"},
    "CubeCreated": {"cube_id": "c1", "owner_id": "u1"},
    "CubeShared": {"cube_id": "c1", "user_id": "u2", "access": "write"},
    "CubeForgotten": {"cube_id": "c1"},
    "ApiKeyIssued": {"key_id": "abc", "user_id": "u1", "key_hash": "00$11"},
    "ApiKeyRevoked": {"key_id": "abc", "user_id": "u1"},
}


def sample(cls: type[Event]) -> Event:
    """A fixed sample event of a type."""
    name = cls.__name__
    return cls(event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"golden:{name}"), occurred_at=AT, key="c1",
               **SAMPLES[name])


def main() -> None:
    for cls in EVENT_TYPES:
        version = cls.model_fields["schema_version"].default
        avro = HERE / f"{cls.__name__}.v{version}.avro"
        if avro.exists():
            continue
        event = sample(cls)
        avro.write_bytes(encode(event))
        avro.with_name(f"{cls.__name__}.v{version}.json").write_text(json.dumps(event.model_dump(mode="json"), indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
