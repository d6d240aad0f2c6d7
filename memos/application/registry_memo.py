"""Access decisions remembered per registry version: a registry change forgets every one of them."""

from __future__ import annotations

import logging
from collections.abc import Hashable

__all__ = ["MISSING", "RegistryMemo"]

logger = logging.getLogger(__name__)

MISSING: object = object()
"""What ``RegistryMemo.get`` answers when it holds nothing valid for a key."""


class RegistryMemo:
    """Answers of control-store reads (access, user and cube existence, key state), valid for one version.

    The version is the control projection's registry counter (``Platform.registry_version``), bumped after
    every registry batch it applies. An answer read while the version changed is not kept (the read may
    have seen the old registry), and the first lookup at a new version drops everything, so a revoked key
    or withdrawn share is refused as soon as the control projection has applied it.
    """

    def __init__(self, *, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        self._version: int | None = None
        self._values: dict[Hashable, object] = {}

    def get(self, version: int, key: Hashable) -> object:
        """The answer kept for ``key`` at this version, or ``MISSING``."""
        if version != self._version:
            self._values.clear()
            self._version = version
            return MISSING
        return self._values.get(key, MISSING)

    def put(self, version_before: int, version_after: int, key: Hashable, value: object) -> None:
        """Keep an answer read between two version readings; dropped when the registry changed meanwhile."""
        if version_before != version_after or version_after != self._version:
            return
        if len(self._values) >= self.max_entries:
            self._values.clear()
        self._values[key] = value

    def __len__(self) -> int:
        return len(self._values)
