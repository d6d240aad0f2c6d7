"""Read the keyword arguments the seed example scripts pass to the MemOS request models, without running them."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

__all__ = ["EXAMPLES_DIR", "SEED_EXAMPLES", "request_kwargs"]

EXAMPLES_DIR = Path(__file__).resolve().parents[3] / "examples"
SEED_EXAMPLES = (
    "01_minimal_pipeline.py",
    "02_multi_source_file.py",
    "02_multi_source_mixed.py",
    "03_multi_cube.py",
)


def _literal_names(tree: ast.Module) -> dict[str, Any]:
    names: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                names[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return names


def request_kwargs(example: str, model_name: str) -> list[dict[str, Any]]:
    """Keyword arguments of every ``model_name(...)`` call in ``examples/<example>``, as Python values."""
    tree = ast.parse((EXAMPLES_DIR / example).read_text(encoding="utf-8"))
    names = _literal_names(tree)
    calls: list[dict[str, Any]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == model_name:
            kwargs: dict[str, Any] = {}
            for keyword in node.keywords:
                assert keyword.arg is not None
                if isinstance(keyword.value, ast.Name):
                    kwargs[keyword.arg] = names[keyword.value.id]
                else:
                    kwargs[keyword.arg] = ast.literal_eval(keyword.value)
            calls.append(kwargs)
    return calls
