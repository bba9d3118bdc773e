"""museflow's Avro contracts: load and parse the ``.avsc`` files, fingerprint them, check evolution.

Every record museflow publishes has one schema file in ``schemas/avro/`` (located by
:mod:`museflow.contracts.schemas_path`). Fingerprints follow the Avro specification: CRC-64-AVRO of the
Parsing Canonical Form, as used by single-object encoding. :func:`check_backward_compatible`
applies the Avro schema-resolution rules (new schema reads data written with the old one), so a
change that would break a running consumer is caught before it is committed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import fastavro
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from museflow.contracts.schemas_path import avro_schema_dir, load_avro_schema
from museflow.errors import SchemaError

__all__ = [
    "SCHEMA_NAMES",
    "canonical_form",
    "check_backward_compatible",
    "compatibility_problems",
    "fingerprint",
    "full_name",
    "load_schema",
    "parse_schema",
    "schema_dir_listing",
    "schema_json",
    "strip_logical_types",
]

SCHEMA_NAMES: tuple[str, ...] = (
    "TransactionEvent",
    "ScoredEvent",
    "ScoreLogBatch",
    "Label",
    "DeadLetter",
    "Route",
    "ModelDeployment",
    "QuantileMap",
    "ReferenceDistribution",
    "ContractVerdict",
)
"""Every record schema museflow ships, by file name (``schemas/avro/<name>.avsc``)."""

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_PROMOTIONS = frozenset({
    ("int", "long"), ("int", "float"), ("int", "double"), ("long", "float"), ("long", "double"),
    ("float", "double"), ("string", "bytes"), ("bytes", "string"),
})


def load_schema(name: str) -> dict[str, Any]:
    """The JSON of schema ``name`` (e.g. ``"Label"``) as a fresh dict."""
    return load_avro_schema(name)


def schema_json(schema: Mapping[str, Any]) -> str:
    """Compact JSON text of ``schema``, as registered with a schema registry."""
    return json.dumps(schema, separators=(",", ":"), sort_keys=False)


def full_name(schema: Mapping[str, Any]) -> str:
    """``namespace.name`` of a named schema."""
    name = str(schema.get("name", ""))
    namespace = schema.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


def strip_logical_types(schema: Any) -> Any:
    """``schema`` without ``logicalType`` annotations: same bytes on the wire, plain values in Python.

    museflow keeps timestamps as epoch milliseconds (``int``) in its dicts; converting them to
    ``datetime`` on every decode would cost more than the rest of the record.
    """
    if isinstance(schema, dict):
        return {k: strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [strip_logical_types(v) for v in schema]
    return schema


def parse_schema(schema: Mapping[str, Any], *, where: str = "") -> dict[str, Any]:
    """The fastavro-parsed form of ``schema``; raises :class:`SchemaError` naming ``where``."""
    try:
        parsed = fastavro.parse_schema(dict(schema))
    except Exception as exc:  # fastavro raises SchemaParseException, UnknownType, KeyError, ...
        label = where or full_name(schema) or "schema"
        raise SchemaError(f"Avro schema {label} does not parse: {type(exc).__name__}: {exc}") from exc
    if not isinstance(parsed, dict):
        raise SchemaError(f"Avro schema {where or 'schema'} must be a record, got {type(parsed).__name__}")
    return parsed


def canonical_form(schema: Mapping[str, Any]) -> str:
    """Parsing Canonical Form of ``schema`` (Avro spec: names qualified, docs and logical types dropped)."""
    return str(to_parsing_canonical_form(dict(schema)))


def fingerprint(schema: Mapping[str, Any]) -> bytes:
    """The 8-byte CRC-64-AVRO fingerprint of the canonical form, little-endian (single-object header)."""
    return _fingerprint_of(canonical_form(schema))


@lru_cache(maxsize=256)
def _fingerprint_of(canonical: str) -> bytes:
    return bytes.fromhex(str(_fastavro_fingerprint(canonical, "CRC-64-AVRO")))


def compatibility_problems(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Why a reader using ``new`` could not read data written with ``old`` (empty when it can)."""
    writer = parse_schema(old, where="old schema")
    reader = parse_schema(new, where="new schema")
    wnames: dict[str, Any] = {}
    rnames: dict[str, Any] = {}
    _collect_names(writer, wnames)
    _collect_names(reader, rnames)
    problems: list[str] = []
    _Checker(wnames, rnames).check(writer, reader, full_name(reader).rsplit(".", 1)[-1], problems)
    return problems


def check_backward_compatible(old: Mapping[str, Any], new: Mapping[str, Any], *, where: str = "") -> None:
    """Raise :class:`SchemaError` unless ``new`` can read everything written with ``old``."""
    problems = compatibility_problems(old, new)
    if problems:
        label = where or full_name(new)
        raise SchemaError(
            f"schema {label} is not backward compatible with its previous version: "
            + "; ".join(problems)
            + ". Give added fields a default, keep type changes to Avro promotions, "
            "or publish it as a new record name."
        )


