"""Every Avro contract parses, is documented, and evolves backward compatibly."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import avro.schema
import pytest

from museflow.contracts.schemas import (
    SCHEMA_NAMES,
    canonical_form,
    check_backward_compatible,
    compatibility_problems,
    fingerprint,
    load_schema,
    schema_dir_listing,
)
from museflow.contracts.schemas_path import avro_schema_path
from museflow.errors import SchemaError

ROOT = Path(__file__).resolve().parents[2]


def _fields(schema: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every (record name, field) pair, nested records included."""
    found: list[tuple[str, dict[str, Any]]] = []

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for branch in node:
                walk(branch)
        elif isinstance(node, dict):
            if node.get("type") == "record":
                for field in node["fields"]:
                    found.append((node["name"], field))
                    walk(field["type"])
            elif node.get("type") == "array":
                walk(node["items"])
            elif node.get("type") == "map":
                walk(node["values"])
            elif isinstance(node.get("type"), dict | list):
                walk(node["type"])

    walk(schema)
    return found


def test_the_schema_list_names_every_avsc_file() -> None:
    assert sorted(SCHEMA_NAMES) == schema_dir_listing()


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_schema_parses_with_the_avro_package(name: str) -> None:
    parsed = avro.schema.parse(avro_schema_path(name).read_text())
    assert parsed.fullname.startswith("io.museflow.")
    assert parsed.name == name


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_record_and_field_is_documented(name: str) -> None:
    schema = load_schema(name)
    assert schema.get("doc"), f"{name} has no doc"
    undocumented = [f"{record}.{field['name']}" for record, field in _fields(schema) if not field.get("doc")]
    assert not undocumented, f"fields without doc: {undocumented}"


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_fingerprint_is_crc64_avro_of_the_canonical_form_as_the_avro_package_computes_it(name: str) -> None:
    canonical = canonical_form(load_schema(name))
    assert "doc" not in canonical and "logicalType" not in canonical
    assert avro.schema.parse(canonical).fingerprint("CRC-64-AVRO") == fingerprint(load_schema(name))


def _label() -> dict[str, Any]:
    return load_schema("Label")


def test_identical_schemas_are_compatible() -> None:
    for name in SCHEMA_NAMES:
        check_backward_compatible(load_schema(name), load_schema(name))


def test_adding_a_required_field_without_a_default_fails_the_check() -> None:
    new = _label()
    new["fields"].append({"name": "source", "type": "string", "doc": "who labelled"})
    with pytest.raises(SchemaError, match=r"Label\.source: field added without a default"):
        check_backward_compatible(_label(), new)


def test_adding_a_field_with_a_default_removing_a_field_and_promoting_types_pass() -> None:
    new = _label()
    new["fields"].append({"name": "source", "type": "string", "default": "bank", "doc": "who labelled"})
    new["fields"] = [f for f in new["fields"] if f["name"] != "cohort"]
    check_backward_compatible(_label(), new)
    old = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "int"}, {"name": "s", "type": "string"}]}
    promoted = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "double"},
                                                          {"name": "s", "type": ["null", "bytes"]}]}
    check_backward_compatible(old, promoted)
    assert compatibility_problems(promoted, old)  # narrowing back is not


def test_a_type_change_that_is_not_a_promotion_fails() -> None:
    new = load_schema("Route")
    new["fields"][3]["type"]["fields"][1]["type"] = "long"  # champion.version string -> long
    assert compatibility_problems(load_schema("Route"), new) == [
        "Route.champion.version: type changed from string to long (not an Avro promotion)"
    ]


def test_removing_an_enum_symbol_needs_an_enum_default() -> None:
    old = {"type": "record", "name": "R", "fields": [
        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["a", "b"]}}]}
    new = copy.deepcopy(old)
    new["fields"][0]["type"]["symbols"] = ["a"]
    assert compatibility_problems(old, new)
    new["fields"][0]["type"]["default"] = "a"
    assert compatibility_problems(old, new) == []


def test_narrowing_a_union_fails() -> None:
    old = {"type": "record", "name": "R", "fields": [{"name": "x", "type": ["null", "string"], "default": None}]}
    new = {"type": "record", "name": "R", "fields": [{"name": "x", "type": "string"}]}
    assert compatibility_problems(old, new)


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def _previous_version(path: Path) -> str | None:
    """The most recent committed content of ``path`` that differs from the working tree."""
    relative = path.relative_to(ROOT).as_posix()
    current = path.read_text()
    for commit in _git("log", "--format=%H", "--", relative).split():
        try:
            text = _git("show", f"{commit}:{relative}")
        except subprocess.CalledProcessError:
            continue  # the file was deleted in that commit
        if json.loads(text) != json.loads(current):
            return text
    return None


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_each_schema_reads_data_written_with_its_previous_committed_version(name: str) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    path = avro_schema_path(name)
    if ROOT not in path.parents:
        pytest.skip("schemas are the packaged copy, not the checkout")
    previous = _previous_version(path)
    if previous is None:
        pytest.skip(f"{name} has no earlier committed version")
    check_backward_compatible(json.loads(previous), load_schema(name), where=f"{name}.avsc")


def test_core_records_match_the_schemas() -> None:
    from museflow.contracts.serde import Serdes
    from museflow.transform.qmap import QuantileMap
    from museflow.transform.reference import ReferenceDistribution

    serdes = Serdes()
    qmap = QuantileMap.identity("fraud-cnp", "2", "acme-bank", "card-not-present")
    assert QuantileMap.from_record(serdes.quantile_maps.decode(serdes.quantile_maps.encode(qmap.to_record()))) == qmap
    ref = ReferenceDistribution.beta("acme-cnp", 3, 2.0, 8.0)
    decoded = serdes.references.decode(serdes.references.encode(ref.to_record()))
    assert ReferenceDistribution.from_record(decoded) == ref


def test_route_records_match_the_schema() -> None:
    from museflow.contracts.serde import Serdes
    from museflow.control.routing import Candidate, ModelRef, Route

    route = Route("acme-bank", "card-not-present", ModelRef("fraud-cnp", "1"), version=4,
                  candidates=(Candidate(ModelRef("fraud-cnp", "2"), "shadow", 0.25),),
                  reference="acme-cnp@3", watch_thresholds=(0.9, 0.99), updated_at=1_700_000_000_000,
                  comment="shadow v2")
    routes = Serdes().routes
    assert Route.from_record(routes.decode(routes.encode(route.to_record()))) == route
