import shutil
import uuid
from pathlib import Path

from memos.configs.mem_cube import GeneralMemCubeConfig
from memos.configs.mem_os import MOSConfig
from memos.mem_cube.general import GeneralMemCube
from memos.mem_os.main import MOS
from memos.mem_scheduler.schemas.message_schemas import ScheduleMessageItem
from memos.mem_scheduler.utils.db_utils import get_utc_now
from memos.mem_scheduler.utils.misc_utils import parse_yaml
from memos.mem_scheduler.schemas.task_schemas import (
    ANSWER_TASK_LABEL,
    MEM_UPDATE_TASK_LABEL,
    QUERY_TASK_LABEL,
)

config = parse_yaml(
    f"./examples/data/config/mem_scheduler/memos_config_w_scheduler.yaml"
)
mos_config = MOSConfig(**config)
mos = MOS(mos_config)

user_id = str(uuid.uuid4())
mos.create_user(user_id=user_id)

config = GeneralMemCubeConfig.from_yaml_file(
    f"./examples/data/config/mem_scheduler/mem_cube_config.yaml"
)
mem_cube_id = "mem_cube_5"
mem_cube_name_or_path = f"./outputs/mem_scheduler/{user_id}/{mem_cube_id}"

if Path(mem_cube_name_or_path).exists():
    shutil.rmtree(mem_cube_name_or_path)
    print(f"{mem_cube_name_or_path} is not empty and was removed.")

mem_cube = GeneralMemCube(config)
mem_cube.dump(mem_cube_name_or_path)

mos.register_mem_cube(
    mem_cube_name_or_path=mem_cube_name_or_path, mem_cube_id=mem_cube_id, user_id=user_id
)

def get_cache_info(cache):
    if not cache:
        return None

    num_layers = 0
    total_size_bytes = 0

    if hasattr(cache, "layers"):
        num_layers = len(cache.layers)
        for layer in cache.layers:
            if hasattr(layer, "key_cache") and layer.key_cache is not None:
                total_size_bytes += layer.key_cache.nelement() * layer.key_cache.element_size()
            if hasattr(layer, "value_cache") and layer.value_cache is not None:
                total_size_bytes += layer.value_cache.nelement() * layer.value_cache.element_size()

            if hasattr(layer, "keys") and layer.keys is not None:
                total_size_bytes += layer.keys.nelement() * layer.keys.element_size()
            if hasattr(layer, "values") and layer.values is not None:
                total_size_bytes += layer.values.nelement() * layer.values.element_size()

    elif hasattr(cache, "key_cache") and hasattr(cache, "value_cache"):
        num_layers = len(cache.key_cache)
        for k, v in zip(cache.key_cache, cache.value_cache, strict=False):
            if k is not None:
                total_size_bytes += k.nelement() * k.element_size()
            if v is not None:
                total_size_bytes += v.nelement() * v.element_size()

    return {
        "num_layers": num_layers,
        "size_bytes": total_size_bytes,
        "size_mb": f"{total_size_bytes / (1024 * 1024):.2f} MB",
    }

def custom_query_handler(messages: list[ScheduleMessageItem]):
    for msg in messages:
        print(f"\n[scheduler] user query: {msg.content}")
        new_msg = msg.model_copy(update={"label": MEM_UPDATE_TASK_LABEL})
        mos.mem_scheduler.submit_messages([new_msg])

def custom_answer_handler(messages: list[ScheduleMessageItem]):
    for msg in messages:
        print(f"\n[scheduler] LLM answer: {msg.content}")

def custom_mem_update_handler(messages: list[ScheduleMessageItem]):
    for msg in messages:
        mem_cube = mos.mem_cubes.get(msg.mem_cube_id)
        kv_mem = mem_cube.act_mem
        if mem_cube and mem_cube.text_mem:
            results = mem_cube.text_mem.search(msg.content, top_k=3)
            for mem in results:
                print(f"\n[scheduler] retrieved memory: {mem.memory}")
                print(f"\n[scheduler] converting to activation memory......")
                cache_item = kv_mem.extract(mem.memory)
                cache_item.records.text_memories = [mem.memory]
                cache_item.records.timestamp = get_utc_now()
                kv_mem.add([cache_item])
                print(f"\n[scheduler] done!")

mos.mem_scheduler.dispatcher.register_handlers(
    {
        QUERY_TASK_LABEL: custom_query_handler,
        ANSWER_TASK_LABEL: custom_answer_handler,
        MEM_UPDATE_TASK_LABEL: custom_mem_update_handler,
    }
)

messages = [
    {"role": "user", "content": "I like playing football."},
    {"role": "assistant", "content": "I like playing football too."},
]
mos.add(messages, user_id=user_id, mem_cube_id=mem_cube_id)

while True:
    user_input = input("[You] ").strip()
    print()
    response = mos.chat(user_input, user_id=user_id)
    retrieved_memories = mos.get_all(mem_cube_id=mem_cube_id, user_id=user_id)

    print(f"[Assistant] {response}")

    memories = retrieved_memories["text_mem"][0]["memories"]
    for mem in memories:
        print(f"[text memory] {mem.memory}")

    mem_cube = mos.mem_scheduler.mem_cube
    kv_mem = mem_cube.act_mem
    for cache_item in kv_mem.get_all():
        print(
            f"[activation memory] {get_cache_info(cache_item.memory)} (records: {cache_item.records})"
        )