def _collect_names(schema: Any, names: dict[str, Any]) -> None:
    if isinstance(schema, list):
        for branch in schema:
            _collect_names(branch, names)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "error", "enum", "fixed"):
            names[str(schema["name"])] = schema
        if kind in ("record", "error"):
            for field in schema.get("fields", ()):
                _collect_names(field["type"], names)
        elif kind == "array":
            _collect_names(schema["items"], names)
        elif kind == "map":
            _collect_names(schema["values"], names)
        elif isinstance(kind, dict | list):
            _collect_names(kind, names)


class _Checker:
    """The Avro specification's schema-resolution rules, writer = old, reader = new."""

    def __init__(self, wnames: dict[str, Any], rnames: dict[str, Any]) -> None:
        self.wnames = wnames
        self.rnames = rnames
        self.seen: set[tuple[str, str]] = set()

    def _deref(self, schema: Any, names: dict[str, Any]) -> Any:
        while True:
            if isinstance(schema, str) and schema not in _PRIMITIVES:
                schema = names.get(schema, schema)
            elif isinstance(schema, dict) and not isinstance(schema.get("type"), str | type(None)):
                schema = schema["type"]
            elif isinstance(schema, dict) and schema.get("type") in _PRIMITIVES:
                return schema["type"]
            else:
                return schema

    @staticmethod
    def _kind(schema: Any) -> str:
        if isinstance(schema, list):
            return "union"
        if isinstance(schema, str):
            return schema
        return str(schema.get("type"))

    def matches(self, writer: Any, reader: Any, path: str) -> bool:
        trial: list[str] = []
        self.check(writer, reader, path, trial)
        return not trial

    def check(self, writer: Any, reader: Any, path: str, problems: list[str]) -> None:
        w = self._deref(writer, self.wnames)
        r = self._deref(reader, self.rnames)
        wk, rk = self._kind(w), self._kind(r)
        if wk == "union":
            for branch in w:
                self.check(branch, r, path, problems)
            return
        if rk == "union":
            if not any(self.matches(w, branch, path) for branch in r):
                problems.append(f"{path}: written as {_describe(w)}, which no branch of {_describe(r)} can read")
            return
        if wk != rk:
            if (wk, rk) not in _PROMOTIONS:
                problems.append(f"{path}: type changed from {_describe(w)} to {_describe(r)} (not an Avro promotion)")
            return
        if wk in _PRIMITIVES:
            return
        if wk in ("record", "error", "enum", "fixed") and not _same_name(w, r):
            problems.append(f"{path}: named type {w['name']} became {r['name']}")
            return
        if wk in ("record", "error"):
            self._record(w, r, path, problems)
        elif wk == "enum":
            missing = [s for s in w["symbols"] if s not in r["symbols"]]
            if missing and "default" not in r:
                problems.append(f"{path}: enum symbols {missing} removed without an enum default")
        elif wk == "fixed":
            if w["size"] != r["size"]:
                problems.append(f"{path}: fixed size changed from {w['size']} to {r['size']}")
        elif wk == "array":
            self.check(w["items"], r["items"], f"{path}[]", problems)
        elif wk == "map":
            self.check(w["values"], r["values"], f"{path}{{}}", problems)

    def _record(self, w: dict[str, Any], r: dict[str, Any], path: str, problems: list[str]) -> None:
        pair = (str(w["name"]), str(r["name"]))
        if pair in self.seen:
            return
        self.seen.add(pair)
        written = {f["name"]: f for f in w.get("fields", ())}
        for field in r.get("fields", ()):
            names = [field["name"], *field.get("aliases", ())]
            source = next((written[n] for n in names if n in written), None)
            where = f"{path}.{field['name']}"
            if source is None:
                if "default" not in field:
                    problems.append(f"{where}: field added without a default (old data has no value for it)")
                continue
            self.check(source["type"], field["type"], where, problems)


def _same_name(w: Mapping[str, Any], r: Mapping[str, Any]) -> bool:
    short = str(w["name"]).rsplit(".", 1)[-1]
    accepted = {str(r["name"]).rsplit(".", 1)[-1], *(str(a).rsplit(".", 1)[-1] for a in r.get("aliases", ()))}
    return short in accepted


def _describe(schema: Any) -> str:
    if isinstance(schema, list):
        return "union[" + ", ".join(_describe(b) for b in schema) + "]"
    if isinstance(schema, str):
        return schema
    kind = schema.get("type")
    if kind in ("record", "error", "enum", "fixed"):
        return f"{kind} {schema['name']}"
    return str(kind)


def schema_dir_listing() -> list[str]:
    """Names of the ``.avsc`` files present (a check that :data:`SCHEMA_NAMES` is complete)."""
    return sorted(p.stem for p in avro_schema_dir().glob("*.avsc"))
