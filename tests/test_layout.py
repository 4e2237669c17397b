"""The package boundaries hold: the search core loads no deep-learning framework, the CLI only parses and prints."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import lookalike.index

ROOT = Path(__file__).resolve().parents[1]


def test_the_search_core_never_imports_tensorflow_or_keras():
    modules = ["lookalike.index"] + [
        f"lookalike.index.{m.name}" for m in pkgutil.iter_modules(lookalike.index.__path__)
    ]
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'gradio'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert len(modules) >= 8 and out.strip() == "[]"


def test_the_cli_imports_neither_numpy_nor_faiss():
    tree = ast.parse((ROOT / "app" / "cli.py").read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    } | {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"numpy", "faiss"}
