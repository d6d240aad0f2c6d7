"""MOS, GeneralMemCube and the scheduler end to end on the embedded runtime (log, stores, tiny local model)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memos.api.product_models import APIChatCompleteRequest
from memos.chat import answer
from memos.client import SyncClient
from memos.configs.mem_cube import GeneralMemCubeConfig
from memos.configs.mem_os import MOSConfig
from memos.mem_cube.general import GeneralMemCube
from memos.mem_os.main import MOS
from memos.mem_scheduler.general_scheduler import GeneralScheduler, task_id_of
from memos.mem_scheduler.schemas.message_schemas import ScheduleMessageItem
from memos.memories.textual.item import TextualMemoryItem
from schemas.errors import NotFound, PermissionDenied, ValidationFailed
from schemas.topics import ACTIVATION
from streams.settings import load_settings
from tests.support.openai_chat import chat_server

pytestmark = pytest.mark.timeout(900)

TINY = {"backend": "huggingface", "config": {"model_name_or_path": "tiny://llama", "max_tokens": 8}}
MOS_CONFIG = {
    "user_id": "root",
    "chat_model": TINY,
    "mem_scheduler": {"backend": "general_scheduler", "config": {"top_k": 3, "top_n": 3}},
    "enable_textual_memory": True,
    "enable_activation_memory": True,
    "enable_mem_scheduler": True,
}
CUBE_CONFIG = {
    "text_mem": {"backend": "general_text", "config": {}},
    "act_mem": {"backend": "kv_cache", "config": {"extractor_llm": TINY}},
}
TRIP = [
    {"role": "user", "content": "I am travelling to Guangzhou this summer. Which chain hotels are there?"},
    {"role": "assistant", "content": "You could consider 7 Days Inn, Ji Hotel or Hilton."},
    {"role": "user", "content": "I will choose 7 Days Inn."},
]


@pytest.fixture(scope="module")
def docs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the in-process API may read documents from (``derivation.fetch_local_roots``)."""
    return tmp_path_factory.mktemp("mos_docs")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, docs_root: Path) -> Iterator[SyncClient]:
    """One embedded runtime for the module, on its own data directory."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEMOS_HOME", str(tmp_path_factory.mktemp("mos_home")))
        mp.setenv("MEMOS_DERIVATION__FETCH_LOCAL_ROOTS", json.dumps([str(docs_root)]))
        sync = SyncClient(load_settings("default"))
        try:
            yield sync
        finally:
            sync.close()


@pytest.fixture(scope="module")
def mos(client: SyncClient) -> MOS:
    return MOS(MOSConfig(**MOS_CONFIG), client=client)


@pytest.fixture
def scheduler(mos: MOS) -> GeneralScheduler:
    assert mos.mem_scheduler is not None
    return mos.mem_scheduler


def new_cube(mos: MOS, user_id: str, cube_id: str) -> GeneralMemCube:
    mos.create_user(user_id)
    cube = GeneralMemCube(GeneralMemCubeConfig.model_validate(CUBE_CONFIG))
    mos.register_mem_cube(cube, mem_cube_id=cube_id, user_id=user_id)
    return cube


def texts(result: dict[str, Any], bucket: str = "text_mem") -> list[str]:
    return [m.memory for entry in result[bucket] for m in entry["memories"]]


def message(user_id: str, cube_id: str, label: str, content: str, **extra: Any) -> ScheduleMessageItem:
    return ScheduleMessageItem(user_id=user_id, mem_cube_id=cube_id, label=label, content=content, **extra)


def wait_status(scheduler: GeneralScheduler, task_id: str, status: str) -> None:
    deadline = threading.Event()
    for _ in range(3000):
        found = scheduler.status(task_id)
        if found and found[0]["status"] == status:
            return
        deadline.wait(0.02)
    raise AssertionError(f"task {task_id} never reached {status!r}: {scheduler.status(task_id)!r}")


# --- users, cubes, memories -------------------------------------------------------------------------------


def test_users_and_cube_registration(mos: MOS, unique: str) -> None:
    user = f"ann_{unique}"
    assert mos.create_user(user, user_name="Ann") == user
    assert user in [u["user_id"] for u in mos.list_users()]
    cube = new_cube(mos, user, f"cube_{unique}")
    assert mos.mem_cubes[f"cube_{unique}"] is cube
    assert cube.cube_id == f"cube_{unique}" and cube.text_mem is not None and cube.text_mem.bound
    assert cube.para_mem is None and cube.act_mem is not None
    assert mos.mem_scheduler is not None and mos.mem_scheduler.mem_cube is cube
    notes = mos.create_cube_for_user("notes", owner_id=user)
    cubes = {c["cube_id"]: c for c in mos.get_user_info(user)["accessible_cubes"]}
    assert cubes[f"cube_{unique}"]["is_loaded"] and cubes[f"cube_{unique}"]["access"] == "owner"
    assert not cubes[notes]["is_loaded"]
    mos.unregister_mem_cube(f"cube_{unique}", user_id=user)
    assert f"cube_{unique}" not in mos.mem_cubes
    with pytest.raises(NotFound):
        mos.unregister_mem_cube(f"cube_{unique}", user_id=user)
    with pytest.raises(NotFound):
        mos.register_mem_cube(GeneralMemCube(GeneralMemCubeConfig()), user_id=f"nobody_{unique}")
    with pytest.raises(NotFound):
        mos.search("hotel", user_id=f"nobody_{unique}")


def test_add_search_get_delete(mos: MOS, unique: str, docs_root: Path) -> None:
    user, cube_id = f"bob_{unique}", f"bob_cube_{unique}"
    cube = new_cube(mos, user, cube_id)
    added = mos.add(TRIP, user_id=user, mem_cube_id=cube_id)
    assert any("7 Days Inn" in m["memory"] for m in added)

    found = mos.search("Which hotel did I choose?", user_id=user)
    assert {"text_mem", "act_mem", "para_mem", "pref_mem"} <= set(found)
    assert [e["cube_id"] for e in found["text_mem"]] == [cube_id]
    assert all(isinstance(m, TextualMemoryItem) for m in found["text_mem"][0]["memories"])
    assert any("7 Days Inn" in t for t in texts(found))
    assert cube.text_mem is not None
    assert 1 <= len(cube.text_mem.search("hotel", top_k=2)) <= 2

    first = found["text_mem"][0]["memories"][0]
    assert mos.get(cube_id, first.id, user_id=user).memory == first.memory

    assert any(
        "Miso" in m["memory"]
        for m in mos.add(memory_content="My cat is called Miso.", user_id=user, mem_cube_id=cube_id)
    )
    docs = docs_root / unique
    docs.mkdir()
    (docs / "garden.md").write_text("# Garden\n\nThe tomatoes grow in the north bed.\n", encoding="utf-8")
    assert any("tomatoes" in m["memory"] for m in mos.add(doc_path=str(docs), user_id=user, mem_cube_id=cube_id))
    with pytest.raises(ValidationFailed):
        mos.add(user_id=user, mem_cube_id=cube_id)

    everything = mos.get_all(mem_cube_id=cube_id, user_id=user)
    ids = [m.id for m in everything["text_mem"][0]["memories"]]
    assert first.id in ids and len(ids) >= 3
    mos.delete(cube_id, first.id, user_id=user)
    assert first.id not in [m.id for m in mos.get_all(cube_id, user)["text_mem"][0]["memories"]]
    assert (
        mos.get(cube_id, first.id, user_id=user).metadata.status == "retired"
    )  # ids once seen still resolve
    mos.delete_all(cube_id, user_id=user)
    assert mos.get_all(cube_id, user)["text_mem"][0]["memories"] == []
    assert texts(mos.search("hotel", user_id=user)) == []


def test_a_user_reads_another_users_cube_only_when_shared(mos: MOS, unique: str) -> None:
    owner, other, cube_id = f"own_{unique}", f"oth_{unique}", f"own_cube_{unique}"
    new_cube(mos, owner, cube_id)
    mos.create_user(other)
    mos.add(TRIP, user_id=owner, mem_cube_id=cube_id)
    memory_id = mos.get_all(cube_id, owner)["text_mem"][0]["memories"][0].id

    with pytest.raises(NotFound):
        mos.search("hotel", user_id=other, install_cube_ids=[cube_id])
    with pytest.raises(NotFound):
        mos.get_all(cube_id, other)
    with pytest.raises(NotFound):
        mos.get(cube_id, memory_id, user_id=other)
    with pytest.raises(NotFound):
        mos.register_mem_cube(cube_id, user_id=other)
    with pytest.raises(NotFound):
        mos.add(TRIP, user_id=other, mem_cube_id=cube_id)
    assert mos.mem_scheduler is not None
    with pytest.raises(NotFound):
        mos.mem_scheduler.submit_messages([message(other, cube_id, "answer", "sneaky")])
    assert cube_id not in [e["cube_id"] for e in mos.search("hotel", user_id=other)["text_mem"]]

    assert mos.share_cube_with_user(cube_id, other)
    assert any(
        "7 Days Inn" in t for t in texts(mos.search("hotel", user_id=other, install_cube_ids=[cube_id]))
    )
    assert mos.get(cube_id, memory_id, user_id=other).id == memory_id
    with pytest.raises(PermissionDenied):  # a read share does not allow writes
        mos.add(TRIP, user_id=other, mem_cube_id=cube_id)
    with pytest.raises(PermissionDenied):
        mos.delete(cube_id, memory_id, user_id=other)


# --- scheduler ------------------------------------------------------------------------------------------------


def test_task_status_goes_waiting_in_progress_completed_or_failed(
    scheduler: GeneralScheduler, mos: MOS, unique: str
) -> None:
    user, cube_id = f"sched_{unique}", f"sched_cube_{unique}"
    cube = new_cube(mos, user, cube_id)
    gate, started, seen = threading.Event(), threading.Event(), []

    def hold(messages: list[ScheduleMessageItem]) -> None:
        started.set()
        assert gate.wait(120)

    def work(messages: list[ScheduleMessageItem]) -> dict[str, Any]:
        seen.extend(messages)
        return {"seen": [m.content for m in messages]}

    def broken(messages: list[ScheduleMessageItem]) -> None:
        raise RuntimeError(f"boom {messages[0].content}")

    scheduler.dispatcher.register_handlers({"t_hold": hold, "t_work": work, "t_broken": broken})
    business = f"biz_{unique}"
    try:
        [held] = scheduler.submit_messages([message(user, cube_id, "t_hold", "hold", task_id=business)])
        wait_status(scheduler, held, "in_progress")
        assert started.wait(60)  # its status is published just before the handler is called
        # The dispatch stage is busy with the held batch, so a new task stays waiting until it is released.
        [worked] = scheduler.submit_messages(message(user, cube_id, "t_work", "work it", task_id=business))
        assert scheduler.status(worked)[0]["status"] == "waiting"
    finally:
        gate.set()
    done = {t["task_id"]: t for t in scheduler.wait(business_task_id=business, timeout_s=120)}
    assert set(done) == {held, worked}
    assert all(t["status"] == "completed" and t["business_task_id"] == business for t in done.values())
    assert done[worked]["result"] == {"handled": 1, "handler": "work", "result": {"seen": ["work it"]}}
    assert seen[0].mem_cube is cube and seen[0].mem_cube_id == cube_id and seen[0].task_id == business

    [failed] = scheduler.submit_messages([message(user, cube_id, "t_broken", "now")])
    [unhandled] = scheduler.submit_messages([message(user, cube_id, f"t_nobody_{unique}", "?")])
    finished = {t["task_id"]: t for t in scheduler.wait([failed, unhandled], timeout_s=120)}
    assert finished[failed]["status"] == "failed" and "RuntimeError: boom now" in finished[failed]["error"]
    assert finished[unhandled]["status"] == "failed" and "no handler" in finished[unhandled]["error"]


def test_a_relabelled_copy_is_a_new_task(scheduler: GeneralScheduler, mos: MOS, unique: str) -> None:
    user, cube_id = f"relabel_{unique}", f"relabel_cube_{unique}"
    cube = new_cube(mos, user, cube_id)
    received: list[ScheduleMessageItem] = []

    def first(messages: list[ScheduleMessageItem]) -> None:
        for msg in messages:  # as Example 5's query handler does, from the handler's worker thread
            scheduler.submit_messages([msg.model_copy(update={"label": "t_second"})])

    scheduler.dispatcher.register_handlers({"t_first": first, "t_second": received.extend})
    original = message(user, cube_id, "t_first", "what do I like?", task_id=f"biz_{unique}")
    [first_id] = scheduler.submit_messages([original])
    tasks = scheduler.wait(business_task_id=f"biz_{unique}", timeout_s=120)
    relabelled = task_id_of(original.model_copy(update={"label": "t_second"}))
    assert {t["task_id"]: t["label"] for t in tasks} == {first_id: "t_first", relabelled: "t_second"}
    assert first_id != relabelled and all(t["status"] == "completed" for t in tasks)
    [copy] = received
    assert (copy.item_id, copy.label, copy.content) == (original.item_id, "t_second", original.content)
    assert copy.mem_cube is cube and copy.timestamp == original.timestamp


def test_chat_runs_query_and_answer_tasks_and_warms_the_kv_cache(
    mos: MOS, client: SyncClient, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    user, cube_id = f"chat_{unique}", f"chat_cube_{unique}"
    cube = new_cube(mos, user, cube_id)
    mos.add(TRIP, user_id=user, mem_cube_id=cube_id)
    activation_before = sum(client.call(client.runtime.log.end_offsets(ACTIVATION)).values())
    with caplog.at_level(logging.INFO, logger="memos.chat"):
        answer = mos.chat("Which hotel did I choose?", user_id=user)
    assert isinstance(answer, str)
    assert "path=warm_cache" in caplog.text  # the answer decoded on the cube's warm KV cache
    [item] = cube.act_mem.get_all()
    assert any("7 Days Inn" in t for t in item.records.text_memories)
    assert mos.get_all(cube_id, user)["act_mem"] == [{"cube_id": cube_id, "memories": [item]}]

    assert mos.mem_scheduler is not None
    business = {t["business_task_id"] for t in mos.mem_scheduler.status(user_id=user)}
    assert len(business) == 1
    tasks = mos.mem_scheduler.wait(business_task_id=business.pop(), timeout_s=120)
    assert sorted(t["label"] for t in tasks) == ["answer", "mem_update", "query"]
    assert all(t["status"] == "completed" for t in tasks)
    answer_task = next(t for t in tasks if t["label"] == "answer")
    assert answer_task["result"]["handled"] == 1
    assert sum(client.call(client.runtime.log.end_offsets(ACTIVATION)).values()) > activation_before
    assert mos.chat_history_manager[user][-1] == {"role": "assistant", "content": answer}


# --- dump and load --------------------------------------------------------------------------------------------


def test_cube_dump_and_load_round_trip(mos: MOS, unique: str, tmp_path: Path) -> None:
    user, cube_id, copy_id = f"dump_{unique}", f"dump_cube_{unique}", f"copy_cube_{unique}"
    cube = new_cube(mos, user, cube_id)
    mos.add(TRIP, user_id=user, mem_cube_id=cube_id)
    original = {m.id: m.memory for m in mos.get_all(cube_id, user)["text_mem"][0]["memories"]}
    cube.act_mem.add([cube.act_mem.extract("The user chose 7 Days Inn.")])

    folder = tmp_path / "cube"
    cube.dump(str(folder))
    assert json.loads((folder / "config.json").read_text())["cube_id"] == cube_id
    lines = (folder / "textual_memory.jsonl").read_text().splitlines()
    assert {json.loads(line)["id"] for line in lines} == set(original)
    assert (folder / "activation_memory.safetensors").is_file()
    with pytest.raises(ValidationFailed):
        cube.dump(str(folder))  # not empty

    loaded = GeneralMemCube.init_from_dir(str(folder))
    assert [i.records.text_memories for i in loaded.act_mem.get_all()] == [["The user chose 7 Days Inn."]]
    assert (
        loaded.text_mem is not None
        and not loaded.text_mem.bound
        and len(loaded.text_mem.export()) == len(lines)
    )
    mos.register_mem_cube(str(folder), mem_cube_id=copy_id, user_id=user)
    copied = mos.get_all(copy_id, user)["text_mem"][0]["memories"]
    assert sorted(m.memory for m in copied) == sorted(original.values())
    assert not set(original) & {m.id for m in copied}  # another cube's ids are re-keyed, never moved
    assert set(original) == {m.id for m in mos.get_all(cube_id, user)["text_mem"][0]["memories"]}
    assert any(
        "7 Days Inn" in t for t in texts(mos.search("hotel", user_id=user, install_cube_ids=[copy_id]))
    )

    # Importing the same dump again adds nothing: idempotent by memory id.
    assert mos.mem_cubes[copy_id].text_mem.load(str(folder)) == []
    assert len(mos.get_all(copy_id, user)["text_mem"][0]["memories"]) == len(copied)


# --- chat with an OpenAI-compatible endpoint ------------------------------------------------------------------


def test_chat_complete_puts_memories_in_the_prompt_and_records_the_turn(
    mos: MOS, client: SyncClient, unique: str
) -> None:
    user, cube_id = f"api_{unique}", f"api_cube_{unique}"
    new_cube(mos, user, cube_id)
    mos.add(TRIP, user_id=user, mem_cube_id=cube_id)
    mos.create_user(f"stranger_{unique}")
    with chat_server() as script:
        script.say("You chose the 7 Days Inn in Guangzhou.")
        request = APIChatCompleteRequest(
            user_id=user, query="Which hotel did I choose?", readable_cube_ids=[cube_id],
            writable_cube_ids=[cube_id], model_name_or_path=script.url, relativity=0.0,
        )  # fmt: skip
        assert answer(client, request) == "You chose the 7 Days Inn in Guangzhou."
        system = script.requests[-1]["messages"][0]
        assert system["role"] == "system" and "7 Days Inn" in system["content"]
        with pytest.raises(NotFound):  # a cube the stranger may not read answers like an unknown one
            answer(client, request.model_copy(update={"user_id": f"stranger_{unique}"}))
    pause = threading.Event()
    for _ in range(3000):  # the turn is added asynchronously
        if any("Guangzhou" in t and "assistant" in t.lower() for t in texts(mos.get_all(cube_id, user))):
            break
        pause.wait(0.02)
    assert any("7 Days Inn in Guangzhou" in t for t in texts(mos.get_all(cube_id, user)))


def test_mos_chat_with_an_openai_compatible_model(client: SyncClient, unique: str) -> None:
    with chat_server() as script:
        script.say("Hilton is the one you did not choose.")
        config = {
            "user_id": f"remote_{unique}",
            "chat_model": {"backend": "openai", "config": {"model_name_or_path": script.model,
                                                          "api_base": script.url.split("?")[0][len("openai+"):]}},
        }  # fmt: skip
        remote = MOS(MOSConfig.model_validate(config), client=client)
        assert remote.mem_scheduler is None
        cube_id = f"remote_cube_{unique}"
        remote.register_mem_cube(
            GeneralMemCube(
                GeneralMemCubeConfig.model_validate({"text_mem": {"backend": "general_text", "config": {}}})
            ),
            mem_cube_id=cube_id,
        )
        remote.add(TRIP, mem_cube_id=cube_id)
        assert remote.chat("Which hotel did I not choose?") == "Hilton is the one you did not choose."
        sent = script.requests[-1]["messages"]
        assert "7 Days Inn" in sent[0]["content"] and sent[-1] == {
            "role": "user",
            "content": "Which hotel did I not choose?",
        }
        remote.chat("And the other one?")
        assert [m["role"] for m in script.requests[-1]["messages"]] == ["system", "user", "assistant", "user"]
