"""Shared base of every MemOS-compatible config: strict keys, YAML/JSON files, backend factories."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, ClassVar, Self, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_core.core_schema import ErrorType

from schemas.errors import ConfigError

__all__ = [
    "BackendConfigFactory",
    "BaseConfig",
    "ConfigFileNotFound",
    "read_yaml_mapping",
]

logger = logging.getLogger(__name__)

_NOT_SET = "NOT_SET"


class ConfigFileNotFound(ConfigError, FileNotFoundError):
    """A config file does not exist; also a FileNotFoundError, as MemOS raises."""


def _open_text(path: str | os.PathLike[str]) -> str:
    file = Path(path)
    if not file.is_file():
        raise ConfigFileNotFound(
            f"config file not found: {str(path)!r} (resolved to {str(file.absolute())!r})"
        )
    return file.read_text(encoding="utf-8")


def read_yaml_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping.

    Raises ConfigFileNotFound when the file is missing, ConfigError when it is not valid YAML or its top
    level is not a mapping (an empty file reads as an empty mapping).
    """
    text = _open_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping at the top level, got {type(data).__name__}"
        )
    return data


class BaseConfig(BaseModel):
    """Base of all configs (MemOS ``memos.configs.base.BaseConfig``).

    Unknown keys are errors (``extra="forbid"``, as in MemOS) unless a subclass opts into
    ``extra="allow"``. ``model_schema`` is set to the dotted class path after validation and is left out
    of dumps (MemCube configs include it so a dumped cube can be checked on load).
    """

    model_config = ConfigDict(extra="forbid")

    model_schema: str = Field(
        default=_NOT_SET,
        description="Dotted path of the config class; set automatically.",
        exclude=True,
    )

    @model_validator(mode="after")
    def _set_model_schema(self) -> Self:
        dotted = f"{type(self).__module__}.{type(self).__name__}"
        if self.model_schema not in (_NOT_SET, dotted):
            logger.warning("config_schema_mismatch given=%r expected=%r", self.model_schema, dotted)
        # object.__setattr__ avoids re-running validate_assignment on subclasses that enable it.
        object.__setattr__(self, "model_schema", dotted)
        return self

    @classmethod
    def from_json_file(cls, json_path: str | os.PathLike[str]) -> Self:
        """Load and validate a config from a JSON file."""
        text = _open_text(json_path)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config file {str(json_path)!r} is not valid JSON: {exc}") from exc
        return cls.model_validate(data)

    @classmethod
    def from_yaml_file(cls, yaml_path: str | os.PathLike[str]) -> Self:
        """Load and validate a config from a YAML file."""
        return cls.model_validate(read_yaml_mapping(yaml_path))

    def to_json(self, *, indent: int | None = 2) -> str:
        """Serialise to a JSON string (secrets and excluded fields follow ``model_dump`` rules)."""
        return self.model_dump_json(indent=indent, warnings="none")

    def to_json_file(self, json_path: str | os.PathLike[str]) -> None:
        """Write the config to a JSON file, creating parent folders."""
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(), encoding="utf-8")

    def to_yaml_file(self, yaml_path: str | os.PathLike[str]) -> None:
        """Write the config to a YAML file, creating parent folders."""
        path = Path(yaml_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.model_dump(mode="json", warnings="none")
        path.write_text(
            yaml.safe_dump(data, default_flow_style=False, allow_unicode=True, indent=2, sort_keys=False),
            encoding="utf-8",
        )

    def get(self, key: str, default: Any = None) -> Any:
        """Dict-style access kept from MemOS: the attribute ``key`` or ``default``."""
        return getattr(self, key, default)


_KNOWN_ERROR_TYPES = frozenset(get_args(ErrorType))


def _prefixed(exc: ValidationError, prefix: tuple[str | int, ...]) -> list[InitErrorDetails]:
    details: list[InitErrorDetails] = []
    for err in exc.errors(include_url=False):
        loc = (*prefix, *err["loc"])
        if err["type"] in _KNOWN_ERROR_TYPES:
            detail: InitErrorDetails = {"type": err["type"], "loc": loc, "input": err["input"]}
            if "ctx" in err:
                detail["ctx"] = err["ctx"]
        else:  # a custom error type: keep its rendered message
            custom = PydanticCustomError(err["type"], err["msg"])
            detail = {"type": custom, "loc": loc, "input": err["input"]}
        details.append(detail)
    return details


class BackendConfigFactory(BaseConfig):
    """``{backend, config}`` pair whose ``config`` is validated by the class the backend names.

    Subclasses fill ``backend_to_class``. ``config`` may be given as a mapping or as an instance of the
    backend's config class; errors inside it are reported under ``config.<field>``.
    """

    backend: str = Field(..., description="Name of the backend.")
    config: SerializeAsAny[BaseConfig] = Field(..., description="Configuration of that backend.")

    backend_to_class: ClassVar[dict[str, type[BaseConfig]]] = {}

    @model_validator(mode="before")
    @classmethod
    def _build_backend_config(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        backend = data.get("backend")
        if backend is None:
            return data  # the missing field is reported by normal validation
        config_class = cls.backend_to_class.get(backend)
        if config_class is None:
            error = PydanticCustomError(
                "unknown_backend",
                "unknown {factory} backend {backend}; expected one of {known}",
                {
                    "factory": cls.__name__,
                    "backend": repr(backend),
                    "known": repr(sorted(cls.backend_to_class)),
                },
            )
            raise ValidationError.from_exception_data(
                cls.__name__, [{"type": error, "loc": ("backend",), "input": backend}]
            )
        raw = data.get("config", {})
        if raw is None:
            raw = {}
        if isinstance(raw, config_class):
            return data
        if isinstance(raw, BaseModel):
            raw = raw.model_dump()
        try:
            built = config_class.model_validate(raw)
        except ValidationError as exc:
            raise ValidationError.from_exception_data(exc.title, _prefixed(exc, ("config",))) from None
        return {**data, "config": built}
