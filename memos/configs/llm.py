"""LLM configs at MemOS's import path: one class per backend, chosen by ``LLMConfigFactory.backend``."""

from __future__ import annotations

import logging
from typing import ClassVar

from pydantic import Field

from memos.configs.base import BackendConfigFactory, BaseConfig

__all__ = [
    "BaseLLMConfig",
    "HFLLMConfig",
    "LLMConfigFactory",
    "OllamaLLMConfig",
    "OpenAILLMConfig",
    "VLLMLLMConfig",
]

logger = logging.getLogger(__name__)


class BaseLLMConfig(BaseConfig):
    """Options every LLM backend takes (MemOS defaults)."""

    model_name_or_path: str = Field(
        ..., description="Model name, folder, or tiny://<arch> / bundled://<name>."
    )
    temperature: float = Field(default=0.8, description="Sampling temperature (used when sampling).")
    max_tokens: int = Field(default=1024, gt=0, description="Most new tokens per completion.")
    top_p: float = Field(default=0.9, ge=0.0, le=1.0, description="Nucleus sampling mass.")
    top_k: int = Field(default=50, ge=0, description="Top-k sampling cut (0: off).")
    remove_think_prefix: bool = Field(default=False, description="Drop a leading <think>...</think> block.")


class OpenAILLMConfig(BaseLLMConfig):
    """An OpenAI-compatible endpoint."""

    api_key: str = Field(default="", description="API key (prefer the environment).")
    api_base: str = Field(default="https://api.openai.com/v1", description="Base URL of the endpoint.")
    extra_body: dict[str, object] | None = Field(default=None, description="Extra request fields.")


class OllamaLLMConfig(BaseLLMConfig):
    """An Ollama server."""

    api_base: str = Field(default="http://localhost:11434", description="Base URL of the server.")


class HFLLMConfig(BaseLLMConfig):
    """A local transformers model (loaded offline); device and dtype are chosen automatically."""

    do_sample: bool = Field(default=False, description="Sample; when false decoding is greedy.")
    add_generation_prompt: bool = Field(
        default=True, description="End prompts with the assistant turn opener."
    )
    device: str | None = Field(default=None, description="Override: 'cpu', 'cuda', 'cuda:1' (default: auto).")
    dtype: str | None = Field(
        default=None, description="Override: 'float32', 'bfloat16', ... (default: auto)."
    )


class VLLMLLMConfig(BaseLLMConfig):
    """A vLLM OpenAI-compatible server."""

    api_key: str = Field(default="", description="API key (optional for a local server).")
    api_base: str = Field(default="http://localhost:8088", description="Base URL of the server.")


class LLMConfigFactory(BackendConfigFactory):
    """``{"backend": ..., "config": {...}}`` for an LLM."""

    backend_to_class: ClassVar[dict[str, type[BaseConfig]]] = {
        "openai": OpenAILLMConfig,
        "ollama": OllamaLLMConfig,
        "huggingface": HFLLMConfig,
        "huggingface_singleton": HFLLMConfig,
        "vllm": VLLMLLMConfig,
    }
