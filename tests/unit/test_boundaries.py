"""The architecture and safety rules of STYLE.md, enforced on the source tree."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KAFKA_MODULES = {"faust", "aiokafka", "confluent_kafka", "mode"}
BOUNDED = ("museflow/kafka/", "museflow/cli/")
# The layers, inside out: the pure core; museflow.kafka (clients, the batch loop, the control plane's
# writers); the Faust layer (agents/, installed as museflow.agents) and the demo and load tooling; the CLI
# on top. A layer imports only the layers inside it.
OUTER = {
    "core": {"museflow.kafka", "museflow.agents", "museflow.demo", "museflow.cli"},
    "museflow.kafka": {"museflow.agents", "museflow.demo", "museflow.cli"},
    "museflow.agents": {"museflow.demo", "museflow.cli"},
    "museflow.demo": {"museflow.agents", "museflow.cli"},
    "museflow.cli": set(),
}


def python_files(*dirs: str) -> list[Path]:
    """The project's sources under ``dirs`` (hidden folders such as a benchmark's scratch venv skipped;
    ``museflow/agents`` is a link to ``agents/``, which is scanned under its own name)."""
    return sorted(p for d in dirs for p in (ROOT / d).rglob("*.py")
                  if not any(part.startswith(".") for part in p.relative_to(ROOT / d).parts)
                  and p.relative_to(ROOT).parts[:2] != ("museflow", "agents"))


def layer_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[0] == "agents":
        return "museflow.agents"
    if len(parts) > 2 and f"museflow.{parts[1]}" in OUTER:
        return f"museflow.{parts[1]}"
    return "core"


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute (museflow has no relative imports), at any depth of the file."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


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


@pytest.mark.parametrize("path", python_files("museflow", "agents"), ids=lambda p: str(p.relative_to(ROOT)))
def test_each_layer_imports_only_the_layers_inside_it(path: Path) -> None:
    layer = layer_of(path)
    outward = sorted(m for m in imported_modules(path) if any(m == o or m.startswith(f"{o}.") for o in OUTER[layer]))
    assert not outward, f"{path.relative_to(ROOT)} ({layer}) imports {outward} from an outer layer"


def test_agents_are_installed_inside_museflow_only() -> None:
    """The wheel installs ``museflow`` alone: a top-level ``agents`` would collide with other packages'."""
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert build["packages"] == ["museflow"]
    link = ROOT / "museflow" / "agents"
    assert link.is_symlink() and link.resolve() == (ROOT / "agents").resolve()
    for path in python_files("museflow", "agents", "tests", "bench"):
        bare = sorted(m for m in imported_modules(path) if m == "agents" or m.startswith("agents."))
        assert not bare, f"{path.relative_to(ROOT)} imports {bare}: import museflow.agents"


def test_the_layering_scan_catches_an_outward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from museflow.kafka.clients import make_producer\n")
    assert "museflow.kafka.clients" in imported_modules(bad)
    assert layer_of(ROOT / "museflow" / "control" / "routing.py") == "core"
    assert layer_of(ROOT / "museflow" / "kafka" / "loop.py") == "museflow.kafka"
    assert layer_of(ROOT / "agents" / "hot.py") == "museflow.agents"


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
