"""The TransactionEvent contract beyond its Avro types: the router's accept/reject check and the event key.

Avro guarantees types; :func:`validate_event` guarantees meaning: a tenant id safe to put in a
topic name, a finite non-negative amount, an event time not from the future, ids present. The
router (:class:`~museflow.runtime.pipeline.RouterStep`) turns a refusal into a dead letter with its
reason code.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any

from museflow.contracts.deadletter import DeadLetterReason
from museflow.errors import ValidationError

__all__ = [
    "DEFAULT_LIMITS",
    "NAME_PATTERN",
    "EventLimits",
    "event_key",
    "validate_event",
]

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
"""Tenant, intent and model names: they become topic names, group prefixes and metric labels, so nothing
else is allowed (the one definition; routes and model specs check against it too)."""

_CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True)
class EventLimits:
    """Bounds a valid event stays within."""

    max_amount: float = 1e9
    max_future_skew_ms: int = 5 * 60 * 1000
    max_id_length: int = 128


DEFAULT_LIMITS = EventLimits()


def event_key(event: Mapping[str, Any]) -> bytes:
    """The partitioning key of an event: card id, else account id, else event id (UTF-8).

    Producers key with it and the router keys an unkeyed event's forwards with it, so one entity's
    events stay on one partition (and in order) end to end.
    """
    key = event.get("card_id") or event.get("account_id") or event.get("event_id") or ""
    return str(key).encode("utf-8")


def validate_event(
    event: Mapping[str, Any],
    *,
    now_ms: int | None = None,
    limits: EventLimits = DEFAULT_LIMITS,
    tenants: Container[str] | None = None,
    intents: Container[str] | None = None,
) -> None:
    """Raise :class:`ValidationError` (``reason`` = a dead-letter code) unless ``event`` is acceptable.

    ``tenants`` / ``intents``, when given, are the onboarded ones (``unknown_tenant`` /
    ``unknown_intent`` otherwise); the router passes what its routes know.
    """
    event_id = event.get("event_id")
    if not isinstance(event_id, str) or not event_id or len(event_id) > limits.max_id_length:
        raise ValidationError(
            f"event_id {event_id!r} must be a non-empty string of at most {limits.max_id_length} characters",
            reason=DeadLetterReason.INVALID_EVENT.value,
        )
    tenant = event.get("tenant")
    if not isinstance(tenant, str) or not NAME_PATTERN.fullmatch(tenant):
        raise ValidationError(
            f"event {event_id}: tenant {tenant!r} must match {NAME_PATTERN.pattern} (it names a topic)",
            reason=DeadLetterReason.INVALID_TENANT.value,
        )
    intent = event.get("intent")
    if not isinstance(intent, str) or not NAME_PATTERN.fullmatch(intent):
        raise ValidationError(
            f"event {event_id}: intent {intent!r} must match {NAME_PATTERN.pattern}",
            reason=DeadLetterReason.INVALID_EVENT.value,
        )
    amount = event.get("amount")
    if (
        not isinstance(amount, int | float) or isinstance(amount, bool)
        or not math.isfinite(amount) or amount < 0 or amount > limits.max_amount
    ):
        raise ValidationError(
            f"event {event_id}: amount {amount!r} must be finite, >= 0 and <= {limits.max_amount:g}",
            reason=DeadLetterReason.INVALID_AMOUNT.value,
        )
    currency = event.get("currency")
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise ValidationError(
            f"event {event_id}: currency {currency!r} must be an ISO 4217 code such as EUR",
            reason=DeadLetterReason.INVALID_EVENT.value,
        )
    event_time = event.get("event_time")
    if not isinstance(event_time, int) or event_time < 0:
        raise ValidationError(
            f"event {event_id}: event_time {event_time!r} must be epoch milliseconds >= 0",
            reason=DeadLetterReason.INVALID_EVENT.value,
        )
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if event_time - now > limits.max_future_skew_ms:
        raise ValidationError(
            f"event {event_id}: event_time is {(event_time - now) / 1000:.0f}s in the future "
            f"(allowed skew {limits.max_future_skew_ms / 1000:.0f}s); check the producer's clock",
            reason=DeadLetterReason.CLOCK_SKEW.value,
        )
    attributes = event.get("attributes") or {}
    for name, value in attributes.items():
        if isinstance(value, float) and math.isinf(value):
            raise ValidationError(
                f"event {event_id}: attribute {name} is {value} (NaN means missing; infinity is not allowed)",
                reason=DeadLetterReason.INVALID_EVENT.value,
            )
    if tenants is not None and tenant not in tenants:
        raise ValidationError(
            f"event {event_id}: tenant {tenant!r} is not onboarded (no route for any intent)",
            reason=DeadLetterReason.UNKNOWN_TENANT.value,
        )
    if intents is not None and intent not in intents:
        raise ValidationError(
            f"event {event_id}: intent {intent!r} is not routed for tenant {tenant}",
            reason=DeadLetterReason.UNKNOWN_INTENT.value,
        )
