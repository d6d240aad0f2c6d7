"""The console's key-checked routes (not in the OpenAPI schema the fuzzer reads) under hostile parameters:
every extreme number, text and id is a 4xx naming the problem, never a 500; another user's cube is a 404."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest

from memos.server.app import BackgroundServer
from tests.security.conftest import Tenant, add

HUGE = [str(2**63 - 1), str(2**63), str(-(2**63)), "-1", "0", "1e309", "NaN", "１２"]
TEXTS = ["\x00", "x" * 30_000, "<script>alert(1)</script>", "%", "' OR 1=1 --"]
RAW = ["%ED%A0%80", "%FF", "%"]
"""Sent as they are: a lone surrogate and bytes that are not UTF-8, and a stray percent sign."""


def _fragments(cube: str) -> list[tuple[str, dict[str, Any]]]:
    """(path, base query) of every console GET that takes parameters."""
    return [
        (f"/v1/console/cubes/{cube}/memories", {}),
        (f"/v1/console/cubes/{cube}/graph", {}),
        ("/v1/console/search", {"q": "tea", "cube": cube}),
        ("/v1/console/tasks", {"cube": cube}),
        ("/v1/console/feed", {}),
        ("/v1/console/usage", {}),
    ]


NUMBERS = {"page", "page_size", "limit", "top_k"}
STRINGS = {"type", "status", "q", "extractor", "cube"}


@pytest.fixture(scope="module")
def cube(server: BackgroundServer, alice: Tenant) -> str:
    with alice.client(server) as c:
        add(c, "console_inputs", "I like green tea.")
    return "console_inputs"


@pytest.mark.parametrize("name", sorted(NUMBERS | STRINGS))
def test_no_parameter_value_makes_a_console_fragment_fail(
    server: BackgroundServer, alice: Tenant, cube: str, name: str
) -> None:
    values = HUGE if name in NUMBERS else TEXTS + HUGE
    with alice.client(server) as c:
        for path, query in _fragments(cube):
            base = urlencode({k: v for k, v in query.items() if k != name})
            sent = [f"{path}?{urlencode({**query, name: value})}" for value in values]
            sent += [f"{path}?{base}&{name}={raw}" for raw in RAW]
            for url in sent:
                r = c.get(url)
                assert r.status_code < 500, (url[:120], r.status_code, r.text[:300])
                if r.status_code == 422:
                    assert name in r.text or "query" in r.text, (url[:120], r.text[:300])


def test_ids_in_console_paths_are_checked(server: BackgroundServer, alice: Tenant, mallory: Tenant, cube: str) -> None:
    with mallory.client(server) as c:
        for path in (f"/v1/console/cubes/{cube}/memories", f"/v1/console/cubes/{cube}/graph",
                     f"/v1/console/cubes/{cube}/memories/{'0' * 36}"):
            r = c.get(path)
            assert r.status_code == 404, (path, r.status_code, r.text[:200])
        for path in (f"/v1/console/cubes/{cube}/replay", f"/v1/console/cubes/{cube}/forget"):
            assert c.post(path).status_code == 404, path
    with alice.client(server) as c:
        for bad in ("a%00b", "x" * 200, "a%0Ab", "%E2%80%AEab"):
            for path in (f"/v1/console/cubes/{bad}/memories", f"/v1/console/cubes/{bad}/memories/m1",
                         f"/v1/console/jobs/{bad * 10}"):
                r = c.get(path)
                assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:200])
