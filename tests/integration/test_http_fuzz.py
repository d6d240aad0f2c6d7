"""Fuzz the live server from its own OpenAPI schema (schemathesis + Hypothesis): no input may cause a 5xx.

Positive cases (valid per schema) act as the key's user on a real cube so they reach deep code;
negative cases (invalid per schema) are sent as generated. ``MEMOS_FUZZ_EXAMPLES`` sets the examples
per operation and mode.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from memos.application.service import MemoryService
from memos.server.app import BackgroundServer
from tests.integration.test_http_api import add_fast, client_for, create_cube, live_server, make_user

pytestmark = pytest.mark.timeout(1800)

EXAMPLES = int(os.environ.get("MEMOS_FUZZ_EXAMPLES", "25"))
CUBE_FIELDS = ("readable_cube_ids", "writable_cube_ids")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    home = tmp_path_factory.mktemp("http_fuzz")
    with live_server(home, chat=_echo_chat, max_body_bytes=256 * 1024) as running:
        yield running


async def _echo_chat(service: MemoryService, user_id: str, request: Any) -> AsyncIterator[str]:
    """A chat stand-in (no model here): answers with the best memory, so the chat routes run fully."""
    found = await service.search(user_id, request.readable_cube_ids or [user_id], request.query, top_k=1)
    for bucket in found.get("text_mem", []):
        for memory in bucket["memories"][:1]:
            yield memory["memory"]
    yield "."


def _steer(case: Any, mode: GenerationMode, user: str, memory_id: str) -> None:
    """Point valid cases at the key's user and a real cube; keep waits and feeds short."""
    if case.path.endswith("/wait") and not isinstance(case.query, dict):
        case.query = {}
    query = case.query if isinstance(case.query, dict) else None
    if query is not None:
        timeout = query.get("timeout_seconds", 120.0)
        if case.path.endswith("/wait") and isinstance(timeout, int | float) and 0 < timeout <= 300:
            query["timeout_seconds"] = 0.3
        if "follow" in query or case.path == "/v1/feed":
            query["follow"] = "false"
    if mode is not GenerationMode.POSITIVE:
        return
    if query is not None:
        for name in ("user_id", "user_name"):
            if name in query:
                query[name] = user
        if "mem_cube_id" in query:
            query["mem_cube_id"] = "fuzz_cube"
        if "cube" in query:
            query["cube"] = ["fuzz_cube"]
    if isinstance(case.path_parameters, dict):
        if "cube_id" in case.path_parameters:
            case.path_parameters["cube_id"] = "fuzz_cube"
        if "memory_id" in case.path_parameters:
            case.path_parameters["memory_id"] = memory_id
    if isinstance(case.body, dict):
        if "user_id" in case.body:
            case.body["user_id"] = user
        for name in CUBE_FIELDS:
            if isinstance(case.body.get(name), list) and case.body[name]:
                case.body[name] = ["fuzz_cube"]
        if "mem_cube_id" in case.body:
            case.body["mem_cube_id"] = "fuzz_cube"


def _fuzz(
    operation: Any,
    mode: GenerationMode,
    url: str,
    headers: dict[str, str],
    user: str,
    memory_id: str,
    counts: dict[str, int],
    failures: list[str],
) -> None:
    """Send EXAMPLES generated cases of one operation; record transport failures and 5xx answers."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        _steer(case, mode, user, memory_id)
        if os.environ.get("MEMOS_FUZZ_TRACE"):
            with open(os.environ["MEMOS_FUZZ_TRACE"], "a") as trace:
                trace.write(
                    f"{time.time():.1f} {mode.value} {case.method} {case.formatted_path} "
                    f"q={case.query} b={str(case.body)[:500]}\n"
                )
        try:
            response = case.call(base_url=url, headers=headers, timeout=60)
        except Exception as exc:  # noqa: BLE001 - a transport failure is a finding, not a crash
            failures.append(f"{case.method} {case.path}: {type(exc).__name__}: {exc}")
            return
        counts[mode.value] = counts.get(mode.value, 0) + 1
        name = f"{case.method} {case.path}"
        counts[name] = counts.get(name, 0) + 1
        if response.status_code >= 500:
            failures.append(
                f"{case.method} {case.formatted_path} -> {response.status_code}: "
                f"{response.text[:300]} body={str(case.body)[:300]} query={case.query}"
            )

    try:
        run()
    except Unsatisfiable:  # e.g. no invalid input exists for an operation without parameters
        counts[f"unsatisfiable:{mode.value}:{operation.method.upper()} {operation.path}"] = 0


def test_no_input_makes_the_server_fail(server: BackgroundServer) -> None:
    fuzzer = make_user(server, "fuzzer")
    with client_for(server, fuzzer) as c:
        create_cube(c, "fuzz_cube")
        memory_id = add_fast(c, "fuzz_cube", "The fuzzer likes prime numbers.")[0]["memory_id"]
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    headers = fuzzer.headers
    counts: dict[str, int] = {}
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 16

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, server.url, headers, fuzzer.user_id, memory_id, counts, failures)

    total = counts.get("positive", 0) + counts.get("negative", 0)
    sys.stdout.write(
        f"\nfuzz: {len(operations)} operations, {total} cases ({counts}), {len(failures)} failures\n"
    )
    for failure in failures:
        sys.stdout.write(f"  5xx: {failure}\n")
    assert not failures, failures[:10]
    assert total >= len(operations) * 2
