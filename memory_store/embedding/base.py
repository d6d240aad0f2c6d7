"""The Embedder port: texts in, one vector per text out, batched inside the adapter."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

__all__ = ["EmbedKind", "Embedder", "Embeddings"]

logger = logging.getLogger(__name__)

EmbedKind = Literal["query", "passage"]


@dataclass(frozen=True, slots=True)
class Embeddings:
    """Vectors of one ``embed`` call, in input order, with the model and the call's cost."""

    vectors: list[list[float]]
    model_id: str
    dimension: int
    latency_ms: float = 0.0
    tokens: int = 0


class Embedder(ABC):
    """Turns texts into vectors. Adapters batch internally (``batch_size`` texts per model step).

    ``dimension`` is the vector length; 0 until known for remote endpoints that do not declare it
    (it is set by the first call). ``kind`` selects query or passage encoding for models that
    distinguish them (e5 prefixes "query: " / "passage: "); others ignore it.
    """

    model_id: str
    dimension: int
    batch_size: int = 64

    @abstractmethod
    async def embed(self, texts: Sequence[str], *, kind: EmbedKind = "passage") -> Embeddings:
        """Embed ``texts`` (any number; empty gives no vectors) in one logical call.

        Returns one vector per text in order, all of ``dimension`` floats. Texts longer than the model
        reads are truncated, not rejected. Raises ModelUnavailable (retryable: the engine or endpoint
        did not answer), ModelOutputInvalid (wrong count or shape) or ModelError.
        """

    async def aclose(self) -> None:
        """Release the model or client. Idempotent."""
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
