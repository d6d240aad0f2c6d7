"""The end of a search (pure): per-cube selection (threshold, dedup, caps) and MemOS response shaping.

The shapes are MemOS's; ``processors.retrieval`` names the files they were read from.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from processors.fusion import mmr_select, similarity_matrix
from processors.retrieval import Bucket, Hit, SearchQuery, SearchSettings
from schemas.memory import MemoryRecord

__all__ = ["PREF_NOTE", "build_response", "memory_item", "preference_strings", "select_hits"]

logger = logging.getLogger(__name__)

PREF_NOTE = (
    "# Note:\n"
    "Plaintext memories summarise facts; preference memories summarise what the user prefers.\n"
    "Do not contradict any of the user's preferences, explicit or implicit, and say briefly how the answer "
    "respects them. When they conflict: explicit preference > implicit preference > plaintext memory.\n"
)
"""Instruction that follows the preference list in ``pref_string`` (returned alone as ``pref_note``)."""

_BUCKET_KEYS: dict[Bucket, str] = {
    "text": "text_mem",
    "pref": "pref_mem",
    "tool": "tool_mem",
    "skill": "skill_mem",
}


def _iso(value: object) -> str | None:
    isoformat = getattr(value, "isoformat", None)
    return isoformat() if callable(isoformat) else None


def memory_item(hit: Hit, *, include_embedding: bool = False) -> dict[str, Any]:
    """One memory as MemOS returns it: ``{id, memory, ref_id, metadata{...}}`` (embedding [] unless asked)."""
    record: MemoryRecord = hit.record
    ref_id = f"[{record.id.split('-')[0]}]"
    extra = dict(record.metadata)
    info = extra.get("info")
    metadata: dict[str, Any] = {
        "user_id": record.user_id,
        "session_id": record.session_id,
        "status": record.status,
        "type": extra.get("type", "fact"),
        "key": record.key,
        "confidence": record.confidence,
        "source": extra.get("source"),
        "tags": list(record.tags),
        "visibility": extra.get("visibility"),
        "updated_at": _iso(record.updated_at),
        "info": info if isinstance(info, dict) else None,
        "covered_history": list(record.successor_ids) if record.status == "retired" else None,
        "memory_type": record.memory_type,
        "sources": [s.model_dump(mode="json", exclude_none=True) for s in record.sources],
        "embedding": list(record.embedding) if include_embedding else [],
        "created_at": _iso(record.created_at),
        "usage": [],
        "background": record.background,
        "file_ids": [s.file_id for s in record.sources if s.file_id],
        "relativity": hit.relativity,
        "score_parts": dict(hit.parts),
        "ref_id": ref_id,
        "id": record.id,
        "memory": record.memory,
        "cube_id": record.cube_id,
        "revision": record.revision,
        "extractor": record.extractor,
        "retire_reason": record.retire_reason,
        "successor_ids": list(record.successor_ids),
        "valid_from": _iso(record.valid_from),
        "valid_to": _iso(record.valid_to),
        "origin_event_id": record.origin_event_id,
        "embedding_model": record.embedding_model,
    }
    for key, value in extra.items():
        if key not in metadata and key != "embedding":
            metadata[key] = value
    return {"id": record.id, "memory": record.memory, "ref_id": ref_id, "metadata": metadata}


def preference_strings(items: Sequence[Mapping[str, Any]], user_id: str = "") -> tuple[str, str]:
    """``(pref_string, pref_note)`` for preference items: numbered explicit then implicit preferences.

    A preference's text is ``metadata["preference"]`` when set, else the memory text; its kind is
    ``metadata["preference_type"]`` (``explicit_preference`` unless it says ``implicit_preference``).
    Preferences another user wrote into a shared cube (``metadata["user_id"]`` not ``user_id``) are listed apart,
    under their writer's id: the note tells a model to respect "the user's" preferences, and "The user prefers
    quiet rooms" in a team cube is its writer's, not the asker's. No preferences give ``("", "")``.
    """
    explicit: list[str] = []
    implicit: list[str] = []
    others: list[str] = []
    for item in items:
        meta = item.get("metadata", {})
        text = str(meta.get("preference") or item.get("memory") or "").strip()
        if not text:
            continue
        writer = str(meta.get("user_id") or "")
        if user_id and writer and writer != user_id:
            others.append(f"{writer}: {text}")
            continue
        (implicit if meta.get("preference_type") == "implicit_preference" else explicit).append(text)
    if not explicit and not implicit and not others:
        return "", ""
    parts = []
    if explicit:
        parts.append("Explicit Preference:\n" + "\n".join(f"{n}. {p}" for n, p in enumerate(explicit, 1)))
    if implicit:
        parts.append("Implicit Preference:\n" + "\n".join(f"{n}. {p}" for n, p in enumerate(implicit, 1)))
    if others:
        parts.append("Preferences of other users (shared cubes; not this user's):\n"
                     + "\n".join(f"{n}. {p}" for n, p in enumerate(others, 1)))
    return "\n".join(parts) + "\n" + PREF_NOTE, PREF_NOTE


def build_response(
    query: SearchQuery, selected: Mapping[Bucket, Mapping[str, Sequence[Hit]]]
) -> dict[str, Any]:
    """The MemOS ``data`` dict: one bucket per readable cube in text_mem, tool_mem, skill_mem and (when
    preferences are asked for) pref_mem; act_mem and para_mem empty; pref_string and pref_note."""
    data: dict[str, Any] = {
        "text_mem": [],
        "act_mem": [],
        "para_mem": [],
        "pref_mem": [],
        "pref_note": "",
        "pref_string": "",
        "tool_mem": [],
        "skill_mem": [],
    }
    for bucket, key in _BUCKET_KEYS.items():
        if bucket == "pref" and not query.include_preference:
            continue
        per_cube = selected.get(bucket, {})
        for cube in query.readable_cube_ids:
            memories = [
                memory_item(h, include_embedding=query.include_embedding) for h in per_cube.get(cube, ())
            ]
            data[key].append({"cube_id": cube, "memories": memories, "total_nodes": len(memories)})
    prefs = [m for b in data["pref_mem"] for m in b["memories"]]
    data["pref_string"], data["pref_note"] = preference_strings(prefs, query.user_id)
    return data


def select_hits(
    hits_by_cube: Mapping[str, Sequence[Hit]],
    *,
    limit: int,
    dedup: Literal["no", "sim", "mmr"] | None,
    min_relativity: float,
    settings: SearchSettings,
) -> dict[str, list[Hit]]:
    """Per cube, the hits to return: above the relativity threshold, deduplicated, at most ``limit``.

    Dedup runs over all cubes together (as MemOS does) with a cap of ``limit`` per cube:
    ``"mmr"`` maximal marginal relevance over the stored embeddings, ``"sim"`` drops any hit whose cosine
    to a better one is above ``sim_dedup_threshold``, ``"no"`` keeps everything, None drops exact
    duplicate texts. Each cube's list keeps the order of selection.
    """
    result: dict[str, list[Hit]] = {cube: [] for cube in hits_by_cube}
    if limit <= 0:
        return result
    pool: list[Hit] = []
    groups: list[str] = []
    for cube, hits in hits_by_cube.items():
        kept = [h for h in hits if h.relativity >= min_relativity]
        kept = kept[: limit * settings.dedup_pool] if dedup in ("mmr", "sim") else kept
        pool.extend(kept)
        groups.extend([cube] * len(kept))
    if not pool:
        return result
    if dedup == "mmr":
        top = max(h.score for h in pool) or 1.0
        relevance = np.asarray([h.score / top for h in pool])
        raw = similarity_matrix([h.record.embedding for h in pool])
        penalty = np.clip((raw - settings.mmr_sim_floor) / max(1e-9, 1.0 - settings.mmr_sim_floor), 0.0, 1.0)
        # near duplicates (raw cosine) go first, in relevance order, so MMR trades off only the rest
        unique = _greedy_unique(
            list(np.argsort(-relevance, kind="stable")), raw >= settings.duplicate_threshold
        )
        index = sorted(unique)
        picked = mmr_select(
            relevance[index],
            penalty[np.ix_(index, index)],
            lambda_=settings.mmr_lambda,
            limit=limit * len(hits_by_cube),
            groups=[groups[i] for i in index],
            per_group=limit,
            prefill=settings.mmr_prefill,
        )
        order = [index[p] for p in picked]
    else:
        order = sorted(range(len(pool)), key=lambda i: (-pool[i].score, pool[i].record.id))
        if dedup == "sim":
            raw = similarity_matrix([h.record.embedding for h in pool])
            order = _greedy_unique(order, raw > settings.sim_dedup_threshold)
        elif dedup is None:
            texts = [h.record.memory.strip() for h in pool]
            same = np.asarray([[a == b for b in texts] for a in texts], dtype=bool)
            order = _greedy_unique(order, same)
    for i in order:
        bucket = result[groups[i]]
        if len(bucket) < limit:
            bucket.append(pool[i])
    return result


def _greedy_unique(order: Sequence[int], same: NDArray[np.bool_]) -> list[int]:
    """Indices in ``order`` that are not ``same`` as an index kept before them."""
    kept: list[int] = []
    for i in order:
        if not kept or not bool(same[int(i), kept].any()):
            kept.append(int(i))
    return kept
