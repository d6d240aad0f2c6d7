"""The in-memory search structure of one cube: a normalized float32 matrix plus an optional HNSW index."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np
import numpy.typing as npt

__all__ = ["CubeVectors", "Hnsw", "IndexBuild", "SavedIndex", "stacked"]

logger = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
Rows = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Hnsw:
    """HNSW parameters (hnswlib, inner product over normalized vectors = cosine)."""

    m: int = 16
    ef_construction: int = 64
    ef_search: int = 256
    ef_reference: int = 100_000
    """Index size at which ``ef_search`` applies; larger indexes search with ef x sqrt(size / this).

    Measured on bench.search's structured vectors (M 16, ef_construction 64): at 100k, ef 256 gives
    recall@10 0.95; at 1M it gives 0.74, ef 768 gives 0.94 (9.4 ms per query on one core)."""
    threads: int = -1
    seed: int = 100
    chunk: int = 10_000
    """Vectors per ``add_items`` call of a build (progress is logged between chunks)."""


def _normalized(vectors: F32) -> F32:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    norms[norms == 0] = 1.0
    normalized: F32 = (vectors / norms).astype(np.float32, copy=False)
    return normalized


def stacked(vectors: list[F32]) -> F32:
    """``np.stack(vectors)`` of float32 vectors, joined as bytes: several times faster for thousands of rows."""
    dim = len(vectors[0])
    if any(len(v) != dim for v in vectors):
        return np.stack(vectors)  # raises, as np.stack does
    return np.frombuffer(b"".join(vectors), dtype=np.float32).reshape(len(vectors), dim)  # type: ignore[arg-type]


def _cosines(matrix: F32, q: F32) -> F32:
    """Each row's dot product with ``q``, the same whatever the row's place in ``matrix``: BLAS's
    matrix-vector product takes a matrix's last rows through another kernel, so a row's score moved in its
    last bit with the cube's size or layout, and a replayed cube (its rows laid out afresh) could rank ties
    differently from the live one. numpy's einsum sums each row alike, as fast at 5k and 100k rows."""
    scores: F32 = np.einsum("ij,j->i", matrix, q)
    return scores


def _top(rows: Rows, scores: F32, k: int) -> tuple[Rows, F32]:
    """The k best (rows, scores), plus any rows tied with the k-th score (the caller breaks ties by id)."""
    if len(rows) > k:
        part = np.argpartition(-scores, k - 1)[:k]
        keep = scores >= scores[part].min()
        return rows[keep], scores[keep]
    return rows, scores


@dataclass(frozen=True, slots=True)
class IndexBuild:
    """Rows (and a copy of their vectors) to build a fresh HNSW index from, outside any lock."""

    generation: int
    upto: int
    rows: Rows
    vectors: F32
    dim: int
    hnsw: Hnsw

    def build(self) -> hnswlib.Index:
        """The new index (labels = rows); seconds to minutes for large cubes."""
        started = time.perf_counter()
        capacity = self.upto + 1024
        index = hnswlib.Index(space="ip", dim=self.dim)
        index.init_index(max_elements=capacity + capacity // 4, ef_construction=self.hnsw.ef_construction,
                         M=self.hnsw.m, random_seed=self.hnsw.seed)  # fmt: skip
        for lo in range(0, len(self.rows), self.hnsw.chunk):
            hi = min(len(self.rows), lo + self.hnsw.chunk)
            index.add_items(self.vectors[lo:hi], self.rows[lo:hi], num_threads=self.hnsw.threads)
            logger.debug(
                "indexing vectors=%d/%d seconds=%.1f", hi, len(self.rows), time.perf_counter() - started
            )
        logger.info("built index vectors=%d seconds=%.2f", len(self.rows), time.perf_counter() - started)
        return index


