"""Folding revisions into their upserts: the revised record, and where a revision must not fold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from processors.fold import fold_revisions, revised
from schemas.events import SourceRef
from schemas.memory import MAX_SOURCES, MemoryRecord, RelationRecord
from schemas.ops import DropCube, RetireMemory, ReviseMemory, UpsertMemory, UpsertRelation

AT = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)


def _upsert(memory_id: str = "a", cube_id: str = "c", **fields: object) -> UpsertMemory:
    values: dict[str, object] = {
        "id": memory_id, "cube_id": cube_id, "user_id": "u", "memory": f"text of {memory_id}", "key": "title",
        "tags": ("old",), "sources": (SourceRef(content="first"),), "metadata": {"keep": 1, "over": "old"},
        "embedding": (1.0, 0.0), "embedding_model": "m1", "created_at": AT, "updated_at": AT,
    }  # fmt: skip
    return UpsertMemory(memory=MemoryRecord(**{**values, **fields}))  # type: ignore[arg-type]


def _revise(memory_id: str = "a", cube_id: str = "c", revision: int = 1, **fields: object) -> ReviseMemory:
    values: dict[str, object] = {
        "memory_id": memory_id, "cube_id": cube_id, "memory": f"revised {revision}", "revision": revision,
        "updated_at": AT + timedelta(minutes=revision),
    }  # fmt: skip
    return ReviseMemory(**{**values, **fields})  # type: ignore[arg-type]


def _retire(memory_id: str = "a", cube_id: str = "c") -> RetireMemory:
    return RetireMemory(memory_id=memory_id, cube_id=cube_id, reason="deleted", updated_at=AT)


def test_revised_replaces_merges_appends_and_keeps_the_rest() -> None:
    record = _upsert().memory
    op = _revise(tags=("new",), metadata={"over": "new", "added": True}, embedding=(0.0, 1.0),
                 embedding_model="m2", sources=(SourceRef(content="first"), SourceRef(content="second")))  # fmt: skip
    out = revised(record, op)
    assert out.memory == "revised 1" and out.tags == ("new",)
    assert out.metadata == {"keep": 1, "over": "new", "added": True}
    assert list(out.metadata) == ["keep", "over", "added"]  # the stored JSON's key order
    assert [s.content for s in out.sources] == ["first", "second"]  # a source held already is not repeated
    assert out.embedding == (0.0, 1.0) and out.embedding_model == "m2"
    assert out.revision == 1 and out.updated_at == AT + timedelta(minutes=1)
    unchanged = {"id", "cube_id", "user_id", "key", "status", "created_at", "origin_event_id", "extractor"}
    assert all(getattr(out, name) == getattr(record, name) for name in unchanged)

    bare = revised(record, _revise(memory="", revision=2))  # no text, tags or embedding: those stay
    assert (bare.memory, bare.tags, bare.embedding, bare.embedding_model) == (
        record.memory, record.tags, record.embedding, record.embedding_model,
    )  # fmt: skip
    assert bare.revision == 2


def test_revised_caps_sources_as_the_stores_do() -> None:
    record = _upsert().memory
    for i in range(MAX_SOURCES + 3):
        record = revised(record, _revise(revision=i + 1, sources=(SourceRef(content=f"s{i}"),)))
    contents = [s.content for s in record.sources]
    assert len(contents) == MAX_SOURCES
    assert contents[0] == "first" and contents[-1] == f"s{MAX_SOURCES + 2}"


def test_fold_merges_each_memorys_revisions_into_its_upsert() -> None:
    a, b = _upsert("a"), _upsert("b")
    edge = UpsertRelation(relation=RelationRecord(id="r", cube_id="c", source_id="a", target_id="b",
                                                  relation="RELATES", created_at=AT))  # fmt: skip
    r1, r2, rb = _revise("a", revision=1), _revise("a", revision=2, tags=("t",)), _revise("b", revision=1)
    out = fold_revisions([a, b, r1, edge, r2, rb], set())
    assert out == [
        UpsertMemory(memory=revised(revised(a.memory, r1), r2)),
        UpsertMemory(memory=revised(b.memory, rb)),
        edge,
    ]


def test_fold_leaves_a_revision_alone_where_it_cannot_merge() -> None:
    a, r = _upsert("a"), _revise("a")
    # a retirement in between: the revision applies to the retired memory, after it
    assert fold_revisions([a, _retire("a"), r], set()) == [a, _retire("a"), r]
    # a memory retired before its upsert (in this batch or an earlier one) lands retired: no fold
    retired: set[str] = set()
    assert fold_revisions([_retire("a")], retired) == [_retire("a")] and retired == {"a"}
    assert fold_revisions([a, r], retired) == [a, r]
    # another cube's revision of the same id, a revision with no upsert before it, and a barrier
    other = _revise("a", cube_id="elsewhere")
    assert fold_revisions([a, other, r], set()) == [a, other, r]
    assert fold_revisions([r], set()) == [r]
    drop = DropCube(cube_id="c")
    assert fold_revisions([a, drop, r], set()) == [a, drop, r]
    assert fold_revisions([], set()) == []
