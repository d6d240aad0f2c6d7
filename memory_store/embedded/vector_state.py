"""The embedded vector store's in-memory mirror of its rows: a matrix per cube, the cube of every memory."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from memory_store.embedded.ann import CubeVectors, Hnsw, SavedIndex, stacked
from memory_store.embedded.db import EmbeddedDatabase
from memory_store.embedded.vector_rows import Change, Drop, Put, Status
from schemas.errors import StoreError

__all__ = ["VectorState"]


class VectorState:
    """Mixin of EmbeddedVectorStore: the search structures its committed changes are published to."""

    hnsw: Hnsw
    _cubes: dict[str, CubeVectors]
    _where: dict[str, str]
    """Cube of every memory that has a vector in memory (ids are global)."""
    _types: dict[str, int]
    _unsaved: set[str]
    _state_lock: threading.RLock
    db: EmbeddedDatabase

    def _saved(self, cube_id: str) -> SavedIndex | None:
        raise NotImplementedError

    def _type_code(self, memory_type: str) -> int:
        code = self._types.get(memory_type)
        if code is None:
            code = self._types[memory_type] = len(self._types)
        return code

    def _cube(self, cube_id: str, dim: int) -> CubeVectors:
        cube = self._cubes.get(cube_id)
        if cube is None or (cube.dim != dim and cube.live == 0):
            cube = self._cubes[cube_id] = CubeVectors(dim, hnsw=self.hnsw)
        return cube

    def _load_cube(self, rows: list[tuple[Any, ...]]) -> int:
        cube_id = rows[0][1]
        sizes = {len(r[4]) for r in rows}
        if len(sizes) != 1:
            raise StoreError(f"cube {cube_id!r} holds vectors of several dimensions in {self.db.path!r}")
        dim = sizes.pop() // 4
        matrix = np.frombuffer(b"".join(r[4] for r in rows), dtype=np.float32).reshape(len(rows), dim)
        cube = self._cube(cube_id, dim)
        self._where.update((r[0], cube_id) for r in rows)
        cube.append([r[0] for r in rows], matrix, np.array([r[3] == "activated" for r in rows]),
                    np.array([self._type_code(r[2]) for r in rows], dtype=np.int32))  # fmt: skip
        return len(rows)

    def _publish_all(self, changes: Sequence[Change]) -> None:
        """Publish ``changes`` in order (state lock held): runs of new vectors, and of new vectors of memories one
        cube holds already, in bulk."""
        fresh: dict[str, list[Put]] = {}  # new vectors per cube, appended in bulk
        known: list[Put] = []  # new vectors of memories already in one cube, put in bulk
        for change in changes:
            if isinstance(change, Put) and change.vector is not None:
                where = self._where.get(change.memory_id)
                if where is None:
                    fresh.setdefault(change.cube_id, []).append(change)
                    self._where[change.memory_id] = change.cube_id
                    continue
                if where == change.cube_id and not fresh and (not known or known[0].cube_id == where):
                    known.append(change)
                    continue
            for puts in fresh.values():
                self._append(puts)
            fresh = {}
            if known:
                self._append(known, known=True)
                known = []
            self._publish(change)
        for puts in fresh.values():
            self._append(puts)
        if known:
            self._append(known, known=True)

    def _append(self, puts: list[Put], *, known: bool = False) -> None:
        """Vectors of one cube in bulk: memories new to the in-memory state appended (the replay fast path),
        or (``known``) memories the cube holds already given their new vectors, as ``_publish`` would."""
        vectors = stacked([p.vector for p in puts if p.vector is not None])
        cube = self._cube(puts[0].cube_id, vectors.shape[1])
        put = cube.put_many if known else cube.append
        put([p.memory_id for p in puts], vectors, np.array([p.active for p in puts]),
            np.array([self._type_code(p.memory_type) for p in puts], dtype=np.int32))  # fmt: skip

    def _publish(self, change: Change) -> None:
        match change:
            case Drop():
                dropped = self._cubes.pop(change.cube_id, None)
                self._unsaved.discard(change.cube_id)
                saved = self._saved(change.cube_id)
                if saved is not None:
                    saved.discard()
                if dropped is not None:
                    for memory_id in dropped.row_of:
                        self._where.pop(memory_id, None)
            case Status():
                cube = self._cubes.get(change.cube_id)
                if cube is not None:
                    cube.set_active(change.memory_id, change.active)
            case Put():
                old_cube_id = self._where.get(change.memory_id)
                if old_cube_id is not None and (old_cube_id != change.cube_id or change.vector is None):
                    old = self._cubes.get(old_cube_id)
                    if old is not None:
                        old.remove(change.memory_id)
                    del self._where[change.memory_id]
                if change.vector is not None:
                    cube = self._cube(change.cube_id, len(change.vector))
                    cube.put(
                        change.memory_id, change.vector, change.active, self._type_code(change.memory_type)
                    )
                    self._where[change.memory_id] = change.cube_id
