"""Where the log cannot delete records (Kafka), a forget is refused before anything is recorded: the cube keeps
its owner and its id is never freed for someone else to take, replay, and read the old records back."""

from __future__ import annotations

from pathlib import Path

import pytest

from memos.application.errors import ForgetUnsupported, status_of
from memos.application.service import MemoryService
from memos.runtime import Runtime
from schemas.errors import PermissionDenied
from schemas.topics import REGISTRY
from streams.log.kafka.log import KafkaEventLog
from streams.log.local.log import LocalEventLog
from streams.settings import AppSettings


def test_only_the_embedded_log_says_it_forgets() -> None:
    assert LocalEventLog.forgets and not KafkaEventLog.forgets


async def test_a_forget_the_log_cannot_carry_out_changes_nothing(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    async with Runtime(AppSettings(home=tmp_path)) as rt:
        service = MemoryService(rt)
        await service.add("alice", ["alice_tmp"], [{"role": "user", "content": "The safe code is 8817."}], mode="fast")
        monkeypatch.setattr(rt.log, "forgets", False)
        registry = await rt.log.end_offsets(REGISTRY)
        for forget in (lambda: service.forget_cube("alice_tmp", requested_by="alice"),
                       lambda: service.forget_cube("alice_tmp"), lambda: service.forget_user("alice")):
            with pytest.raises(ForgetUnsupported) as refused:
                await forget()
            assert status_of(refused.value) == 501 and "cannot delete records" in str(refused.value)
        assert await rt.log.end_offsets(REGISTRY) == registry  # no CubeForgotten, no UserForgotten
        assert (await rt.control.cube("alice_tmp")).owner_id == "alice"
        with pytest.raises(PermissionDenied):  # the id stays alice's: mallory cannot take it over
            await service.create_cube("alice_tmp", owner_id="mallory")
        found = await service.search("alice", ["alice_tmp"], "safe code")
        assert any("8817" in m["memory"] for m in found["text_mem"][0]["memories"])
