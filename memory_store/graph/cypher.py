"""The Cypher core of the graph stores: query texts, parameters and row mapping shared by both drivers.

Model (the same on Neo4j and FalkorDB):

- ``(:Memory {namespace, id})`` holds one memory: scalar fields as properties, ``tags`` and
  ``successor_ids`` as string lists, ``sources`` as a list of canonical JSON strings (so a revision can
  append without duplicates), metadata as two parallel lists ``meta_keys`` / ``meta_values`` (JSON
  values; a revision merges key by key inside Cypher), the embedding as a float list ``embedding``
  plus ``embedding_json`` (exact: FalkorDB prints doubles with 15 significant digits, its Bolt
  endpoint with 6). Times are epoch milliseconds (``created_at``...) with an exact ``..._us`` twin
  (epoch microseconds) used for ordering and for reading back.
- An edge endpoint that is not (yet) a memory, such as an origin id, is a stub ``:Memory`` node with
  only ``namespace``, ``id`` and ``cube_id``; every read filters on ``status IS NOT NULL``.
- Edges have a type from :data:`RELATION_TYPES` (types cannot be parameters, so the text is chosen
  from that fixed list) and properties ``id``, ``cube_id``, ``weight``, ``metadata`` (JSON), times.
- ``(:Checkpoint {namespace, projection, topic, partition})`` holds ``offset``.

Only what both engines accept: no ``datetime()``, ``EXISTS {}``, ``COUNT {}``, ``=~``, APOC,
``elementId`` or ``CREATE (n $props)``; ``MERGE`` on stable keys only. Write statements reference
``$ns`` and one map parameter ``$p`` (``$p.field``), so :func:`compose_apply` can join several into
one FalkorDB query by renaming ``$p.`` to ``$p<i>.``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

from memory_store.graph.properties import (
    READ_PROPERTIES,
    embedding_props,
    json_text,
    memory_props,
    source_text,
    time_props,
)
from schemas.envelope import Position
from schemas.errors import PayloadTooLarge, StoreError
from schemas.events import RelationType
from schemas.memory import MAX_SOURCES
from schemas.ops import AnyOp, DropCube, RetireMemory, ReviseMemory, UpsertMemory, UpsertRelation

__all__ = [
    "RELATION_TYPES",
    "Query",
    "Statement",
    "checkpoint_read",
    "checkpoint_write",
    "compose_apply",
    "count_query",
    "cubes_query",
    "drop_namespace_statements",
    "get_query",
    "list_query",
    "neighbors_query",
    "plan_ops",
    "relations_query",
    "statement_size",
]

logger = logging.getLogger(__name__)

RELATION_TYPES: tuple[str, ...] = get_args(RelationType)
"""The only relationship types ever written into query text."""

# Reads leave out the float list ``embedding``: FalkorDB takes ~10 s to print 1000 x 384 doubles, and
# ``embedding_json`` carries the exact values anyway.
_MEMORY_COLUMNS = "m {" + ", ".join(f".{name}" for name in READ_PROPERTIES) + "} AS m"
_EDGE_COLUMNS = "r.id AS id, properties(r) AS props, type(r) AS type, s.id AS source_id, t.id AS target_id"


@dataclass(frozen=True, slots=True)
class Statement:
    """One write statement: text over ``$ns`` and ``$p``, with ``rows`` bound as ``$p.rows``."""

    text: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def p(self) -> dict[str, Any]:
        """The ``$p`` parameter."""
        return {"rows": self.rows}


@dataclass(frozen=True, slots=True)
class Query:
    """A read (or maintenance) query with its own parameters (``ns`` is added by the driver)."""

    text: str
    params: dict[str, Any] = field(default_factory=dict)


# --- write statements ---------------------------------------------------------------------------------

# A Retirement node remembers a retirement (also one that arrived before its memory): an upsert lands
# retired when one exists, as if the retirement came right after it. Retirement is terminal.
_UPSERT_MEMORY = """UNWIND $p.rows AS row
MERGE (m:Memory {namespace: $ns, id: row.id})
SET m = row.props
WITH m, row
OPTIONAL MATCH (t:Retirement {namespace: $ns, id: row.id, cube_id: row.props.cube_id})
WITH m, t
WHERE t IS NOT NULL
SET m.status = 'retired',
    m.retire_reason = t.reason,
    m.successor_ids = t.successor_ids,
    m.valid_to = coalesce(t.valid_to, m.valid_to),
    m.valid_to_us = coalesce(t.valid_to_us, m.valid_to_us),
    m.updated_at = t.updated_at,
    m.updated_at_us = t.updated_at_us"""

_REVISE_MEMORY = """UNWIND $p.rows AS row
MATCH (m:Memory {namespace: $ns, id: row.id})
WHERE m.cube_id = row.cube_id AND m.status IS NOT NULL
SET m.memory = row.memory,
    m.tags = CASE WHEN size(row.tags) > 0 THEN row.tags ELSE m.tags END,
    m.meta_values = [i IN range(0, size(m.meta_keys) - 1) WHERE NOT m.meta_keys[i] IN row.meta_keys
                     | m.meta_values[i]] + row.meta_values,
    m.meta_keys = [k IN m.meta_keys WHERE NOT k IN row.meta_keys] + row.meta_keys,
    m.sources = CASE WHEN size(m.sources + [s IN row.sources WHERE NOT s IN m.sources]) <= {MAX_SOURCES} THEN m.sources + [s IN row.sources WHERE NOT s IN m.sources]
                     ELSE (m.sources + [s IN row.sources WHERE NOT s IN m.sources])[0..1]
                          + (m.sources + [s IN row.sources WHERE NOT s IN m.sources])[size(m.sources + [s IN row.sources WHERE NOT s IN m.sources]) - {MAX_SOURCES} + 1..] END,
    m.embedding = CASE WHEN row.has_embedding THEN row.embedding ELSE m.embedding END,
    m.embedding_json = CASE WHEN row.has_embedding THEN row.embedding_json ELSE m.embedding_json END,
    m.embedding_model = CASE WHEN row.has_embedding THEN row.embedding_model ELSE m.embedding_model END,
    m.revision = row.revision,
    m.updated_at = row.updated_at,
    m.updated_at_us = row.updated_at_us""".replace("{MAX_SOURCES}", str(MAX_SOURCES))
"""Sources merged as the embedded store merges them (``schemas.memory.capped_sources``); every row reads the
node as the rows before it left it (no WITH that could make the planner evaluate all rows first)."""

_RETIRE_MEMORY = """UNWIND $p.rows AS row
MERGE (t:Retirement {namespace: $ns, id: row.id, cube_id: row.cube_id})
SET t.reason = row.reason,
    t.successor_ids = row.successor_ids,
    t.valid_to = row.valid_to,
    t.valid_to_us = row.valid_to_us,
    t.updated_at = row.updated_at,
    t.updated_at_us = row.updated_at_us