class CubeVectors:
    """Rows of one cube: append-only with tombstones, compacted when half the rows are dead.

    Row numbers are the HNSW labels. The index covers the live rows below ``indexed_rows``; rows above
    it are searched exactly until ``catch_up`` or a fresh ``IndexBuild`` covers them. Not thread-safe: the owner holds a lock.
    """

    def __init__(self, dim: int, *, hnsw: Hnsw) -> None:
        self.dim = dim
        self.hnsw = hnsw
        self.n = 0
        self.live = 0
        self.ids: list[str] = []
        self.row_of: dict[str, int] = {}
        self._matrix: F32 = np.zeros((0, dim), dtype=np.float32)
        self._alive = np.zeros(0, dtype=bool)
        self._active = np.zeros(0, dtype=bool)
        self._types = np.zeros(0, dtype=np.int32)
        self._in_index = np.zeros(0, dtype=bool)
        self._index: hnswlib.Index | None = None
        self.indexed_rows = 0
        self.indexed = 0
        self.generation = 0
        """Bumped whenever rows are renumbered, which voids an index built from an older plan."""
        self.building = False
        """Set while an ``IndexBuild`` for this cube runs outside the lock."""

    @property
    def pending(self) -> int:
        """Live vectors not in the ANN index."""
        return self.live - self.indexed

    def _reserve(self, extra: int) -> None:
        need = self.n + extra
        cap = len(self._alive)
        if need <= cap:
            return
        cap = max(need, cap * 2, 64)
        matrix = np.zeros((cap, self.dim), dtype=np.float32)
        matrix[: self.n] = self._matrix[: self.n]
        self._matrix = matrix
        for name in ("_alive", "_active", "_types", "_in_index"):
            old = getattr(self, name)
            new = np.zeros(cap, dtype=old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)

    def append(
        self, ids: Sequence[str], vectors: F32, active: npt.NDArray[np.bool_], types: npt.NDArray[np.int32]
    ) -> None:
        """Add vectors (raw; normalized here) for these ids; an id already present loses its old row."""
        count = len(ids)
        if count == 0:
            return
        self._reserve(count)
        start = self.n
        self._matrix[start : start + count] = _normalized(vectors)
        self._alive[start : start + count] = True
        self._active[start : start + count] = active
        self._types[start : start + count] = types
        self._in_index[start : start + count] = False
        self.n += count
        self.live += count
        self.ids.extend(ids)
        for offset, memory_id in enumerate(ids):
            old = self.row_of.get(memory_id)
            if old is not None:
                self._kill(old)
            self.row_of[memory_id] = start + offset
        self._maybe_compact()

    def put(self, memory_id: str, vector: F32, active: bool, type_code: int) -> None:
        """Set one memory's vector, status and type; an unchanged vector keeps its row (and index entry)."""
        row = self.row_of.get(memory_id)
        if row is not None and np.array_equal(self._matrix[row], _normalized(vector)):
            self._active[row] = active
            self._types[row] = type_code
            return
        self.append(
            [memory_id], vector.reshape(1, -1), np.array([active]), np.array([type_code], dtype=np.int32)
        )

    def put_many(
        self, ids: Sequence[str], vectors: F32, active: npt.NDArray[np.bool_], types: npt.NDArray[np.int32]
    ) -> None:
        """``put`` of each, in order, with the vectors normalized and the changed ones appended in bulk."""
        if len(set(ids)) != len(ids):  # a later put of an id must see the earlier one's row
            for i, memory_id in enumerate(ids):
                self.put(memory_id, vectors[i], bool(active[i]), int(types[i]))
            return
        normalized = _normalized(vectors)
        changed = []
        for i, memory_id in enumerate(ids):
            row = self.row_of.get(memory_id)
            if row is not None and np.array_equal(self._matrix[row], normalized[i]):
                self._active[row] = active[i]
                self._types[row] = types[i]
            else:
                changed.append(i)
        if changed:
            self.append([ids[i] for i in changed], vectors[changed], active[changed], types[changed])

    def set_active(self, memory_id: str, active: bool) -> None:
        """Mark a memory activated (True) or retired (False)."""
        row = self.row_of.get(memory_id)
        if row is not None:
            self._active[row] = active

    def remove(self, memory_id: str) -> None:
        """Forget a memory's vector."""
        row = self.row_of.pop(memory_id, None)
        if row is not None:
            self._kill(row)
            self._maybe_compact()

    def _kill(self, row: int) -> None:
        self._alive[row] = False
        self.live -= 1
        if self._in_index[row]:
            assert self._index is not None
            self._index.mark_deleted(row)
            self._in_index[row] = False
            self.indexed -= 1

    def _maybe_compact(self) -> None:
        dead = self.n - self.live
        if dead <= max(1024, self.live):
            return
        rows = np.flatnonzero(self._alive[: self.n])
        self._matrix = self._matrix[rows].copy()
        self._alive = np.ones(len(rows), dtype=bool)
        self._active = self._active[rows].copy()
        self._types = self._types[rows].copy()
        self._in_index = np.zeros(len(rows), dtype=bool)
        self.ids = [self.ids[r] for r in rows]
        self.row_of = {memory_id: i for i, memory_id in enumerate(self.ids)}
        self.n = self.live = len(rows)
        self._index = None
        self.indexed_rows = self.indexed = 0
        self.generation += 1
        logger.debug("compacted cube vectors dead=%d live=%d", dead, self.live)

    @property
    def index(self) -> hnswlib.Index | None:
        """The HNSW index (it may lag behind: see ``pending``)."""
        return self._index

    @property
    def has_index(self) -> bool:
        """Whether an HNSW index exists (it may lag behind: see ``pending``)."""
        return self._index is not None

    def catch_up(self) -> None:
        """Add the live rows not yet indexed to the existing index, in place (caller holds the lock)."""
        if self._index is None:
            build = self.plan()
            self.install(build, build.build())
            return
        started = time.perf_counter()
        need = self.n + 1024
        if self._index.get_max_elements() < need:
            self._index.resize_index(need + need // 4)
        rows = np.flatnonzero(self._alive[self.indexed_rows : self.n]) + self.indexed_rows
        self._index.add_items(self._matrix[rows], rows, num_threads=self.hnsw.threads)
        self._in_index[rows] = True
        self.indexed += len(rows)
        self.indexed_rows = self.n
        logger.info("indexed vectors=%d total=%d seconds=%.2f", len(rows), self.indexed,
                    time.perf_counter() - started)  # fmt: skip

    def adopt(self, index: hnswlib.Index, labels: Sequence[str | None]) -> int:
        """Take over a saved index whose label ``i`` held memory ``labels[i]`` (None: deleted).

        Rows are renumbered so labels are rows again; a label whose memory is gone or whose vector
        differs is tombstoned, and live vectors the index lacks stay pending. Returns the vectors
        reused; 0 (index not taken) when fewer than half the live vectors could be.
        """
        saved = len(labels)
        pairs = [(label, self.row_of.get(m)) for label, m in enumerate(labels) if m is not None]
        found = np.array([(label, row) for label, row in pairs if row is not None], dtype=np.int64)
        if len(found) == 0 or len(found) * 2 < self.live or index.dim != self.dim:
            return 0
        ok = np.zeros(len(found), dtype=bool)
        for lo in range(0, len(found), self.hnsw.chunk):
            part = found[lo : lo + self.hnsw.chunk]
            stored = np.asarray(index.get_items(part[:, 0]), dtype=np.float32)
            ok[lo : lo + len(part)] = (stored == self._matrix[part[:, 1]]).all(axis=1)
        if np.count_nonzero(ok) * 2 < self.live:
            return 0
        for label in found[~ok, 0].tolist():
            index.mark_deleted(label)
        kept = found[ok]
        order = np.full(saved, -1, dtype=np.int64)
        order[kept[:, 0]] = kept[:, 1]
        taken = np.zeros(self.n, dtype=bool)
        taken[kept[:, 1]] = True
        rest = np.flatnonzero(self._alive[: self.n] & ~taken)
        order = np.concatenate([order, rest])
        valid = order >= 0
        src = np.where(valid, order, 0)

        def moved(array: npt.NDArray[Any], fill: Any) -> npt.NDArray[Any]:
            out = array[src].copy()
            out[~valid] = fill
            return out

        self._matrix = moved(self._matrix[: self.n], 0.0)
        self._active = moved(self._active[: self.n], False)
        self._types = moved(self._types[: self.n], 0)
        self._alive = valid.copy()
        self._in_index = np.zeros(len(order), dtype=bool)
        self._in_index[kept[:, 0]] = True
        self.ids = [self.ids[r] if r >= 0 else "" for r in order.tolist()]
        self.row_of = {self.ids[r]: r for r in np.flatnonzero(valid).tolist()}
        self.n = len(order)
        self._index = index
        self.indexed = len(kept)
        self.indexed_rows = saved
        self.generation += 1
        return len(kept)

    def labels(self) -> list[str | None]:
        """Memory id of every label of the index (None: not a live element), for ``SavedIndex.save``."""
        return [self.ids[r] if self._in_index[r] else None for r in range(self.indexed_rows)]

    def plan(self) -> IndexBuild:
        """A copy of the live rows, from which ``IndexBuild.build`` makes a fresh index without the lock."""
        rows = np.flatnonzero(self._alive[: self.n])
        return IndexBuild(self.generation, self.n, rows, self._matrix[rows].copy(), self.dim, self.hnsw)

    def install(self, build: IndexBuild, index: hnswlib.Index) -> bool:
        """Swap in an index built from ``build``; rows removed meanwhile are tombstoned, rows added
        meanwhile stay pending. False (index dropped) if the rows were renumbered since."""
        if build.generation != self.generation:
            return False
        gone = build.rows[~self._alive[build.rows]]
        for row in gone.tolist():
            index.mark_deleted(row)
        kept = build.rows[self._alive[build.rows]]
        self._in_index[:] = False
        self._in_index[kept] = True
        self._index = index
        self.indexed = len(kept)
        self.indexed_rows = build.upto
        return True

    def search(
        self, query: F32, k: int, *, codes: Sequence[int] | None, include_retired: bool, use_index: bool
    ) -> list[tuple[str, float]]:
        """Top k (memory id, cosine) among live rows passing the filters, best first, ties by id."""
        q = _normalized(query)
        n = self.n
        mask = self._alive[:n] if include_retired else self._alive[:n] & self._active[:n]
        if codes is not None:
            mask = mask & np.isin(self._types[:n], codes)
        split = self.indexed_rows if use_index and self._index is not None and self.indexed else 0
        parts: list[tuple[Rows, F32]] = []
        if split:
            parts.append(self._search_index(q, k, mask[:split]))
        tail = np.flatnonzero(mask[split:]) + split
        if len(tail):
            parts.append(_top(tail, _cosines(self._matrix[split:n], q)[tail - split], k))
        if not parts:
            return []
        rows = np.concatenate([p[0] for p in parts])
        scores = np.clip(np.concatenate([p[1] for p in parts]), -1.0, 1.0)
        ranked = sorted(
            zip(rows.tolist(), scores.tolist(), strict=True), key=lambda t: (-t[1], self.ids[t[0]])
        )
        return [(self.ids[row], score) for row, score in ranked[:k]]

    def _search_index(self, q: F32, k: int, allowed: npt.NDArray[np.bool_]) -> tuple[Rows, F32]:
        """Candidates from the index: oversampled by the filter's selectivity, exact when very selective."""
        assert self._index is not None
        n_allowed = int(np.count_nonzero(allowed))
        if n_allowed == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if n_allowed <= k or n_allowed * 20 < self.indexed:
            rows = np.flatnonzero(allowed)
            return _top(rows, _cosines(self._matrix[rows], q), k)
        want = min(self.indexed, max(k, int(k * self.indexed / n_allowed * 1.5) + 10))
        ef = int(self.hnsw.ef_search * max(1.0, (self.indexed / self.hnsw.ef_reference) ** 0.5))
        while True:
            self._index.set_ef(max(ef, want))
            try:
                labels, _ = self._index.knn_query(q, k=want, num_threads=1)
            except RuntimeError:  # fewer reachable elements than asked: answer exactly instead
                rows = np.flatnonzero(allowed)
                return _top(rows, _cosines(self._matrix[rows], q), k)
            found = labels[0].astype(np.int64)
            rows = found[allowed[found]]
            if len(rows) >= k or want >= self.indexed:
                return rows, _cosines(self._matrix[rows], q)
            want = min(self.indexed, want * 4)


class SavedIndex:
    """One cube's HNSW index on disk: ``<stem>.hnsw`` (hnswlib) and the ``<stem>.json`` sidecar.

    The sidecar records the memory id of every label and the checkpoints applied when it was saved;
    ``CubeVectors.adopt`` checks ids and vectors against the loaded rows, so a stale index is topped
    up (or rejected and rebuilt), never trusted blindly.
    """

    def __init__(self, stem: Path) -> None:
        self.index_path = Path(f"{stem}.hnsw")
        self.meta_path = Path(f"{stem}.json")

    def save(self, cube: CubeVectors, index: hnswlib.Index, applied: dict[str, int]) -> None:
        """Write the index and sidecar atomically (each via a temporary file and rename)."""
        started = time.perf_counter()
        self.index_path.parent.mkdir(parents=True, exist_ok=True)
        labels = cube.labels()
        meta = {"format": 1, "dim": cube.dim, "m": cube.hnsw.m, "ef_construction": cube.hnsw.ef_construction,
                "elements": index.element_count, "applied": applied, "labels": labels}  # fmt: skip
        tmp_index, tmp_meta = Path(f"{self.index_path}.tmp"), Path(f"{self.meta_path}.tmp")
        index.save_index(str(tmp_index))
        tmp_meta.write_text(json.dumps(meta, separators=(",", ":")))
        self.meta_path.unlink(missing_ok=True)  # never pair a new index with the old sidecar
        os.replace(tmp_index, self.index_path)
        os.replace(tmp_meta, self.meta_path)
        logger.info("saved index path=%s vectors=%d seconds=%.2f", self.index_path, cube.indexed,
                    time.perf_counter() - started)  # fmt: skip

    def load(self, cube: CubeVectors) -> tuple[hnswlib.Index, list[str | None], dict[str, Any]] | None:
        """The saved index, its labels and sidecar, or None when absent, unreadable or built differently."""
        if not (self.index_path.exists() and self.meta_path.exists()):
            return None
        try:
            meta = json.loads(self.meta_path.read_text())
            labels = meta["labels"]
            if (meta.get("format"), meta.get("dim"), meta.get("m")) != (1, cube.dim, cube.hnsw.m):
                return None
            index = hnswlib.Index(space="ip", dim=cube.dim)
            capacity = max(cube.n, len(labels)) + 1024
            index.load_index(str(self.index_path), max_elements=capacity + capacity // 4)
            if index.element_count != meta.get("elements"):
                return None
        except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring saved index path=%s: %s", self.index_path, exc)
            return None
        return index, labels, meta

    def discard(self) -> None:
        """Remove the files (the cube was dropped)."""
        for path in (self.index_path, self.meta_path):
            path.unlink(missing_ok=True)
