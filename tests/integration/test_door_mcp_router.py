"""The one door through MCP (in-process MCP client over the real protocol) and the in-process MemOS router:
the same identifier grammar, the same squatting rule, the same 404 for unknown and unreadable cubes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from memos.api.product_models import APIADDRequest, APISearchRequest
from memos.api.routers import server_router
from memos.application.limits import MAX_ADD_RECORD_BYTES
from memos.application.service import MemoryService
from memos.client import default_client, reset_default_client
from memos.runtime import Runtime
from memos.server.auth import KeyAuthenticator
from memos.server.mcp import build_mcp_server
from streams.settings import load_settings

pytestmark = pytest.mark.timeout(600)

BAD_CUBE_IDS = ["a\x00b", "a\nb", " lead", "trail ", "a\u202eb", "x'; DROP TABLE cubes;--"]


def _text(result: Any) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


async def test_mcp_tools_go_through_the_door(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMOS_HOME", str(tmp_path))
    async with Runtime(load_settings("default")) as rt:
        service = MemoryService(rt)
        for user in ("alice", "bob"):
            await service.create_user(user)
        server = build_mcp_server(service, KeyAuthenticator(service), default_user="alice")
        async with Client(server) as client:
            for cube in BAD_CUBE_IDS:
                for tool, args in (("add", {"content": "hi", "cube_id": cube}),
                                   ("search", {"query": "hi", "cube_ids": [cube]})):
                    result = await client.call_tool(tool, args)
                    assert result.is_error and "422" in _text(result) and "cube_id" in _text(result), (cube, tool)
                assert not await service.cube_exists(cube)
            squat = await client.call_tool("add", {"content": "Bob, read this.", "cube_id": "bob"})
            assert squat.is_error and "403" in _text(squat) and "default cube" in _text(squat)
            assert not await service.cube_exists("bob")
            fresh = await client.call_tool("add", {"content": "I collect stamps.", "cube_id": "alice_stamps"})
            assert not fresh.is_error, _text(fresh)
            assert await service.owner_of("alice_stamps") == "alice"  # as over HTTP and the Python API
            listed = await client.call_tool("cubes", {})
            assert not listed.is_error and listed.structured_content["cubes"] == [
                {"cube_id": "alice_stamps", "cube_name": "alice_stamps", "owner_id": "alice", "access": "owner"}]
            huge = await client.call_tool("search", {"query": "stamps", "cube_ids": ["alice_stamps"], "top_k": 2**63})
            assert huge.is_error and "top_k" in _text(huge)
            long_query = await client.call_tool("search", {"query": "q" * 100_000, "cube_ids": ["alice_stamps"]})
            assert long_query.is_error and "query" in _text(long_query)
            big = await client.call_tool("add", {"content": "x" * (MAX_ADD_RECORD_BYTES + 10),
                                                 "cube_id": "alice_stamps"})
            assert big.is_error and "413" in _text(big) and str(MAX_ADD_RECORD_BYTES) in _text(big)


@pytest.fixture
def router_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    reset_default_client()
    monkeypatch.setenv("MEMOS_HOME", str(tmp_path))
    try:
        yield tmp_path
    finally:
        reset_default_client()


def test_the_in_process_router_goes_through_the_door(router_home: Path) -> None:
    client = default_client()
    client.call(client.service.create_user("bob"))

    def add(user: str, cube: str, text: str = "I like green tea.") -> Any:
        return server_router.add_memories(APIADDRequest(user_id=user, writable_cube_ids=[cube], messages=text,
                                                        async_mode="sync", mode="fast"))

    for cube in BAD_CUBE_IDS:
        response = add("alice", cube)
        assert response.code == 422 and "cube_id" in response.message, (cube, response.message)
    squat = add("alice", "bob")
    assert squat.code == 403 and "default cube" in squat.message
    assert add("alice", "alice_tea").code == 200
    assert add("bob", "alice_tea").code == 404  # bob may not read it: answered like an unknown cube
    unknown = server_router.search_memories(APISearchRequest(user_id="bob", readable_cube_ids=["nope"], query="tea"))
    unreadable = server_router.search_memories(
        APISearchRequest(user_id="bob", readable_cube_ids=["alice_tea"], query="tea"))
    assert unknown.code == unreadable.code == 404
    assert unknown.message.replace("nope", "alice_tea") == unreadable.message
    bad_text = server_router.add_memories(APIADDRequest(user_id="alice", writable_cube_ids=["alice_tea"],
                                                        messages="tea\ud800", async_mode="sync", mode="fast"))
    assert bad_text.code == 422 and "messages" in bad_text.message
    big = add("alice", "alice_tea", "x" * (MAX_ADD_RECORD_BYTES + 10))  # the same limit as HTTP and MCP
    assert big.code == 413 and str(MAX_ADD_RECORD_BYTES) in big.message
