"""Prometheus metrics of the HTTP server: requests and latency per route, processor lag, tasks, model tokens."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from memos.application.operations import PROCESSOR_GROUPS
from memos.application.service import MemoryService
from schemas.errors import MemorySystemError

__all__ = ["CONTENT_TYPE", "PROCESSOR_GROUPS", "Metrics", "MetricsMiddleware"]

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """One registry per app (so several apps can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "memos_http_requests_total",
            "HTTP requests by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "memos_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["method", "route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.lag = Gauge(
            "memos_processor_lag_records",
            "Records not yet committed by a processor (consumer group).",
            ["group", "topic"],
            registry=self.registry,
        )
        self.waited = Gauge(
            "memos_processor_lag_seconds",
            "How long the oldest record a processor (consumer group) has not committed has waited on the log.",
            ["group", "topic"],
            registry=self.registry,
        )
        self.tasks = Gauge(
            "memos_tasks", "Tasks by status (control projection).", ["status"], registry=self.registry
        )
        self.tokens = Counter(
            "memos_model_tokens_total",
            "Model tokens recorded in memory events since this server started.",
            ["model", "kind", "direction"],
            registry=self.registry,
        )
        self._token_task: asyncio.Task[None] | None = None

    # --- scrape ---------------------------------------------------------------------------------------

    async def render(self, service: MemoryService) -> bytes:
        """Refresh the gauges read from the log and the control store, then render the text format."""
        self.lag.clear()
        self.waited.clear()
        for (group, topic), lag in (await service.lag_of(PROCESSOR_GROUPS, ages=True)).items():
            self.lag.labels(group=group, topic=topic).set(lag.records)
            self.waited.labels(group=group, topic=topic).set(lag.waited_s or 0.0)
        self.tasks.clear()
        for status, count in (await service.task_counts()).items():
            self.tasks.labels(status=status).set(count)
        return generate_latest(self.registry)

    # --- model tokens from memory events -------------------------------------------------------------

    def start_token_watch(self, service: MemoryService, *, poll_interval_s: float = 1.0) -> None:
        """Follow the memories topic from now on and count the model usage the events record."""
        if self._token_task is None:
            self._token_task = asyncio.create_task(
                self._watch_tokens(service, poll_interval_s), name="metrics:tokens"
            )

    async def stop(self) -> None:
        """Stop the token watcher. Idempotent."""
        task, self._token_task = self._token_task, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    async def _watch_tokens(self, service: MemoryService, poll_interval_s: float) -> None:
        while True:
            try:
                async for usage in service.model_usage(poll_interval_s=poll_interval_s):
                    self.count_usage(usage)
            except MemorySystemError as exc:
                logger.warning("token metrics watcher restarting error=%r", exc)
                await asyncio.sleep(poll_interval_s)

    def count_usage(self, usage: list[dict[str, Any]]) -> None:
        """Add the tokens of ``ModelUsage`` records (as dicts)."""
        for u in usage:
            for direction in ("prompt", "completion"):
                tokens = u.get(f"{direction}_tokens")
                if tokens:
                    self.tokens.labels(model=u.get("model_id"), kind=u.get("kind"), direction=direction).inc(tokens)


class MetricsMiddleware:
    """Counts requests and observes latency per route template (never per raw path: bounded labels); every
    response says how long the server took to start it (``Server-Timing: app;dur=<ms>``), so a client can
    tell the server's time from its own and the network's."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                took = f"app;dur={(time.perf_counter() - started) * 1000:.1f}".encode()
                message = {**message, "headers": [*message.get("headers", ()), (b"server-timing", took)]}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "GET")
            self.metrics.requests.labels(method=method, route=route, status=str(status)).inc()
            self.metrics.latency.labels(method=method, route=route).observe(time.perf_counter() - started)
