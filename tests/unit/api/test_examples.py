"""The example scripts are the seed's code, unchanged, and every name they import from us exists."""

from __future__ import annotations

import ast
import importlib
import re

import pytest

from tests.unit.api.example_calls import EXAMPLES_DIR

# The seed page lives beside the repository (CI clones the repository next to a copy of shared/).
SEED_DOC = EXAMPLES_DIR.parent.parent / "shared" / "seed" / "EXAMPLES.md"
# Position of each script's code block among the ```python blocks of the seed page (block 4 is Example 4).
SCRIPTS = {
    "01_minimal_pipeline.py": 0,
    "02_multi_source_file.py": 1,
    "02_multi_source_mixed.py": 2,
    "03_multi_cube.py": 3,
    "05_scheduler.py": 5,
}
# Modules these tests can import now; the runtime ones (routers, MOS, GeneralMemCube) are checked by the
# integration tests that run the examples.
MODEL_MODULES = (
    "memos.api.product_models",
    "memos.configs.mem_cube",
    "memos.configs.mem_os",
    "memos.mem_scheduler.schemas.message_schemas",
    "memos.mem_scheduler.schemas.task_schemas",
    "memos.mem_scheduler.utils.db_utils",
    "memos.mem_scheduler.utils.misc_utils",
)


@pytest.mark.parametrize(("script", "block"), sorted(SCRIPTS.items()))
def test_script_is_the_seed_code_byte_for_byte(script: str, block: int) -> None:
    assert SEED_DOC.is_file(), f"seed page {str(SEED_DOC)!r} is missing: put shared/ beside the repository"
    blocks = re.findall(r"^```python\n(.*?)^```$", SEED_DOC.read_text(encoding="utf-8"), flags=re.S | re.M)
    assert (EXAMPLES_DIR / script).read_text(encoding="utf-8") == blocks[block]


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_imported_model_names_exist(script: str) -> None:
    tree = ast.parse((EXAMPLES_DIR / script).read_text(encoding="utf-8"))
    checked = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in MODEL_MODULES:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module}.{alias.name}"
                checked += 1
    assert checked > 0


def test_scheduler_example_reads_the_yaml_files_we_ship() -> None:
    source = (EXAMPLES_DIR / "05_scheduler.py").read_text(encoding="utf-8")
    for name in ("memos_config_w_scheduler.yaml", "mem_cube_config.yaml"):
        assert f"./examples/data/config/mem_scheduler/{name}" in source
        assert (EXAMPLES_DIR / "data" / "config" / "mem_scheduler" / name).is_file()