WITH row
MATCH (m:Memory {namespace: $ns, id: row.id})
WHERE m.cube_id = row.cube_id AND m.status IS NOT NULL
SET m.status = 'retired',
    m.retire_reason = row.reason,
    m.successor_ids = row.successor_ids,
    m.valid_to = coalesce(row.valid_to, m.valid_to),
    m.valid_to_us = coalesce(row.valid_to_us, m.valid_to_us),
    m.updated_at = row.updated_at,
    m.updated_at_us = row.updated_at_us"""

# An edge id names one edge: drop an older edge with that id but another type or other ends, then MERGE.
# The older edge may touch neither new end (an id re-sent with both ends changed), so it is looked for among
# the edges leaving the cube's memories, not only those of the new ends.
_UPSERT_RELATION = """UNWIND $p.rows AS row
MERGE (s:Memory {namespace: $ns, id: row.source_id})
ON CREATE SET s.cube_id = row.cube_id
MERGE (t:Memory {namespace: $ns, id: row.target_id})
ON CREATE SET t.cube_id = row.cube_id
WITH row, s, t
OPTIONAL MATCH (:Memory {namespace: $ns, cube_id: row.cube_id})-[old]->()
WHERE old.id = row.id AND (type(old) <> '%(type)s' OR startNode(old).id <> row.source_id
                           OR endNode(old).id <> row.target_id)
