"""``MOS`` (MemOS ``memos.mem_os.main``): users, cubes, memories, chat and the scheduler in one object.

Every operation goes through the memory service of the process's runtime (``default_client()``), with
its access checks: users and cubes live in the registry stream, memories on the log and its projections.
``mem_cubes`` holds the live :class:`GeneralMemCube` objects registered in this process (their activation
memories, and the cube objects handlers receive). Differences from MemOS: an unknown user, an unknown
cube or one the user may not read (alike: NotFound), a cube it may not write (PermissionDenied), or an
unregistered cube raise errors (MemOS: ValueError or assert); registering a cube owned by another user
requires it to have been shared.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from memos.application.buckets import PREFERENCE_TYPES, TEXT_TYPES
from memos.chat import BASE_PROMPT, ChatModel, chat_model_for, generate_answer
from memos.client import SyncClient, default_client
from memos.configs.mem_cube import GeneralMemCubeConfig
from memos.configs.mem_os import MOSConfig
from memos.configs.mem_scheduler import GeneralSchedulerConfig
from memos.mem_cube.general import GeneralMemCube
from memos.mem_scheduler.general_scheduler import GeneralScheduler
from memos.mem_scheduler.schemas.message_schemas import ScheduleMessageItem
from memos.mem_scheduler.schemas.task_schemas import ANSWER_TASK_LABEL, QUERY_TASK_LABEL
from memos.memories.textual.item import TextualMemoryItem
from schemas.errors import NotFound, ValidationFailed

__all__ = ["MOS", "DOC_EXTENSIONS"]

logger = logging.getLogger(__name__)

DOC_EXTENSIONS = {".txt", ".md", ".markdown", ".pdf", ".json", ".html", ".htm", ".docx", ".csv"}
"""Files ``add(doc_path=...)`` reads from a folder."""


def _role(role: str | Enum) -> Literal["user", "admin"]:
    value = str(role.value if isinstance(role, Enum) else role).lower()
    return "admin" if value in ("admin", "root") else "user"


def _relativity(memory: dict[str, Any]) -> float:
    return -float(memory.get("metadata", {}).get("relativity") or 0.0)


class MOS:
    """The memory OS object of MemOS's examples (see the module doc)."""

    def __init__(self, config: MOSConfig, *, client: SyncClient | None = None) -> None:
        self.config = config
        self.user_id = config.user_id
        self.session_id = config.session_id
        self.client = client or default_client()
        self.service = self.client.service
        self.mem_cubes: dict[str, GeneralMemCube] = {}
        self.chat_history_manager: dict[str, list[dict[str, str]]] = {}
        self.scheduler_wait_s = 120.0
        """How long ``chat`` waits for the query's scheduled work (mem_update) before answering."""
        self._chat_llm: ChatModel | None = None
        self._call(self.service.create_user(self.user_id, role="admin" if self.user_id == "root" else "user"))
        self._mem_scheduler: GeneralScheduler | None = None
        if config.enable_mem_scheduler:
            section = config.mem_scheduler.config if config.mem_scheduler is not None else None
            scheduler_config = section if isinstance(section, GeneralSchedulerConfig) else None
            self._mem_scheduler = GeneralScheduler(scheduler_config, client=self.client)
            self._mem_scheduler.mem_cubes = self.mem_cubes
            self._mem_scheduler.start()
        logger.info("mos_started user=%s scheduler=%s", self.user_id, self._mem_scheduler is not None)

    def _call(self, coro: Any) -> Any:
        return self.client.call(coro)

    @property
    def mem_scheduler(self) -> GeneralScheduler | None:
        """The scheduler, when the config enables it."""
        if self._mem_scheduler is not None:
            self._mem_scheduler.mem_cubes = self.mem_cubes
        return self._mem_scheduler

    def mem_scheduler_on(self) -> bool:
        """(Re)install the scheduler's handlers; False when the config has no scheduler."""
        if self._mem_scheduler is None:
            return False
        self._mem_scheduler.start()
        return True

    def mem_scheduler_off(self) -> bool:
        """Remove the scheduler's handlers; False when there is no scheduler."""
        if self._mem_scheduler is None:
            return False
        self._mem_scheduler.stop()
        return True

    @property
    def chat_llm(self) -> ChatModel:
        """The chat model of ``config.chat_model`` (loaded on first use)."""
        if self._chat_llm is None:
            self._chat_llm = chat_model_for(self.config.chat_model)
        return self._chat_llm

    # --- users and cubes ------------------------------------------------------------------------------

    def _user(self, user_id: str | None) -> str:
        target = user_id if user_id is not None else self.user_id
        if not self._call(self.service.user_exists(target)):
            raise NotFound(f"user {target!r} does not exist; create it with MOS.create_user", field="user_id")
        return target

    def _readable(self, user_id: str) -> list[str]:
        return [c.cube_id for c in self._call(self.service.list_cubes(user_id))]

    def _cube_for(self, user_id: str, mem_cube_id: str | None) -> str:
        if mem_cube_id is not None:
            return mem_cube_id
        readable = self._readable(user_id)
        registered = [c for c in readable if c in self.mem_cubes]
        if not (registered or readable):
            raise NotFound(f"user {user_id!r} has no cube; register one first", field="mem_cube_id")
        return (registered or readable)[0]

    def create_user(self, user_id: str, role: str | Enum = "user", user_name: str | None = None) -> str:
        """Register a user (no-op when it exists); returns its id."""
        self._call(self.service.create_user(user_id, user_name=user_name or user_id, role=_role(role)))
        return user_id

    def list_users(self) -> list[dict[str, Any]]:
        """Every registered user."""
        return [{**asdict(u), "is_active": True} for u in self._call(self.service.list_users())]

    def get_user_info(self, user_id: str | None = None) -> dict[str, Any]:
        """A user and the cubes it may use (``is_loaded``: registered in this MOS)."""
        target = self._user(user_id)
        user = asdict(self._call(self.service.get_user(target)))
        cubes = [
            {**asdict(c), "is_loaded": c.cube_id in self.mem_cubes} for c in self._call(self.service.list_cubes(target))
        ]
        return {**user, "accessible_cubes": cubes}

    def create_cube_for_user(
        self, cube_name: str, owner_id: str, cube_path: str | None = None, cube_id: str | None = None
    ) -> str:
        """Create a cube owned by ``owner_id``; returns its id."""
        new_id = cube_id or str(uuid.uuid4())
        self._call(
            self.service.create_cube(
                new_id,
                owner_id=self._user(owner_id),
                cube_name=cube_name,
                config={"cube_path": cube_path} if cube_path else None,
            )
        )
        return new_id

    def share_cube_with_user(
        self,
        cube_id: str,
        target_user_id: str,
        *,
        owner_id: str | None = None,
        access: Literal["read", "write", "none"] = "read",
    ) -> bool:
        """Let ``target_user_id`` read (or, ``access='write'``, write) a cube; acts as its owner by default."""
        owner = owner_id or self._call(self.service.owner_of(cube_id))
        self._call(self.service.share_cube(cube_id, owner_id=owner, user_id=target_user_id, access=access))
        return True

    def register_mem_cube(
        self,
        mem_cube_name_or_path: str | GeneralMemCube,
        mem_cube_id: str | None = None,
        user_id: str | None = None,
        **_: Any,
    ) -> None:
        """Register a cube (a dumped folder, a cube object, or an existing cube id) for a user.

        Creates the cube in the registry when new (owned by the user); an existing cube must be readable
        by the user. A loaded folder's memories are imported (idempotent by memory id).
        """
        target = self._user(user_id)
        source = mem_cube_name_or_path
        name = source.cube_id if isinstance(source, GeneralMemCube) else source
        cube_id = mem_cube_id or name
        exists = self._call(self.service.cube_exists(cube_id))
        if exists:
            self._call(self.service.check_read(target, cube_id))  # NotFound, as for an unknown cube
        cube = self.mem_cubes.get(cube_id)
        if cube is None:
            cube = self._cube_object(source, exists=exists)
        if not exists:
            backends = {
                slot: getattr(cube.config, slot).backend for slot in ("text_mem", "act_mem", "pref_mem")
            }
            self._call(self.service.create_cube(cube_id, owner_id=target, cube_name=cube_id, config=backends))
        if cube_id not in self.mem_cubes:
            imported = cube.bind(cube_id, target, self.client)
            self.mem_cubes[cube_id] = cube
            logger.info("mem_cube_registered cube=%s user=%s imported=%d", cube_id, target, len(imported))
        if self._mem_scheduler is not None:
            self._mem_scheduler.mem_cube = cube
            self._mem_scheduler.current_mem_cube_id = cube_id

    @staticmethod
    def _cube_object(source: str | GeneralMemCube, *, exists: bool) -> GeneralMemCube:
        if isinstance(source, GeneralMemCube):
            return source
        if Path(source).is_dir():
            return GeneralMemCube.init_from_dir(source)
        if exists:  # a cube known to the registry but not dumped here: plain text memory
            config = {"cube_id": source, "text_mem": {"backend": "general_text", "config": {}}}
            return GeneralMemCube(GeneralMemCubeConfig.model_validate(config))
        raise NotFound(f"no MemCube folder or cube named {source!r}", field="mem_cube_name_or_path")

    def unregister_mem_cube(self, mem_cube_id: str, user_id: str | None = None) -> None:
        """Drop a cube from this MOS (its data stays on the log)."""
        if mem_cube_id not in self.mem_cubes:
            raise NotFound(f"MemCube {mem_cube_id!r} is not registered", field="mem_cube_id")
        cube = self.mem_cubes.pop(mem_cube_id)
        if self._mem_scheduler is not None and self._mem_scheduler.current_mem_cube is cube:
            self._mem_scheduler.current_mem_cube = None
            self._mem_scheduler.current_mem_cube_id = None

    # --- memories -------------------------------------------------------------------------------------

    def add(
        self,
        messages: list[dict[str, Any]] | str | None = None,
        memory_content: str | None = None,
        doc_path: str | None = None,
        mem_cube_id: str | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        **_: Any,
    ) -> list[dict[str, Any]]:
        """Add messages, a text, or documents (a file or folder) to a cube; returns the memories added."""
        if messages is None and memory_content is None and doc_path is None:
            raise ValidationFailed("give messages, memory_content or doc_path", field="messages")
        target = self._user(user_id)
        cube_id = self._cube_for(target, mem_cube_id)
        if not self.config.enable_textual_memory:
            logger.info("add skipped: textual memory is disabled")
            return []
        batches: list[list[dict[str, Any]]] = []
        if messages is not None:
            batches.append(
                [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
            )
        if memory_content is not None:
            batches.append([{"role": "user", "content": memory_content}])
        if doc_path is not None:
            batches.append([{"role": "user", "content": self._documents(doc_path)}])
        added: list[dict[str, Any]] = []
        for batch in batches:
            results = self._call(
                self.service.add(
                    target, [cube_id], batch, session_id=session_id or self.session_id, auto_create=False,
                    origin="local",
                )
            )
            added += [m for r in results for m in r["memories"]]
        return added

    @staticmethod
    def _documents(doc_path: str) -> list[dict[str, Any]]:
        path = Path(doc_path)
        files = (
            [path]
            if path.is_file()
            else sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in DOC_EXTENSIONS)
        )
        if not files:
            raise NotFound(f"no documents found at {doc_path!r}", field="doc_path")
        return [{"type": "file", "file": {"filename": f.name, "file_data": str(f.resolve())}} for f in files]

    def search(
        self,
        query: str,
        user_id: str | None = None,
        install_cube_ids: list[str] | None = None,
        top_k: int | None = None,
        mode: str = "fast",
        session_id: str | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        """Search the user's cubes (or ``install_cube_ids``): MemOS's ``text_mem``/``act_mem``/``para_mem``/
        ``pref_mem`` buckets, one entry per cube with TextualMemoryItem objects."""
        target = self._user(user_id)
        cubes = list(
            dict.fromkeys(install_cube_ids if install_cube_ids is not None else self._readable(target))
        )
        result: dict[str, Any] = {"text_mem": [], "act_mem": [], "para_mem": [], "pref_mem": []}
        if cubes and self.config.enable_textual_memory:
            limit = top_k or self.config.top_k
            data = self._call(self.service.search(
                target, cubes, query, top_k=limit, mode=mode, session_id=session_id, include_preference=True,
                pref_top_k=limit, search_tool_memory=False, include_skill_memory=False,
            ))  # fmt: skip
            prefs = {e["cube_id"]: e["memories"] for e in data.get("pref_mem", [])}
            for entry in data.get("text_mem", []):
                found = list(entry["memories"])
                if not self.config.enable_preference_memory:  # preferences are text memories then
                    found = sorted([*found, *prefs.get(entry["cube_id"], [])], key=_relativity)[:limit]
                items = [TextualMemoryItem.from_dict(m) for m in found]
                result["text_mem"].append({"cube_id": entry["cube_id"], "memories": items})
            if self.config.enable_preference_memory:
                result["pref_mem"] = [
                    {"cube_id": c, "memories": [TextualMemoryItem.from_dict(m) for m in ms]}
                    for c, ms in prefs.items()
                ]
        result["act_mem"] = self._act_mem_entries(cubes)
        return result

    def _act_mem_entries(self, cube_ids: list[str]) -> list[dict[str, Any]]:
        if not self.config.enable_activation_memory:
            return []
        return [
            {"cube_id": c, "memories": self.mem_cubes[c].act_mem.get_all()}
            for c in cube_ids
            if c in self.mem_cubes and self.mem_cubes[c].act_mem is not None
        ]

    def get(self, mem_cube_id: str, memory_id: str, user_id: str | None = None) -> TextualMemoryItem:
        """One memory of a cube; NotFound otherwise."""
        view = self._call(self.service.get_memory(self._user(user_id), mem_cube_id, memory_id))
        return TextualMemoryItem.from_dict(view)

    def get_all(self, mem_cube_id: str | None = None, user_id: str | None = None) -> dict[str, Any]:
        """Every current text memory of a cube (``text_mem``), its activation memory and ``para_mem``."""
        target = self._user(user_id)
        cube_id = self._cube_for(target, mem_cube_id)
        result: dict[str, Any] = {"text_mem": [], "act_mem": [], "para_mem": []}
        if self.config.enable_textual_memory:
            types = TEXT_TYPES if self.config.enable_preference_memory else TEXT_TYPES + PREFERENCE_TYPES
            views = self._call(self.service.get_all(target, cube_id, memory_types=list(types)))
            result["text_mem"].append(
                {"cube_id": cube_id, "memories": [TextualMemoryItem.from_dict(v) for v in views]}
            )
        result["act_mem"] = self._act_mem_entries([cube_id])
        return result

    def delete(self, mem_cube_id: str, memory_id: str, user_id: str | None = None) -> None:
        """Retire one memory of a cube."""
        self._call(self.service.delete(self._user(user_id), mem_cube_id, [memory_id]))

    def delete_all(self, mem_cube_id: str | None = None, user_id: str | None = None) -> None:
        """Retire every current memory of a cube."""
        target = self._user(user_id)
        self._call(self.service.delete_all(target, self._cube_for(target, mem_cube_id)))

    def dump(self, dump_dir: str, user_id: str | None = None, mem_cube_id: str | None = None) -> None:
        """Dump a registered cube to a folder (see ``GeneralMemCube.dump``)."""
        cube_id = self._cube_for(self._user(user_id), mem_cube_id)
        if cube_id not in self.mem_cubes:
            raise NotFound(f"MemCube {cube_id!r} is not registered", field="mem_cube_id")
        self.mem_cubes[cube_id].dump(dump_dir)

    # --- chat -----------------------------------------------------------------------------------------

    def clear_messages(self, user_id: str | None = None) -> None:
        """Forget the chat history of a user."""
        self.chat_history_manager.pop(user_id if user_id is not None else self.user_id, None)

    def _schedule(self, user_id: str, cube_id: str, label: str, content: str, turn: str) -> list[str]:
        scheduler = self._mem_scheduler
        if scheduler is None:
            return []
        message = ScheduleMessageItem(
            user_id=user_id,
            mem_cube_id=cube_id,
            mem_cube=self.mem_cubes.get(cube_id),
            label=label,
            content=content,
            task_id=turn,
            session_id=self.session_id,
        )
        return scheduler.submit_messages([message])

    def chat(self, query: str, user_id: str | None = None, base_prompt: str | None = None, **_: Any) -> str:
        """Answer with the user's memories; with the scheduler, a ``query`` task runs first (its
        ``mem_update`` warms the cube's KV cache) and an ``answer`` task records the response."""
        target = self._user(user_id)
        readable = self._readable(target)
        registered = [c for c in readable if c in self.mem_cubes]
        current = self._mem_scheduler.current_mem_cube_id if self._mem_scheduler is not None else None
        cube_id = current if current in registered else (registered[0] if registered else None)
        turn = uuid.uuid4().hex
        if (
            cube_id is not None
            and query.strip()
            and self._schedule(target, cube_id, QUERY_TASK_LABEL, query, turn)
        ):
            try:
                self._mem_scheduler.wait(business_task_id=turn, timeout_s=self.scheduler_wait_s)  # type: ignore[union-attr]
            except TimeoutError as exc:
                logger.warning("chat continues without the scheduled work: %s", exc)
        memories: list[str] = []
        if readable and query.strip() and self.config.enable_textual_memory:
            found = self.search(query, user_id=target, install_cube_ids=readable)
            memories = [m.memory for e in [*found["text_mem"], *found["pref_mem"]] for m in e["memories"]]
        cube = self.mem_cubes.get(cube_id) if cube_id is not None else None
        warm = cube.act_mem if cube is not None and self.config.enable_activation_memory else None
        history = self.chat_history_manager.setdefault(target, [])
        llm_config = self.config.chat_model.config
        response = generate_answer(
            self.chat_llm, query, memories, client=self.client, history=history[-2 * self.config.max_turns_window:],
            system_prompt=base_prompt or BASE_PROMPT, warm=warm, cube_id=cube_id,
            max_tokens=getattr(llm_config, "max_tokens", None), temperature=getattr(llm_config, "temperature", None),
        )  # fmt: skip
        history += [{"role": "user", "content": query}, {"role": "assistant", "content": response}]
        if cube_id is not None:
            self._schedule(target, cube_id, ANSWER_TASK_LABEL, response, turn)
        return response
