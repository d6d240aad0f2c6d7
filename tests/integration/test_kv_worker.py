"""The kv-warmer consumer group end to end on the embedded log and a tiny local model.

mem_update -> KVCacheWarmed naming the selected memories; same composition -> no build; memory changes ->
one debounced rebuild; shared byte budget -> LRU eviction; forget -> eviction; dumps -> a separate
process decodes on the cache exactly as with the memories in the prompt; `memos kv-worker` as a process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from memory_store.kv.tiny import make_tiny_model
from memos.application.service import MemoryService
from memos.runtime import Runtime
from schemas.codec import decode
from schemas.events import CubeForgotten, Event, KVCacheEvicted, KVCacheWarmed, MemoryAdded, MemoryRetired
from schemas.topics import ACTIVATION, TASKS
from streams.kv.handoff import cache_dir, cube_dir, latest_warmed, load_latest_warm_cache, parse_cache_key
from streams.settings import AppSettings, KVSettings

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

FACTS = {
    "dog": "Ann adopted a border collie named Pixel last spring.",
    "tea": "Ann drinks green tea every afternoon at four o'clock.",
    "sister": "Ann's sister Maria lives in Lisbon and works as an architect.",
    "football": "Ann plays football with colleagues on Saturday mornings.",
}
QUERY = "What is the name of my dog?"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_tiny_model(tmp_path_factory.mktemp("kvworker") / "tiny-llama"))


def _settings(home: Path, model: str, **kv: Any) -> AppSettings:
    return AppSettings(home=home, kv=KVSettings(enabled=True, model=model, **kv))


async def _until(probe: Callable[[], Awaitable[T | None]], *, timeout_s: float = 60.0, what: str = "") -> T:
    """Poll ``probe`` until it returns something truthy; fail after the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = await probe()
        if value:
            return value
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what or probe}")
        await asyncio.sleep(0.02)


async def _activation(rt: Runtime, cube: str | None = None) -> list[Event]:
    events: list[Event] = []
    for partition in range(await rt.log.partitions(ACTIVATION)):
        events += [decode(r.value) for r in await rt.log.read(ACTIVATION, partition, 0, limit=10_000)]
    return [e for e in events if cube is None or getattr(e, "cube_id", None) == cube]


async def _warmed(rt: Runtime, cube: str, count: int = 1) -> list[KVCacheWarmed]:
    async def probe() -> list[KVCacheWarmed] | None:
        found = [e for e in await _activation(rt, cube) if isinstance(e, KVCacheWarmed)]
        return found if len(found) >= count else None

    return await _until(probe, what=f"{count} KVCacheWarmed of {cube!r}")


async def _ready(rt: Runtime) -> Any:
    stage = rt.kv_warmer
    assert stage is not None
    await asyncio.wait_for(stage.ready.wait(), timeout=120)
    assert stage.failure is None
    return stage


async def _cube_with(service: MemoryService, cube: str, facts: dict[str, str]) -> dict[str, str]:
    """Create a cube holding ``facts`` (name -> text); returns name -> memory id."""
    await service.create_cube(cube, owner_id="ann")
    ids = {name: f"{cube}-{name}" for name in facts}
    await service.import_memories("ann", cube, [{"memory_id": ids[n], "memory": t} for n, t in facts.items()])
    return ids


async def _mem_update(service: MemoryService, cube: str, query: str = QUERY) -> None:
    await service.submit_tasks([{"user_id": "ann", "cube_id": cube, "label": "mem_update", "content": query}])


async def _idle(rt: Runtime, stage: Any) -> None:
    """Wait until the warmer consumed every task and memory event, and nothing is pending or running."""
    from schemas.topics import MEMORIES

    targets = {}
    for topic in (TASKS, MEMORIES):
        targets.update({(topic, p): end for p, end in (await rt.log.end_offsets(topic)).items() if end})
    await rt.wait_for("kv-warmer", targets, timeout_s=60)

    async def quiet() -> bool:
        pending = any(s.dirty_first is not None for s in stage.keeper.cubes.values())
        return not pending and not stage._lock.locked()

    await _until(quiet, what="the warmer to be idle")


