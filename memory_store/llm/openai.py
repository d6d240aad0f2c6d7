"""OpenAIChatModel: any OpenAI-compatible /v1/chat/completions endpoint, through the ``openai`` package."""

from __future__ import annotations

import logging
import os
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import openai

from memory_store.llm.base import ChatCompletion, ChatModel
from schemas.errors import ConfigError, ModelError, ModelOutputInvalid, ModelUnavailable

__all__ = ["OpenAIChatModel", "OpenAIEndpoint", "map_openai_errors", "openai_client", "parse_openai_url"]

logger = logging.getLogger(__name__)

_SCHEMES = {"openai+http": "http", "openai+https": "https", "openai": "https"}


@dataclass(frozen=True, slots=True)
class OpenAIEndpoint:
    """An OpenAI-compatible endpoint parsed from ``openai+http://host:port/v1?model=NAME&...``."""

    base_url: str
    model: str
    options: dict[str, str] = field(default_factory=dict)

    def flag(self, name: str, default: bool = False) -> bool:
        """A boolean URL option (1/true/yes)."""
        value = self.options.get(name)
        return default if value is None else value.lower() in ("1", "true", "yes", "on")


def parse_openai_url(url: str) -> OpenAIEndpoint:
    """Parse an ``openai://``, ``openai+http://`` or ``openai+https://`` URL. Raises ConfigError.

    ``openai://`` means https. Query options other than ``model`` are kept (api_key_env, timeout, ...).
    """
    parts = urllib.parse.urlsplit(url)
    scheme = _SCHEMES.get(parts.scheme)
    if scheme is None:
        raise ConfigError(
            f"not an OpenAI-compatible URL: {url!r} (use openai+http://host:port/v1?model=NAME)"
        )
    if not parts.netloc:
        raise ConfigError(f"OpenAI-compatible URL {url!r} has no host")
    options = dict(urllib.parse.parse_qsl(parts.query))
    model = options.pop("model", "")
    if not model:
        raise ConfigError(f"OpenAI-compatible URL {url!r} names no model (add ?model=NAME)")
    base = urllib.parse.urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") or "/v1", "", ""))
    return OpenAIEndpoint(base, model, options)


def openai_client(endpoint: OpenAIEndpoint, *, api_key: str | None, timeout: float) -> openai.AsyncOpenAI:
    """An AsyncOpenAI client without its own retries (callers retry); the key comes from ``api_key`` or the
    environment variable named by the URL's ``api_key_env`` option (default OPENAI_API_KEY)."""
    env_name = endpoint.options.get("api_key_env", "OPENAI_API_KEY")
    key = api_key or os.environ.get(env_name) or "not-needed"
    return openai.AsyncOpenAI(base_url=endpoint.base_url, api_key=key, timeout=timeout, max_retries=0)


@contextmanager
def map_openai_errors(what: str) -> Iterator[None]:
    """Translate ``openai`` exceptions into the project's error tree (retryable ones as ModelUnavailable)."""
    try:
        yield
    except openai.APITimeoutError as exc:
        raise ModelUnavailable(f"{what}: timed out") from exc
    except openai.APIConnectionError as exc:
        raise ModelUnavailable(f"{what}: cannot connect: {exc}") from exc
    except openai.APIStatusError as exc:
        message = f"{what}: HTTP {exc.status_code}: {str(exc.message)[:300]}"
        if exc.status_code in (408, 409, 429) or exc.status_code >= 500:
            raise ModelUnavailable(message) from exc
        raise ModelError(message) from exc
    except openai.APIResponseValidationError as exc:
        raise ModelOutputInvalid(f"{what}: malformed response: {exc}") from exc
    except openai.OpenAIError as exc:
        raise ModelError(f"{what}: {exc}") from exc


class OpenAIChatModel(ChatModel):
    """Chat completions from an OpenAI-compatible server (OpenAI, vLLM, llama.cpp, Ollama, ...).

    ``json_mode`` sends ``response_format={"type": "json_object"}``; a server that refuses it with a
    400 is asked again without it, and not asked with it again.
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        supports_vision: bool = False,
    ) -> None:
        endpoint = OpenAIEndpoint(base_url, model, {"api_key_env": api_key_env})
        self._client = openai_client(endpoint, api_key=api_key, timeout=timeout)
        self.model = model
        self.model_id = model
        self.supports_vision = supports_vision
        self._json_mode_ok = True

    @classmethod
    def from_url(cls, url: str, *, api_key: str | None = None) -> OpenAIChatModel:
        """``openai+http://host:port/v1?model=NAME[&vision=1][&timeout=60][&api_key_env=VAR]``."""
        endpoint = parse_openai_url(url)
        try:
            timeout = float(endpoint.options.get("timeout", 60.0))
        except ValueError as exc:
            raise ConfigError(f"invalid timeout in {url!r}") from exc
        return cls(
            base_url=endpoint.base_url,
            model=endpoint.model,
            api_key=api_key,
            api_key_env=endpoint.options.get("api_key_env", "OPENAI_API_KEY"),
            timeout=timeout,
            supports_vision=endpoint.flag("vision"),
        )

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        json_mode: bool = False,
    ) -> ChatCompletion:
        kwargs: dict[str, Any] = {"model": self.model, "messages": [dict(m) for m in messages]}
        kwargs.update(max_tokens=max_tokens, temperature=temperature)
        if json_mode and self._json_mode_ok:
            kwargs["response_format"] = {"type": "json_object"}
        start = time.perf_counter()
        with map_openai_errors(f"chat model {self.model!r}"):
            try:
                response = await self._client.chat.completions.create(**kwargs)
            except openai.BadRequestError:
                if "response_format" not in kwargs:
                    raise
                logger.info("model=%s json_mode=refused retrying=without", self.model)
                self._json_mode_ok = False
                kwargs.pop("response_format")
                response = await self._client.chat.completions.create(**kwargs)
        latency = (time.perf_counter() - start) * 1000
        if not response.choices:
            raise ModelOutputInvalid(f"chat model {self.model!r} answered with no choices")
        text = response.choices[0].message.content or ""
        usage = response.usage
        return ChatCompletion(
            text=text,
            model_id=response.model or self.model_id,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            latency_ms=latency,
        )

    async def aclose(self) -> None:
        await self._client.close()
