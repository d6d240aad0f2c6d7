"""MemCube configs (MemOS ``memos.configs.mem_cube``): which memories a cube has and how they are built.

Field names, defaults and allowed backends follow MemOS ``src/memos/configs/mem_cube.py`` (main, late
2025). Differences: ``cube_id`` gets a fresh uuid per config (MemOS computed one at import time and
shared it), and a wrong backend is a validation error located at the memory field.
"""

from __future__ import annotations

import logging
import uuid

from pydantic import Field, ValidationInfo, field_validator

import memos.configs.textual_memory  # noqa: F401  (registers the plaintext/preference memory backends)
from memos.configs.base import BaseConfig
from memos.configs.memory import MemoryConfigFactory

__all__ = ["BaseMemCubeConfig", "GeneralMemCubeConfig"]

logger = logging.getLogger(__name__)

_ALLOWED = {
    "text_mem": ("naive_text", "general_text", "tree_text", "uninitialized"),
    "act_mem": ("kv_cache", "vllm_kv_cache", "uninitialized"),
    "para_mem": ("lora", "uninitialized"),
    "pref_mem": ("pref_text", "uninitialized"),
}


def _uninitialized() -> MemoryConfigFactory:
    return MemoryConfigFactory.model_validate({"backend": "uninitialized", "config": {}})


class BaseMemCubeConfig(BaseConfig):
    """Options every MemCube takes; ``model_schema`` is dumped so a cube folder can be checked on load."""

    model_schema: str = Field(
        default="NOT_SET", description="Dotted path of the config class; set automatically."
    )
    config_filename: str = Field(default="config.json", description="File the cube's config is dumped to.")


class GeneralMemCubeConfig(BaseMemCubeConfig):
    """A cube with plaintext, activation, parametric and preference memory slots."""

    user_id: str = Field(default="default_user", min_length=1, description="Owner of the cube.")
    cube_id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=1, description="Cube id.")
    text_mem: MemoryConfigFactory = Field(default_factory=_uninitialized, description="Plaintext memory.")
    act_mem: MemoryConfigFactory = Field(default_factory=_uninitialized, description="Activation memory.")
    para_mem: MemoryConfigFactory = Field(default_factory=_uninitialized, description="Parametric memory.")
    pref_mem: MemoryConfigFactory = Field(default_factory=_uninitialized, description="Preference memory.")

    @field_validator("text_mem", "act_mem", "para_mem", "pref_mem")
    @classmethod
    def _backend_fits_the_slot(cls, value: MemoryConfigFactory, info: ValidationInfo) -> MemoryConfigFactory:
        slot = info.field_name or ""
        allowed = _ALLOWED[slot]
        if value.backend not in allowed:
            raise ValueError(f"{slot} backend must be one of {allowed!r}, got {value.backend!r}")
        return value
