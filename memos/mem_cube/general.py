"""``GeneralMemCube`` (MemOS ``memos.mem_cube.general``): a cube's memories behind one object.

- ``text_mem``: :class:`CubeTextMemory`, a view over the memory service for this cube (data on the log);
  usable once a MOS registers the cube (the id is known then). Without a ``pref_mem`` section it also
  holds the cube's preference memories (as MemOS's plain text memories do).
- ``act_mem``: a ``KVCacheMemory`` built by ``MemoryFactory`` from the ``act_mem`` section (local model,
  loaded once per process and configuration), or None.
- ``para_mem``: None (parametric memory is not implemented; a ``lora`` section is accepted and ignored).
- ``pref_mem``: the preference view of the cube when the config has a ``pref_text`` section, else None.

A dumped folder holds ``config.json`` (MemOS layout), the export of the cube's memories as JSON lines
(``textual_memory.jsonl``) and the activation memory (safetensors + JSON). Registering a loaded folder
imports its memories into the cube as events, idempotent by memory id.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from memos.client import SyncClient
from memos.configs.mem_cube import GeneralMemCubeConfig
from memos.configs.memory import KVCacheMemoryConfig, MemoryConfigFactory
from memos.memories.factory import MemoryFactory
from memos.memories.textual.cube_memory import CubeTextMemory
from schemas.errors import ConfigError, NotFound, ValidationFailed

__all__ = ["GeneralMemCube"]

logger = logging.getLogger(__name__)

_TYPES = ("text_mem", "act_mem", "para_mem", "pref_mem")


def _activation(section: MemoryConfigFactory) -> Any:
    if section.backend == "uninitialized":
        return None
    if isinstance(section.config, KVCacheMemoryConfig):
        from memos.chat import local_model
        from memos.configs.llm import HFLLMConfig

        llm_config = section.config.extractor_llm.config
        llm = local_model(llm_config) if isinstance(llm_config, HFLLMConfig) else None
        return MemoryFactory.from_config(section, llm=llm)
    return MemoryFactory.from_config(section)


class GeneralMemCube:
    """A MemCube: plaintext, activation, parametric and preference memory (see the module doc)."""

    def __init__(self, config: GeneralMemCubeConfig) -> None:
        self.config = config
        self._cube_id: str | None = None
        text, pref = config.text_mem, config.pref_mem
        self._text_mem: CubeTextMemory | None = (
            CubeTextMemory(text.config, include_preferences=pref.backend == "uninitialized")
            if text.backend != "uninitialized"
            else None
        )
        self._act_mem: Any = _activation(config.act_mem)
        if config.para_mem.backend != "uninitialized":
            logger.warning(
                "cube=%s para_mem backend=%r ignored: parametric memory is not implemented",
                config.cube_id,
                config.para_mem.backend,
            )
        self._para_mem: Any = None
        self._pref_mem: CubeTextMemory | None = (
            CubeTextMemory(pref.config, kind="preference") if pref.backend != "uninitialized" else None
        )

    # --- memories -------------------------------------------------------------------------------------

    @property
    def cube_id(self) -> str:
        """The id the cube is registered under (the config's ``cube_id`` before registration)."""
        return self._cube_id or self.config.cube_id

    @property
    def text_mem(self) -> CubeTextMemory | None:
        """Plaintext memory (a view over the memory service), or None."""
        return self._text_mem

    @text_mem.setter
    def text_mem(self, value: CubeTextMemory | None) -> None:
        self._text_mem = value

    @property
    def act_mem(self) -> Any:
        """Activation memory (``KVCacheMemory``), or None."""
        return self._act_mem

    @act_mem.setter
    def act_mem(self, value: Any) -> None:
        self._act_mem = value

    @property
    def para_mem(self) -> Any:
        """Parametric memory: always None here."""
        return self._para_mem

    @para_mem.setter
    def para_mem(self, value: Any) -> None:
        self._para_mem = value

    @property
    def pref_mem(self) -> CubeTextMemory | None:
        """Preference memory (a view over the memory service), or None."""
        return self._pref_mem

    @pref_mem.setter
    def pref_mem(self, value: CubeTextMemory | None) -> None:
        self._pref_mem = value

    def bind(self, cube_id: str, user_id: str, client: SyncClient) -> list[str]:
        """Attach to a registered cube id acting as ``user_id`` (called by ``MOS.register_mem_cube``).

        Memories waiting from a loaded dump are imported; returns the ids added.
        """
        self._cube_id = cube_id
        added: list[str] = []
        for view in (self._text_mem, self._pref_mem):
            if view is not None:
                added += view.bind(cube_id, user_id, client)
        if self._act_mem is not None and hasattr(self._act_mem, "config"):
            self._act_mem.config.cube_id = cube_id
        return added

    # --- dump and load --------------------------------------------------------------------------------

    def _selected(self, memory_types: list[str] | None) -> tuple[str, ...]:
        chosen = tuple(memory_types) if memory_types else _TYPES
        unknown = [t for t in chosen if t not in _TYPES]
        if unknown:
            raise ValidationFailed(
                f"unknown memory types {unknown!r}; expected some of {_TYPES!r}", field="memory_types"
            )
        return chosen

    def dump(self, dir: str, memory_types: list[str] | None = None) -> None:  # noqa: A002 - MemOS name
        """Write ``config.json``, the memories export and the activation memory to ``dir`` (must be empty).

        Raises ValidationFailed when ``dir`` exists and is not empty (as MemOS does).
        """
        folder = Path(dir)
        if folder.exists() and any(folder.iterdir()):
            raise ValidationFailed(
                f"directory {dir!r} is not empty; dump a MemCube into an empty directory", field="dir"
            )
        folder.mkdir(parents=True, exist_ok=True)
        self.config.model_copy(update={"cube_id": self.cube_id}).to_json_file(
            folder / self.config.config_filename
        )
        chosen = self._selected(memory_types)
        if "text_mem" in chosen and self._text_mem is not None:
            self._text_mem.dump(dir)
        if "pref_mem" in chosen and self._pref_mem is not None:
            self._pref_mem.dump(dir)
        if "act_mem" in chosen and self._act_mem is not None:
            self._act_mem.dump(dir)
        logger.info("mem_cube_dumped cube=%s dir=%s", self.cube_id, dir)

    def load(self, dir: str, memory_types: list[str] | None = None) -> None:  # noqa: A002 - MemOS name
        """Read memories dumped in ``dir``: text and preference memories are imported when the cube is
        registered (now, if it already is); activation memory is replaced by the dumped caches.

        Raises NotFound when ``dir`` is not a directory.
        """
        if not Path(dir).is_dir():
            raise NotFound(f"MemCube directory {dir!r} does not exist", field="dir")
        chosen = self._selected(memory_types)
        if "text_mem" in chosen and self._text_mem is not None:
            self._text_mem.load(dir)
        if "pref_mem" in chosen and self._pref_mem is not None:
            self._pref_mem.load(dir)
        if "act_mem" in chosen and self._act_mem is not None:
            self._act_mem.load(dir)
        logger.info("mem_cube_loaded cube=%s dir=%s", self.cube_id, dir)

    @classmethod
    def init_from_dir(
        cls,
        dir: str,
        memory_types: list[str] | None = None,  # noqa: A002 - MemOS name
        default_config: GeneralMemCubeConfig | None = None,
    ) -> GeneralMemCube:
        """A cube from a dumped folder: its ``config.json`` (or ``default_config``), then ``load``."""
        config_path = Path(dir) / "config.json"
        if config_path.is_file():
            config = GeneralMemCubeConfig.from_json_file(config_path)
        elif default_config is not None:
            config = default_config
        else:
            raise NotFound(f"MemCube directory {dir!r} has no config.json", field="mem_cube_name_or_path")
        cube = cls(config)
        cube.load(dir, memory_types)
        return cube

    @classmethod
    def init_from_remote_repo(cls, cube_path: str, **_: Any) -> GeneralMemCube:
        """Not available: cubes are not downloaded (no network); dump one and register the folder."""
        raise ConfigError(
            f"cannot fetch MemCube {cube_path!r} from a remote repository; register a local folder"
        )

    def __repr__(self) -> str:
        return f"<GeneralMemCube:{self.cube_id}>"
