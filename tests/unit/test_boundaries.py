"""The architecture and safety rules of STYLE.md, enforced on the source tree."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KAFKA_MODULES = {"faust", "aiokafka", "confluent_kafka", "mode"}
BOUNDED = ("museflow/kafka/", "museflow/cli/")


def python_files(*dirs: str) -> list[Path]:
    """The project's sources under ``dirs`` (hidden folders such as a benchmark's scratch venv skipped)."""
    return sorted(p for d in dirs for p in (ROOT / d).rglob("*.py")
                  if not any(part.startswith(".") for part in p.relative_to(ROOT / d).parts))


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", python_files("museflow"), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_never_imports_kafka_or_faust_outside_its_two_bounded_packages(path: Path) -> None:
    relative = str(path.relative_to(ROOT))
    if relative.startswith(BOUNDED):
        return
    assert not imported_roots(path) & KAFKA_MODULES, f"{relative} imports {imported_roots(path) & KAFKA_MODULES}"


@pytest.mark.parametrize("path", python_files("museflow", "agents", "bench"), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_pickle_eval_or_exec_anywhere(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    banned_modules = {"pickle", "cPickle", "dill", "joblib", "cloudpickle", "marshal", "shelve"}
    assert not imported_roots(path) & banned_modules, f"{path} imports {imported_roots(path) & banned_modules}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in {"eval", "exec", "compile", "__import__"}, (
                f"{path}:{node.lineno} calls {node.func.id}()"
            )
        if isinstance(node, ast.Attribute) and node.attr in {"load_model"} and isinstance(node.value, ast.Name):
            assert node.value.id != "joblib", f"{path}:{node.lineno} loads with joblib"


def test_the_scan_itself_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle\nfrom confluent_kafka import Producer\n")
    assert imported_roots(bad) == {"pickle", "confluent_kafka"}