async def test_mem_update_warms_the_selected_memories(memos_home: Path, tiny_model: str) -> None:
    async with Runtime(_settings(memos_home, tiny_model, prefix_tokens=48)) as rt:
        stage = await _ready(rt)
        service = MemoryService(rt)
        ids = await _cube_with(service, "c1", FACTS)
        await _mem_update(service, "c1")
        (warmed,) = await _warmed(rt, "c1")

        assert warmed.model_id == tiny_model and warmed.producer == "kv-warmer"
        assert ids["dog"] in warmed.memory_ids  # the memory the query is about
        assert 0 < len(warmed.memory_ids) < len(FACTS)  # the token budget forced a choice
        key = parse_cache_key(warmed.cache_key)
        entry = rt.kv_caches.get(key)
        assert entry is not None and entry.bytes == warmed.bytes > 0 and entry.tokens == warmed.tokens > 0
        assert warmed.build_ms > 0 and stage.builds == 1
        handle = rt.warm_cache("c1", tiny_model)
        assert handle is not None and handle.memory_ids == tuple(warmed.memory_ids)
        records = {r.id: r.memory for r in await rt.graph.get(warmed.memory_ids)}
        assert handle.texts == tuple(records[i] for i in warmed.memory_ids)
        assert (cache_dir(memos_home, "c1", warmed.cache_key) / "manifest.json").is_file()


async def test_a_shared_cubes_warm_cache_says_whose_each_memory_is(memos_home: Path, tiny_model: str) -> None:
    """A warm cache of a cube two users write: its header says "Memories of this user", and "The user ..." in
    each memory means its writer, so every line names the writer."""
    async with Runtime(_settings(memos_home, tiny_model, prefix_tokens=512)) as rt:
        await _ready(rt)
        service = MemoryService(rt)
        await service.create_user("bob")
        ids = await _cube_with(service, "team", FACTS)
        await service.share_cube("team", owner_id="ann", user_id="bob", access="write")
        await service.import_memories("bob", "team", [{"memory_id": "team-bob", "memory": "The user owns a cat."}])
        await _mem_update(service, "team")
        (warmed,) = await _warmed(rt, "team")
        handle = rt.warm_cache("team", tiny_model)
        assert handle is not None and "team-bob" in handle.memory_ids and ids["dog"] in handle.memory_ids
        texts = dict(zip(handle.memory_ids, handle.texts, strict=True))
        assert texts["team-bob"] == "[memory of user bob] The user owns a cat."
        assert texts[ids["dog"]] == f"[memory of user ann] {FACTS['dog']}"


async def test_the_same_composition_again_builds_nothing(memos_home: Path, tiny_model: str) -> None:
    async with Runtime(_settings(memos_home, tiny_model)) as rt:  # every memory fits: any query, same cache
        stage = await _ready(rt)
        service = MemoryService(rt)
        await _cube_with(service, "c1", FACTS)
        await _mem_update(service, "c1")
        (first,) = await _warmed(rt, "c1")
        await _mem_update(service, "c1", "Where does my sister live?")
        await _mem_update(service, "c1")
        await _idle(rt, stage)
        assert stage.builds == 1
        assert [e for e in await _activation(rt, "c1")] == [first]
        assert rt.warm_cache("c1").entry.key == parse_cache_key(first.cache_key)


