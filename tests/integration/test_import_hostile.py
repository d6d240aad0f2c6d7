"""Hostile import drafts: another cube's memory is never taken over, bad embeddings are recomputed, the importer is the author."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from memos.application.service import MemoryService
from memos.runtime import Runtime
from schemas.errors import ValidationFailed
from schemas.events import derive_id
from streams.settings import AppSettings


async def test_hostile_import_drafts_change_nothing_of_other_cubes(tmp_path: Path) -> None:
    async with Runtime(AppSettings(home=tmp_path)) as rt:
        service = MemoryService(rt)
        await service.add("bob", ["vsrc"], [{"role": "user", "content": "My sister Ana lives in Porto."}], mode="fast")
        await service.add("bob", ["vdst"], [{"role": "user", "content": "Pixel is my dog."}], mode="fast")
        await service.add("mallory", ["atk"], [{"role": "user", "content": "Hello."}], mode="fast")
        source = (await service.export_memories("bob", "vsrc"))[0]
        planted = str(derive_id("import:vdst", source["id"]))  # the id bob's copy would be re-keyed to
        assert await service.import_memories("mallory", "atk", [{"memory_id": planted, "memory": "mine now"}])

        dim = rt.embedder.dimension
        copied = await service.import_memories("bob", "vdst", [
            {"memory_id": source["id"], "memory": source["memory"]},
            {"memory_id": "wrong-dim", "memory": "Ana likes fado.", "embedding": [0.1] * 7,
             "embedding_model": rt.embedder.model_id},
            {"memory_id": "not-finite", "memory": "Ana plays cello.", "embedding": [math.nan] * dim,
             "embedding_model": rt.embedder.model_id},
            {"memory_id": "forged", "memory": "Bob owes Ana 5 euros.", "user_id": "ana", "cube_id": "atk",
             "key": "atk", "event_id": "not-an-id"},
        ])  # fmt: skip
        assert len(copied) == 4 and planted not in copied
        held = {r.id: r for r in await rt.graph.get(copied, cube_id="vdst")}
        assert set(held) == set(copied)  # all in bob's cube
        assert all(len(r.embedding) == dim and all(math.isfinite(x) for x in r.embedding) for r in held.values())
        assert {r.user_id for r in held.values()} == {"bob"}  # the importer is the author
        kept = await rt.graph.get([planted], cube_id="atk")
        assert [r.memory for r in kept] == ["mine now"]  # mallory's memory stayed hers, and bob's copy is apart

        for bad, field in (([{"memory": "no id"}], "memories.0"), ([{"memory_id": "x" * 257, "memory": "long"}],
                                                                   "memories.0.memory_id"),
                           *(([{"memory_id": "ok", "memory": "fine"}, {"memory_id": "c", "memory": "odd", "confidence":
                                                                        value}], "memories.1.confidence")
                             for value in (math.nan, math.inf, -0.1, 1.5, "0.5", True))):
            with pytest.raises(ValidationFailed) as refused:
                await service.import_memories("bob", "vdst", bad)
            assert refused.value.field == field  # a 422 naming the draft (a missing id was a KeyError 500)

        assert await service.replay("atk", user_id="mallory") > 0
        assert await service.replay("vdst", user_id="bob") > 0  # nothing poisoned the log
        again = {r.id for r in await rt.graph.get(copied, cube_id="vdst")}
        assert again == set(copied)


async def test_an_imported_window_is_embedded_as_its_cube_embedded_it(tmp_path: Path) -> None:
    async with Runtime(AppSettings(home=tmp_path)) as rt:
        service = MemoryService(rt)
        chat = [{"role": "user", "content": "Pixel is my dog.", "chat_time": "1:56 pm on 8 May, 2023"}]
        await service.add("bob", ["wsrc"], chat, mode="fast")
        await service.add("bob", ["wdst"], [{"role": "user", "content": "Hello."}], mode="fast")
        [source] = await service.export_memories("bob", "wsrc")
        assert source["memory"].startswith("[2023-05-08 13:56] ")
        [copied] = await service.import_memories("bob", "wdst", [{"memory_id": "w", "memory": source["memory"]}])
        [original] = await rt.graph.get([source["id"]], cube_id="wsrc")
        [fresh] = await rt.graph.get([copied], cube_id="wdst")
        # recomputed from the time in words, as derivation embeds it, not from the ISO text shown
        assert sum(a * b for a, b in zip(original.embedding, fresh.embedding, strict=True)) > 0.999
