"""A `memos worker` process alone (no scheduler in the caller) completes a mem_update task: the built-in task
handlers come from the application layer wherever the dispatch stage is hosted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from memos.application.service import MemoryService
from memos.runtime import Runtime
from streams.settings import load_settings

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[2]


async def test_a_worker_process_completes_a_mem_update_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMOS_HOME", str(tmp_path))
    env = {**os.environ, "MEMOS_HOME": str(tmp_path), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    worker = subprocess.Popen([sys.executable, "-m", "memos", "worker", "--stages",
                               "control,projector,deriver,scheduler"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        async with Runtime(load_settings("default"), run_stages=False) as rt:
            assert rt.task_handlers, "the composition root installs the application's handlers"
            service = MemoryService(rt)
            await service.create_user("ann")
            [added] = await service.add("ann", ["ann"], [{"role": "user", "content": "My bike is a red Gazelle."}],
                                        mode="fast", async_mode="sync")  # waits on the worker's stages
            assert added["status"] == "completed" and added["memories"], added
            [task_id] = await service.submit_tasks([{"user_id": "ann", "cube_id": "ann", "label": "mem_update",
                                                     "content": "What bike do I ride?"}])
            waited = await service.wait_tasks("ann", task_id=task_id, timeout_s=180)
            assert waited.done, waited
            [task] = waited.tasks
            assert task.status == "completed", task
            assert added["memories"][0]["memory_id"] in task.result["memory_ids"]
    finally:
        worker.send_signal(signal.SIGINT)
        try:
            output, _ = worker.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            output, _ = worker.communicate()
    assert "worker stopped" in output, output[-2000:]