async def test_a_burst_of_memory_changes_gives_one_rebuild(memos_home: Path, tiny_model: str) -> None:
    async with Runtime(_settings(memos_home, tiny_model)) as rt:
        stage = await _ready(rt)
        service = MemoryService(rt)
        ids = await _cube_with(service, "c1", FACTS)
        await _mem_update(service, "c1")
        (first,) = await _warmed(rt, "c1")
        assert set(first.memory_ids) == set(ids.values())

        texts = ["Ann's birthday is on the third of March.", "Ann takes piano lessons on Tuesdays."]
        vectors = (await rt.embedder.embed(texts, kind="passage")).vectors
        base = {"occurred_at": rt.now(), "key": "c1", "producer": "test"}
        burst: list[Event] = [
            MemoryAdded(**base, event_id=uuid.uuid4(), memory_id=f"c1-new{n}", cube_id="c1", user_id="ann",
                        memory=text, embedding=vector, embedding_model=rt.embedder.model_id)
            for n, (text, vector) in enumerate(zip(texts, vectors, strict=True))
        ]  # fmt: skip
        burst.append(
            MemoryRetired(**base, event_id=uuid.uuid4(), memory_id=ids["tea"], cube_id="c1", reason="deleted")
        )
        await rt.publish(burst)

        first_key, second = first.cache_key, (await _warmed(rt, "c1", count=2))[1]
        await _idle(rt, stage)
        assert stage.builds == 2  # one rebuild for the whole burst
        events = await _activation(rt, "c1")
        assert [type(e).__name__ for e in events] == ["KVCacheWarmed", "KVCacheEvicted", "KVCacheWarmed"]
        evicted = events[1]
        assert (
            isinstance(evicted, KVCacheEvicted)
            and evicted.reason == "stale"
            and evicted.cache_key == first_key
        )
        assert set(second.memory_ids) == (set(ids.values()) - {ids["tea"]}) | {"c1-new0", "c1-new1"}
        assert not cache_dir(memos_home, "c1", first_key).exists()
        assert (cache_dir(memos_home, "c1", second.cache_key) / "manifest.json").is_file()


async def test_the_shared_budget_evicts_the_least_recently_used_cube(
    memos_home: Path, tiny_model: str
) -> None:
    # Tiny llama: 1 KiB of keys and values per token; a cache of these facts (~40 tokens + 256 spare
    # slots) takes ~300 KB, so two caches fit in 800 KB and three do not.
    budget = 800_000
    async with Runtime(_settings(memos_home, tiny_model, budget_bytes=budget)) as rt:
        await _ready(rt)
        service = MemoryService(rt)
        facts = list(FACTS.items())
        for n, cube in enumerate(("ca", "cb", "cc")):
            await _cube_with(service, cube, dict(facts[n : n + 2]))
        await _mem_update(service, "ca")
        (a,) = await _warmed(rt, "ca")
        await _mem_update(service, "cb")
        (b,) = await _warmed(rt, "cb")
        await _mem_update(service, "ca")  # a use of ca's cache: cb is now the least recently used
        await _until(lambda: _true(rt.kv_caches.keys()[-1] == parse_cache_key(a.cache_key)), what="ca used")
        await _mem_update(service, "cc")
        (c,) = await _warmed(rt, "cc")
        assert max(a.bytes, b.bytes, c.bytes) * 2 <= budget < min(a.bytes, b.bytes, c.bytes) * 3

        async def eviction() -> list[Event]:
            return [e for e in await _activation(rt) if isinstance(e, KVCacheEvicted)]

        (evicted,) = await _until(eviction, what="a budget eviction")
        assert (evicted.cube_id, evicted.cache_key, evicted.reason) == ("cb", b.cache_key, "budget")
        assert (
            rt.warm_cache("cb") is None
            and rt.warm_cache("ca") is not None
            and rt.warm_cache("cc") is not None
        )
        assert rt.kv_caches.used_bytes <= budget
        assert not cache_dir(memos_home, "cb", b.cache_key).exists()


async def _true(value: bool) -> bool:
    return value


