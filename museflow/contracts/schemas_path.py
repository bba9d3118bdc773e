"""Where museflow's Avro schemas live: the repo's ``schemas/avro/`` or the packaged copy.

A source checkout (editable install) reads ``schemas/avro/`` next to the package; a wheel ships
the same files as ``museflow/_schemas/avro/`` (see ``pyproject.toml``).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from museflow.errors import SchemaError

__all__ = ["avro_schema_dir", "avro_schema_path", "load_avro_schema"]

_PACKAGE_DIR = Path(__file__).resolve().parent  # museflow/contracts
_CANDIDATES = (_PACKAGE_DIR.parents[1] / "schemas" / "avro", _PACKAGE_DIR.parent / "_schemas" / "avro")


def avro_schema_dir() -> Path:
    """The first directory of ``.avsc`` files found: repo checkout first, then packaged copy."""
    for candidate in _CANDIDATES:
        if candidate.is_dir():
            return candidate
    raise SchemaError(
        f"no Avro schema directory found (looked in {', '.join(str(c) for c in _CANDIDATES)}); "
        "reinstall museflow or run from a source checkout"
    )


def avro_schema_path(name: str) -> Path:
    """Path of schema ``name`` (e.g. ``TransactionEvent``), which must exist."""
    path = avro_schema_dir() / f"{name}.avsc"
    if not path.is_file():
        raise SchemaError(f"Avro schema {name!r} not found at {path}")
    return path


@lru_cache(maxsize=32)
def _load(name: str) -> str:
    return avro_schema_path(name).read_text(encoding="utf-8")


def load_avro_schema(name: str) -> dict[str, Any]:
    """The parsed JSON of schema ``name`` (a fresh dict on each call; the file is read once)."""
    try:
        schema = json.loads(_load(name))
    except json.JSONDecodeError as exc:
        raise SchemaError(f"Avro schema {name!r} is not valid JSON: {exc}") from exc
    if not isinstance(schema, dict):
        raise SchemaError(f"Avro schema {name!r} must be a JSON object, got {type(schema).__name__}")
    return schema