DELETE old
WITH DISTINCT row, s, t
MERGE (s)-[r:%(type)s {id: row.id}]->(t)
SET r = row.props"""

_DROP_CUBE = """UNWIND $p.rows AS row
OPTIONAL MATCH (t:Retirement {namespace: $ns, cube_id: row.cube_id})
DELETE t
WITH DISTINCT row
MATCH (m:Memory {namespace: $ns, cube_id: row.cube_id})
DETACH DELETE m"""


def _row(op: AnyOp, namespace: str, store_embedding: bool) -> tuple[str, str | None, dict[str, Any]]:
    """(statement text, key that must not repeat inside one UNWIND, row) for one op."""
    match op:
        case UpsertMemory(memory=record):
            props = memory_props(record, namespace, store_embedding=store_embedding)
            return _UPSERT_MEMORY, record.id, {"id": record.id, "props": props}
        case ReviseMemory():
            row = {
                "id": op.memory_id,
                "cube_id": op.cube_id,
                "memory": op.memory,
                "tags": list(op.tags),
                "meta_keys": list(op.metadata),
                "meta_values": [json_text(v) for v in op.metadata.values()],
                "sources": [source_text(s) for s in op.sources],
                "has_embedding": bool(op.embedding) and store_embedding,
                "revision": op.revision,
                **embedding_props(op.embedding, op.embedding_model, store=store_embedding),
                **time_props("updated_at", op.updated_at),
            }
            return _REVISE_MEMORY, op.memory_id, row
        case RetireMemory():
            row = {
                "id": op.memory_id,
                "cube_id": op.cube_id,
                "reason": op.reason,
                "successor_ids": list(op.successor_ids),
                **time_props("valid_to", op.valid_to),
                **time_props("updated_at", op.updated_at),
            }
            return _RETIRE_MEMORY, op.memory_id, row
        case UpsertRelation(relation=rel):
            if rel.relation not in RELATION_TYPES:
                raise StoreError(f"unknown relation type {rel.relation!r}; known: {RELATION_TYPES}")
            props = {
                "id": rel.id,
                "cube_id": rel.cube_id,
                "weight": float(rel.weight),
                "metadata": json_text(rel.metadata),
                **time_props("created_at", rel.created_at),
            }
            row = {
                "id": rel.id,
                "cube_id": rel.cube_id,
                "source_id": rel.source_id,
                "target_id": rel.target_id,
                "props": props,
            }
            return _UPSERT_RELATION % {"type": rel.relation}, rel.id, row
        case DropCube():
            return _DROP_CUBE, None, {"cube_id": op.cube_id}
    raise StoreError(f"unknown op {type(op).__name__!r}")


def statement_size(text: str, params: Mapping[str, Any]) -> int:
    """Approximate bytes on the wire of a query plus its parameters (JSON length as the estimate).

    Raises StoreError when a string cannot be encoded as UTF-8 (a lone surrogate): no engine stores it.
    """
    try:
        return len(text.encode()) + len(json.dumps(params, default=str, ensure_ascii=False).encode())
    except UnicodeEncodeError as exc:
        raise StoreError(f"a value cannot be encoded as UTF-8: {exc}") from exc


def plan_ops(
    ops: Iterable[AnyOp],
    namespace: str,
    *,
    store_embedding: bool = True,
    max_bytes: int | None = None,
) -> list[Statement]:
    """Turn ops into UNWIND statements, in order: runs of the same kind share one statement.

    A run is split when an id repeats (rows of one UNWIND must not depend on each other), and, with
    ``max_bytes``, when the statement would grow past it. Raises PayloadTooLarge when a single op
    does not fit ``max_bytes``, StoreError for an unknown op or relation type.
    """
    statements: list[Statement] = []
    text: str | None = None
    rows: list[dict[str, Any]] = []
    keys: set[str] = set()
    size = 0

    def flush() -> None:
        if text is not None and rows:
            statements.append(Statement(text, list(rows)))

    for op in ops:
        op_text, key, row = _row(op, namespace, store_embedding)
        row_size = statement_size("", row) + 1 if max_bytes is not None else 0
        if (
            max_bytes is not None
            and statement_size(op_text, {"ns": namespace, "p": {"rows": [row]}}) > max_bytes
        ):
            raise PayloadTooLarge(
                f"one {op.op} op needs more than max_bytes={max_bytes} of query text and parameters"
            )
        same = op_text == text and (key is None or key not in keys)
        fits = max_bytes is None or size + row_size <= max_bytes
        if not (same and fits):
            flush()
            text, rows, keys = op_text, [], set()
            size = statement_size(op_text, {"ns": namespace, "p": {"rows": []}})
        rows.append(row)
        size += row_size
        if key is not None:
            keys.add(key)
    flush()
    return statements


def _checkpoint_key(projection: str, position: Position) -> dict[str, Any]:
    return {"projection": projection, "topic": position.topic, "partition": position.partition}


def checkpoint_read(projection: str, topic: str, partition: int) -> Query:
    """Query returning ``last_offset`` of one checkpoint (no row when there is none)."""
    text = (
        "MATCH (c:Checkpoint {namespace: $ns, projection: $projection, topic: $topic, partition: $partition})\n"
        "RETURN c.offset AS last_offset"
    )
    return Query(text, {"projection": projection, "topic": topic, "partition": partition})


def checkpoint_write(projection: str, position: Position) -> Statement:
    """Statement setting one checkpoint to ``position.offset``."""
    text = (
        "UNWIND $p.rows AS row\n"
        "MERGE (c:Checkpoint {namespace: $ns, projection: row.projection, topic: row.topic,"
        " partition: row.partition})\n"
        "SET c.offset = row.offset"
    )
    return Statement(text, [{**_checkpoint_key(projection, position), "offset": position.offset}])


def compose_apply(
    statements: Sequence[Statement], projection: str, position: Position, *, replay: bool
) -> Query:
    """One query applying ``statements`` (and the checkpoint, unless ``replay``) all or nothing.

    Without ``replay`` the query first reads the checkpoint and yields no row at or below it, so
    nothing runs; each statement is a unit ``CALL {}`` subquery, which runs once per incoming row and
    passes the row on. Returns ``applied`` = 1 when it wrote, 0 when it skipped.
    """
    parts: list[str] = []
    params: dict[str, Any] = {}
    if replay:
        parts.append("WITH 1 AS memos_go")
        body = list(statements)
    else:
        # coalesce() rather than "c IS NULL OR c.offset < x": FalkorDB 4.16 pushes that OR filter
        # into the OPTIONAL MATCH and lets every row through.
        parts.append(
            "OPTIONAL MATCH (cp:Checkpoint {namespace: $ns, projection: $cp.projection, topic: $cp.topic,"
            " partition: $cp.partition})\n"
            "WITH coalesce(max(cp.offset), -1) AS memos_cur\n"
            "WHERE memos_cur < $cp.offset"
        )
        params["cp"] = {**_checkpoint_key(projection, position), "offset": position.offset}
        body = [*statements, checkpoint_write(projection, position)]
    for index, statement in enumerate(body):
        name = f"p{index}"
        if statement.text.count("$p") != statement.text.count("$p."):
            raise StoreError("a write statement may reference $p only as $p.<field>")
        parts.append("CALL {\n" + statement.text.replace("$p.", f"${name}.") + "\n}")
        params[name] = statement.p
    parts.append("RETURN count(*) AS applied")
    return Query("\n".join(parts), params)


# --- reads --------------------------------------------------------------------------------------------


def _status_filter(include_retired: bool) -> str:
    return "m.status IS NOT NULL" if include_retired else "m.status = 'activated'"


def get_query(memory_ids: Sequence[str], cube_id: str | None) -> Query:
    """Memories by id (retired included), optionally only of one cube; order is restored by the caller."""
    where = "m.status IS NOT NULL" + (" AND m.cube_id = $cube_id" if cube_id is not None else "")
    text = f"UNWIND $ids AS mid\nMATCH (m:Memory {{namespace: $ns, id: mid}})\nWHERE {where}\nRETURN {_MEMORY_COLUMNS}"
    params: dict[str, Any] = {"ids": list(memory_ids)}
    if cube_id is not None:
        params["cube_id"] = cube_id
    return Query(text, params)


def _cube_match(include_retired: bool, memory_types: Sequence[str] | None) -> tuple[str, dict[str, Any]]:
    where = [_status_filter(include_retired)]
    params: dict[str, Any] = {}
    if memory_types is not None:
        where.append("m.memory_type IN $types")
        params["types"] = list(memory_types)
    text = "MATCH (m:Memory {namespace: $ns, cube_id: $cube_id})\nWHERE " + " AND ".join(where)
    return text, params


def list_query(
    cube_id: str,
    *,
    include_retired: bool,
    memory_types: Sequence[str] | None,
    limit: int | None,
    offset: int,
) -> Query:
    """Memories of a cube ordered by (created_at, id), paged with SKIP/LIMIT."""
    match, params = _cube_match(include_retired, memory_types)
    text = f"{match}\nWITH m ORDER BY m.created_at_us, m.id\nSKIP $skip"
    params.update(cube_id=cube_id, skip=max(0, int(offset)))
    if limit is not None:
        text += "\nLIMIT $limit"
        params["limit"] = max(0, int(limit))
    return Query(f"{text}\nRETURN {_MEMORY_COLUMNS}", params)


def count_query(cube_id: str, *, include_retired: bool) -> Query:
    """Number of memories of a cube, as ``n``."""
    match, params = _cube_match(include_retired, None)
    return Query(f"{match}\nRETURN count(m) AS n", {**params, "cube_id": cube_id})


def relations_query(cube_id: str) -> Query:
    """Every edge of a cube, ordered by id."""
    text = (
        "MATCH (s:Memory {namespace: $ns, cube_id: $cube_id})-[r]->(t)\n"
        f"WHERE r.cube_id = $cube_id\nRETURN {_EDGE_COLUMNS}\nORDER BY id"
    )
    return Query(text, {"cube_id": cube_id})


def neighbors_query(memory_ids: Sequence[str], relations: Sequence[str] | None, limit: int) -> Query:
    """Edges touching any of the ids, either direction, optionally of some types; by id, limited."""
    types = list(RELATION_TYPES if relations is None else relations)
    text = (
        "UNWIND $ids AS mid\n"
        "MATCH (m:Memory {namespace: $ns, id: mid})-[r]-()\n"
        "WHERE type(r) IN $types\n"
        "WITH DISTINCT r\nORDER BY r.id\nLIMIT $limit\n"
        "RETURN r.id AS id, properties(r) AS props, type(r) AS type,"
        " startNode(r).id AS source_id, endNode(r).id AS target_id\nORDER BY id"
    )
    return Query(text, {"ids": list(dict.fromkeys(memory_ids)), "types": types, "limit": max(0, int(limit))})


def cubes_query() -> Query:
    """Distinct cube ids holding at least one memory (retired ones count), as ``cube_id``."""
    text = (
        "MATCH (m:Memory {namespace: $ns})\nWHERE m.status IS NOT NULL\n"
        "RETURN DISTINCT m.cube_id AS cube_id\nORDER BY cube_id"
    )
    return Query(text)


def drop_namespace_statements(*, batch: int = 5000) -> list[Query]:
    """Queries deleting up to ``batch`` nodes of the namespace each (with their edges), returning
    ``deleted``; run each until it deletes fewer than ``batch`` (teardown, decommissioning)."""
    return [
        Query(
            f"MATCH (n:{label} {{namespace: $ns}})\nWITH n LIMIT $batch\nDETACH DELETE n\nRETURN count(*) AS deleted",
            {"batch": batch},
        )
        for label in ("Memory", "Retirement", "Checkpoint")
    ]