async def test_forgetting_a_cube_evicts_its_cache(memos_home: Path, tiny_model: str) -> None:
    async with Runtime(_settings(memos_home, tiny_model)) as rt:
        stage = await _ready(rt)
        service = MemoryService(rt)
        for cube in ("ca", "cb"):
            await _cube_with(service, cube, FACTS)
            await _mem_update(service, cube)
            await _warmed(rt, cube)
        assert cube_dir(memos_home, "ca").is_dir()

        await service.forget_cube("ca", requested_by="ann")  # the embedded log deletes the cube's records
        await _until(lambda: _true(rt.warm_cache("ca") is None and not cube_dir(memos_home, "ca").exists()),
                     what="ca's cache evicted")  # fmt: skip
        assert "ca" not in stage.keeper.cubes

        # where the CubeForgotten stays readable (Kafka), its event evicts at once, with an event
        await rt.publish([CubeForgotten(event_id=uuid.uuid4(), occurred_at=rt.now(), key="cb", cube_id="cb")])
        evicted = await _until(
            lambda: _first(_activation(rt, "cb"), lambda e: isinstance(e, KVCacheEvicted)), what="cb evicted"
        )
        assert evicted.reason == "forgotten" and rt.warm_cache("cb") is None
        assert not cube_dir(memos_home, "cb").exists() and len(rt.kv_caches) == 0


async def _first(events: Awaitable[list[Event]], match: Callable[[Event], bool]) -> Any:
    return next((e for e in await events if match(e)), None)


_CHAT_PROCESS = """
import asyncio, json, sys
from memory_store.llm.huggingface import HuggingFaceChatModel
from processors.kv_warmer import compose_memory_text
from streams.kv.handoff import load_latest_warm_cache
from streams.log.registry import event_log_from_url

home, cube, model_dir, query, texts = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])

async def load():
    log = event_log_from_url(f"sqlite:///{home}/log.db")
    await log.start()
    try:
        return await load_latest_warm_cache(log, home, cube, model_id=model_dir)
    finally:
        await log.aclose()

handle = asyncio.run(load())
model = HuggingFaceChatModel(model_dir, max_tokens=12)
messages = [{"role": "user", "content": query}]
warm = model.generate_with_memories(handle.memory_text, messages, prefix=handle.prefix_cache())
prompt = model.generate_with_memories(compose_memory_text(texts), messages)
print(json.dumps({"memory_ids": list(handle.memory_ids), "texts": list(handle.texts),
                  "warm": list(warm.token_ids), "cached": warm.cached_tokens,
                  "prompt": list(prompt.token_ids), "prompt_cached": prompt.cached_tokens}))
"""


async def test_a_separate_chat_process_decodes_on_the_dumped_cache(memos_home: Path, tiny_model: str) -> None:
    settings = _settings(memos_home, tiny_model)
    async with Runtime(settings) as rt:
        await _ready(rt)
        service = MemoryService(rt)
        await _cube_with(service, "c1", FACTS)
        await _mem_update(service, "c1")
        (warmed,) = await _warmed(rt, "c1")
        texts = [r.memory for r in await rt.graph.get(warmed.memory_ids)]
        assert (await latest_warmed(rt.log, "c1")) == warmed
        assert (await load_latest_warm_cache(rt.log, memos_home, "c1", model_id="other-model")) is None

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHAT_PROCESS, str(memos_home), "c1", tiny_model, QUERY, json.dumps(texts),
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=240)
    assert proc.returncode == 0, err.decode()[-3000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["memory_ids"] == warmed.memory_ids and result["texts"] == texts
    assert result["cached"] == warmed.tokens and result["prompt_cached"] == 0
    assert result["warm"] and result["warm"] == result["prompt"]  # greedy: the same tokens on both paths

    async with Runtime(settings) as rt:  # a restarted worker is warm from its dumps, with no build
        stage = await _ready(rt)
        handle = rt.warm_cache("c1")
        assert handle is not None and str(handle.entry.key) == warmed.cache_key
        await _idle(rt, stage)
        assert stage.builds == 0 and rt.warm_cache("c1") is not None


async def test_memos_kv_worker_warms_caches_as_its_own_process(memos_home: Path, tiny_model: str) -> None:
    env = {**os.environ, "MEMOS_HOME": str(memos_home), "MEMOS_KV__MODEL": tiny_model, "OMP_NUM_THREADS": "1"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "memos", "kv-worker"], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        async with Runtime(AppSettings(home=memos_home)) as rt:  # API + projector, no KV here
            assert rt.kv_warmer is None and rt.warm_cache("c1") is None
            service = MemoryService(rt)
            ids = await _cube_with(service, "c1", FACTS)
            await _mem_update(service, "c1")
            (warmed,) = await _warmed(rt, "c1")
            assert set(warmed.memory_ids) == set(ids.values()) and warmed.producer == "kv-warmer"
            assert (cache_dir(memos_home, "c1", warmed.cache_key) / "manifest.json").is_file()
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=120)
    assert worker.returncode == 0, output[-3000:]
    assert "kv-worker running" in output and "kv-worker stopped" in output


