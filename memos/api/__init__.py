"""MemOS-compatible API: request/response models (``product_models``) and, in ``routers``, the handlers."""

from __future__ import annotations

import logging

__all__: list[str] = []

logger = logging.getLogger(__name__)
