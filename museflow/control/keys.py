"""Kafka keys of control records: what the record describes, plus a digest of its content.

Compaction keeps the last record of each key. Keyed by name alone, a bad deployment published
after a good one would erase it and a second writer's route version would erase the first's; a
worker started after the cleaner ran would then disagree with one that saw both. With the
digest in the key, distinct contents never share a key, compaction removes only exact
re-publications, and :mod:`museflow.control.state` decides between the survivors by rules that do not
depend on order. Superseded map versions are removed on purpose, by tombstones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from museflow.transform.qmap import QuantileMap

__all__ = ["control_key", "map_message", "record_digest", "value_digest"]


def value_digest(value: bytes) -> str:
    """The digest that breaks ties between records: sha256 of the bytes on the topic."""
    return hashlib.sha256(value).hexdigest()


def record_digest(record: Mapping[str, Any]) -> str:
    """sha256 of a record's canonical JSON (for a record that is not encoded yet)."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def control_key(kind: str, record: Mapping[str, Any], digest: str) -> str:
    """``<what it describes>#<digest prefix>``, e.g. ``route/acme-bank/cnp/v3#1f2e...``."""
    tag = digest[:16]
    if kind == "route":
        return f"route/{record['tenant']}/{record['intent']}/v{record['version']}#{tag}"
    if kind == "deployment":
        return f"deployment/{record['model']}@{record['version']}/{record['action']}#{tag}"
    if kind == "map":
        owner = record.get("tenant") or f"_pooled:{record['intent']}"
        return f"map/{record['model']}@{record['model_version']}/{owner}/v{record['version']}#{tag}"
    if kind == "reference":
        return f"reference/{record['name']}@{record['version']}#{tag}"
    raise ValueError(f"unknown control record kind {kind!r}")


def map_message(qmap: QuantileMap, encode: Callable[[Mapping[str, Any]], bytes]) -> tuple[str, bytes]:
    """``(Kafka key, value)`` of ``qmap`` on the maps topic: its encoded record under its content key."""
    record = qmap.to_record()
    value = encode(record)
    return control_key("map", record, value_digest(value)), value
