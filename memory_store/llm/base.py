"""The ChatModel port: chat messages in, one completion out (OpenAI-compatible endpoints, local models)."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

__all__ = ["ChatCompletion", "ChatModel"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChatCompletion:
    """The text of one completion with the model that wrote it and what it cost."""

    text: str
    model_id: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0


class ChatModel(ABC):
    """A chat model. ``supports_vision`` says whether messages may carry ``image_url`` parts.

    Adapters built from a URL (see memory_store.llm.chat_model_from_url) implement ``from_url``.
    """

    model_id: str
    supports_vision: bool = False

    @abstractmethod
    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        json_mode: bool = False,
    ) -> ChatCompletion:
        """Complete ``messages`` (OpenAI chat format) with at most ``max_tokens`` new tokens.

        ``json_mode`` asks for a JSON object answer where the engine supports it (a hint: callers still
        parse tolerantly). One call, no retries inside. Raises ModelUnavailable (retryable: the endpoint
        did not answer, timed out, or is overloaded) or ModelError (the request was refused).
        """

    @classmethod
    def from_url(cls, url: str, *, api_key: str | None = None) -> ChatModel:
        """Build the adapter from its URL; adapters chosen by URL scheme override this."""
        raise NotImplementedError(f"{cls.__name__} cannot be built from a URL ({url!r})")

    async def aclose(self) -> None:
        """Release the client or model. Idempotent."""
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