def test_chat_decodes_on_the_runtime_warm_cache(
    memos_home: Path, tiny_model: str, caplog: pytest.LogCaptureFixture
) -> None:
    from memory_store.llm.huggingface import HuggingFaceChatModel
    from memos.chat import generate_answer
    from memos.client import SyncClient

    with SyncClient(_settings(memos_home, tiny_model)) as client:
        client.call(_ready(client.runtime))
        client.call(_cube_with(client.service, "c1", FACTS))
        client.call(_mem_update(client.service, "c1"))
        (warmed,) = client.call(_warmed(client.runtime, "c1"))
        texts = [r.memory for r in client.call(client.runtime.graph.get(warmed.memory_ids))]
        model = HuggingFaceChatModel(tiny_model, max_tokens=12)
        with caplog.at_level(logging.INFO, logger="memos.chat"):
            warm = generate_answer(model, QUERY, texts, client=client, cube_id="c1")
        assert "path=warm_cache source=kv-warmer" in caplog.text
        assert f"cached_tokens={warmed.tokens}" in caplog.text
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="memos.chat"):
            prompt = generate_answer(model, QUERY, texts, client=client, cube_id=None)
        assert "path=prompt" in caplog.text
        assert warm == prompt  # greedy: the warm cache answers exactly as the memories in the prompt


def test_dumps_are_kept_per_cube_and_loaded_only_whole(memos_home: Path) -> None:
    import torch

    from memory_store.kv.cache import cache_from_layers, layer_tensors
    from memory_store.kv.store import CacheKey, WarmCache
    from processors.kv_warmer import prefix_hash
    from schemas.errors import StoreError
    from streams.kv.handoff import dump_warm_cache, load_warm_cache, remove_dump

    for odd in ("../up", "a/b", ".hidden", "..", "ü cube"):
        folder = cube_dir(memos_home, odd)
        assert folder.parent == memos_home / "kv" and not folder.name.startswith(".")
    with pytest.raises(ValueError):
        cube_dir(memos_home, "")

    texts = ("first memory", "second memory")
    key = CacheKey("some-model", prefix_hash("some-model", texts))
    layers = [(torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)) for _ in range(2)]
    entry = WarmCache(key, cache_from_layers(layers), tuple(range(5)), ("m1", "m2"), "prefix", 1.5)
    folder = dump_warm_cache(memos_home, "../up", entry, texts)
    assert folder == cache_dir(memos_home, "../up", str(key))
    loaded = load_warm_cache(memos_home, "../up", str(key))
    assert loaded is not None and loaded.texts == texts and loaded.memory_ids == ("m1", "m2")
    pairs = zip(layer_tensors(loaded.entry.cache), layers, strict=True)
    assert all(torch.equal(k, k0) and torch.equal(v, v0) for (k, v), (k0, v0) in pairs)
    assert load_warm_cache(memos_home, "other", str(key)) is None

    (folder / "cache.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(StoreError):
        load_warm_cache(memos_home, "../up", str(key))
    remove_dump(memos_home, "../up", str(key))
    assert load_warm_cache(memos_home, "../up", str(key)) is None and cube_dir(memos_home, "../up").is_dir()
    remove_dump(memos_home, "../up")
    assert not cube_dir(memos_home, "../up").exists() and (memos_home / "kv").is_dir()
