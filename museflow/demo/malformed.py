"""Deliberately malformed events, one kind per dead-letter path, for load tests and demos.

Each kind turns a good event into bytes the router must reject with a known reason code;
``museflow produce --bad-fraction`` mixes them into the stream and tests check that every one
of them ends up in ``museflow.dlq`` with that reason and its bytes untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from museflow.contracts.deadletter import DeadLetterReason
from museflow.contracts.serde import REGISTRY_MAGIC, SINGLE_OBJECT_MAGIC, Serdes
from museflow.errors import ConfigError

__all__ = ["BAD_KINDS", "UNKNOWN_INTENT", "UNKNOWN_TENANT", "BadEvent", "make_bad_event"]

UNKNOWN_TENANT = "ghost-bank"
UNKNOWN_INTENT = "teleportation"

BAD_KINDS: dict[str, DeadLetterReason] = {
    "random_bytes": DeadLetterReason.UNDECODABLE,
    "truncated": DeadLetterReason.UNDECODABLE,
    "unknown_schema": DeadLetterReason.UNKNOWN_SCHEMA,
    "wrong_schema": DeadLetterReason.WRONG_SCHEMA,
    "invalid_tenant": DeadLetterReason.INVALID_TENANT,
    "nan_amount": DeadLetterReason.INVALID_AMOUNT,
    "negative_amount": DeadLetterReason.INVALID_AMOUNT,
    "future_event": DeadLetterReason.CLOCK_SKEW,
    "empty_event_id": DeadLetterReason.INVALID_EVENT,
    "unknown_tenant": DeadLetterReason.UNKNOWN_TENANT,
    "unknown_intent": DeadLetterReason.UNKNOWN_INTENT,
}
"""Kind of malformed event -> the reason code the router must give it."""

_DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class BadEvent:
    """A malformed event as sent: its kind, the reason it must get, key and exact value bytes."""

    kind: str
    reason: DeadLetterReason
    key: bytes | None
    value: bytes
    event_id: str | None


def make_bad_event(kind: str, event: Mapping[str, Any], key: bytes | None, serdes: Serdes,
                   rng: np.random.Generator) -> BadEvent:
    """``event`` spoiled as ``kind`` (see :data:`BAD_KINDS`)."""
    if kind not in BAD_KINDS:
        raise ConfigError(f"unknown malformed-event kind {kind!r}; choose from {sorted(BAD_KINDS)}")
    events = serdes.events
    changed = dict(event)
    event_id: str | None = str(event.get("event_id"))
    if kind == "random_bytes":
        size = int(rng.integers(1, 200))
        raw = bytearray(rng.integers(0, 256, size=size, dtype=np.uint8).tobytes())
        while raw[0] in (SINGLE_OBJECT_MAGIC[0], REGISTRY_MAGIC[0]):
            raw[0] = int(rng.integers(1, 256))
        return BadEvent(kind, BAD_KINDS[kind], key, bytes(raw), None)
    if kind == "truncated":
        full = events.encode(event)
        return BadEvent(kind, BAD_KINDS[kind], key, full[: int(rng.integers(1, len(full)))], event_id)
    if kind == "unknown_schema":
        body = events.encode(event)[len(events.header):]
        fake = rng.integers(0, 256, size=8, dtype=np.uint8).tobytes()
        header = SINGLE_OBJECT_MAGIC + fake if events.resolver is None else REGISTRY_MAGIC + b"\x7f\xff\xff\xf0"
        return BadEvent(kind, BAD_KINDS[kind], key, header + body, event_id)
    if kind == "wrong_schema":
        label = {"event_id": event_id, "tenant": event["tenant"], "is_fraud": False,
                 "label_time": int(event["event_time"]), "event_time": None, "cohort": None}
        return BadEvent(kind, BAD_KINDS[kind], key, serdes.labels.encode(label), event_id)
    if kind == "invalid_tenant":
        changed["tenant"] = str(rng.choice(["Acme_Bank", "../etc", "acme bank", "-lead", "x" * 70, ""]))
    elif kind == "nan_amount":
        changed["amount"] = float(rng.choice([float("nan"), float("inf")]))
    elif kind == "negative_amount":
        changed["amount"] = -abs(float(event["amount"])) - 0.01
    elif kind == "future_event":
        changed["event_time"] = int(event["event_time"]) + _DAY_MS
    elif kind == "empty_event_id":
        changed["event_id"] = ""
        event_id = ""
    elif kind == "unknown_tenant":
        changed["tenant"] = UNKNOWN_TENANT
    elif kind == "unknown_intent":
        changed["intent"] = UNKNOWN_INTENT
    return BadEvent(kind, BAD_KINDS[kind], key, events.encode(changed), event_id)
