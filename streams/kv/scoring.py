"""The kv-warmer's scoring inputs: query embeddings against stored memory embeddings, and its saved state.

Similarity is the cosine of a query's embedding and the embedding stored on a memory record; a memory
whose embedding comes from another model, or has another length, has no similarity to the query (0).
The saved state (``warmer_state.json`` per cube, see ``streams.kv.handoff``) is what a restarted worker
needs to score as before: recent queries with their embeddings, retrieval counts, the warm composition.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from processors.kv_warmer import QuerySignal, WarmComposition
from schemas.memory import MemoryRecord
from streams.kv.handoff import kv_root, read_cube_state

__all__ = [
    "QueryMemory",
    "cube_state_from_json",
    "cube_state_to_json",
    "query_signals",
    "saved_cube_states",
    "similarities",
    "top_matches",
]

logger = logging.getLogger(__name__)

_STATE_FORMAT = 1


@dataclass(frozen=True, slots=True)
class QueryMemory:
    """A ``mem_update`` query the warmer remembers: its text, time and embedding."""

    text: str
    occurred_at: datetime
    vector: tuple[float, ...]
    model_id: str


def similarities(query: QueryMemory, records: Sequence[MemoryRecord]) -> dict[str, float]:
    """Cosine of the query and every comparable memory embedding (memory id -> value in [-1, 1])."""
    width = len(query.vector)
    usable = [
        r
        for r in records
        if len(r.embedding) == width
        and width
        and (not r.embedding_model or r.embedding_model == query.model_id)
    ]
    if not usable:
        return {}
    matrix = np.asarray([r.embedding for r in usable], dtype=np.float32)
    q = np.asarray(query.vector, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1) * float(np.linalg.norm(q))
    cosines = (matrix @ q) / np.where(norms > 0, norms, 1.0)
    return {r.id: float(c) for r, c in zip(usable, cosines.tolist(), strict=True)}


def query_signals(queries: Iterable[QueryMemory], records: Sequence[MemoryRecord]) -> list[QuerySignal]:
    """The planner's view of the recent queries over these memories."""
    return [QuerySignal(q.text, q.occurred_at, similarities(q, records)) for q in queries]


def top_matches(query: QueryMemory, records: Sequence[MemoryRecord], k: int) -> list[str]:
    """Ids of the ``k`` memories most similar to the query (positive similarity only): its retrievals."""
    scored = sorted(((-s, i) for i, s in similarities(query, records).items() if s > 0))
    return [i for _, i in scored[: max(k, 0)]]


def cube_state_to_json(
    cube_id: str,
    model_id: str,
    queries: Iterable[QueryMemory],
    retrievals: Counter[str],
    composition: WarmComposition | None,
    now: datetime | None,
) -> dict[str, Any]:
    """The JSON-able state of one cube (embeddings rounded to 6 decimals)."""
    return {
        "format": _STATE_FORMAT,
        "cube_id": cube_id,
        "model_id": model_id,
        "now": now.isoformat() if now is not None else None,
        "queries": [
            {
                "text": q.text,
                "occurred_at": q.occurred_at.isoformat(),
                "model_id": q.model_id,
                "vector": [round(v, 6) for v in q.vector],
            }
            for q in queries
        ],
        "retrievals": dict(retrievals),
        "composition": None
        if composition is None
        else {
            "memory_ids": list(composition.memory_ids),
            "texts": list(composition.texts),
            "prefix_hash": composition.prefix_hash,
        },
    }


def cube_state_from_json(
    data: dict[str, Any], max_queries: int
) -> tuple[str, deque[QueryMemory], Counter[str], WarmComposition | None, datetime | None]:
    """(cube id, queries, retrieval counts, composition, now) from :func:`cube_state_to_json` output.

    Raises KeyError, TypeError or ValueError on malformed data.
    """
    queries: deque[QueryMemory] = deque(
        (
            QueryMemory(
                str(q["text"]),
                datetime.fromisoformat(q["occurred_at"]),
                tuple(float(v) for v in q["vector"]),
                str(q["model_id"]),
            )
            for q in data["queries"]
        ),
        maxlen=max_queries,
    )
    retrievals: Counter[str] = Counter({str(k): int(v) for k, v in data["retrievals"].items()})
    comp = data.get("composition")
    composition = (
        None
        if not comp
        else WarmComposition(tuple(comp["memory_ids"]), tuple(comp["texts"]), str(comp["prefix_hash"]))
    )
    now = datetime.fromisoformat(data["now"]) if data.get("now") else None
    return str(data["cube_id"]), queries, retrievals, composition, now


def saved_cube_states(home: str | Path, model_id: str) -> list[dict[str, Any]]:
    """Every readable saved cube state of ``model_id`` under ``<home>/kv``, in folder order."""
    root = kv_root(home)
    if not root.is_dir():
        return []
    states = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        data = read_cube_state(folder)
        if data is None or data.get("format") != _STATE_FORMAT or data.get("model_id") != model_id:
            continue
        try:
            cube_state_from_json(data, 1)
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("kv_state_unreadable folder=%s error=%s", folder, exc)
            continue
        states.append(data)
    return states
