"""MemCubes (MemOS ``memos.mem_cube``): ``general.GeneralMemCube``."""

from __future__ import annotations

import logging

from memos.mem_cube.general import GeneralMemCube

__all__ = ["GeneralMemCube"]

logger = logging.getLogger(__name__)
