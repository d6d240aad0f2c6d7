"""Scheduler configs at MemOS's import path (``memos.configs.mem_scheduler``).

Field names and defaults follow MemOS ``src/memos/configs/mem_scheduler.py`` and
``mem_scheduler/schemas/general_schemas.py`` (MemTensor/MemOS 3932d72d and 0f5547e7: thread pool 30,
consume interval 0.05 s; context window 10 from the wustzdy/MemOS fork, 1462b7a9). MemOS adds
tuning keys often (Redis/RabbitMQ queues, monitors): unknown keys are accepted and logged, never used.
"""

from __future__ import annotations

import logging
from typing import ClassVar, Self

from pydantic import ConfigDict, Field, model_validator

from memos.configs.base import BackendConfigFactory, BaseConfig

__all__ = [
    "DEFAULT_CONSUME_INTERVAL_SECONDS",
    "DEFAULT_THREAD_POOL_MAX_WORKERS",
    "BaseSchedulerConfig",
    "GeneralSchedulerConfig",
    "SchedulerConfigFactory",
]

logger = logging.getLogger(__name__)

DEFAULT_THREAD_POOL_MAX_WORKERS = 30
DEFAULT_CONSUME_INTERVAL_SECONDS = 0.05


class BaseSchedulerConfig(BaseConfig):
    """Options every scheduler takes."""

    model_config = ConfigDict(extra="allow")

    top_k: int = Field(default=10, ge=1, description="Candidates considered in the first retrieval.")
    top_n: int = Field(default=5, ge=1, description="(Deprecated in MemOS) results kept after processing.")
    enable_parallel_dispatch: bool = Field(default=True, description="Run handlers on a worker pool.")
    thread_pool_max_workers: int = Field(
        default=DEFAULT_THREAD_POOL_MAX_WORKERS, ge=1, le=256, description="Pool size."
    )
    consume_interval_seconds: float = Field(
        default=DEFAULT_CONSUME_INTERVAL_SECONDS,
        gt=0,
        le=60,
        description="Pause between queue polls, in seconds.",
    )
    auth_config_path: str | None = Field(
        default=None, description="(Compatibility) MemOS credentials file; unused."
    )

    @model_validator(mode="after")
    def _log_unused_keys(self) -> Self:
        if self.model_extra:
            logger.info("scheduler_config_keys_unused keys=%r", sorted(self.model_extra))
        return self


class GeneralSchedulerConfig(BaseSchedulerConfig):
    """MemOS ``general_scheduler``."""

    act_mem_update_interval: int | None = Field(
        default=300, ge=1, description="Seconds between activation updates."
    )
    context_window_size: int | None = Field(
        default=10, ge=1, description="Conversation turns kept as context."
    )
    act_mem_dump_path: str | None = Field(
        default=None, description="Where to dump activation memory; None: the cube."
    )
    enable_act_memory_update: bool = Field(
        default=False, description="Refresh activation memory automatically."
    )


class SchedulerConfigFactory(BackendConfigFactory):
    """``{"backend": "general_scheduler", "config": {...}}``."""

    backend_to_class: ClassVar[dict[str, type[BaseConfig]]] = {
        "general_scheduler": GeneralSchedulerConfig,
        "optimized_scheduler": GeneralSchedulerConfig,
    }
