"""Dead letters: the one component every agent uses for records it cannot process.

A rejected record goes to ``museflow.dlq`` byte for byte, with a reason code from
:class:`DeadLetterReason`, a human-readable detail, the stage that rejected it and its source
coordinates, and is counted in ``museflow_dead_letters_total{reason,stage}``. Building or
handing over a dead letter never raises into the stream: a failure is logged and counted in
``museflow_dead_letter_failures_total{stage}`` instead.

The writer is transport-agnostic: :meth:`~DeadLetterWriter.build` encodes, the transport sends and
:meth:`~DeadLetterWriter.count` counts once the message is handed over. The hot loops produce the
message inside their batch (its transaction, exactly-once) and count it on delivery; Faust agents
await :meth:`~DeadLetterWriter.awrite` with their topic's send.

:class:`ReplaySelection` decides which dead letters ``museflow dlq replay`` re-publishes to the
events topic once their cause is fixed: those of chosen reasons, rejected in a time range, by
the router or the scorer (whose originals are events; other stages hold other records).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter

if TYPE_CHECKING:
    from museflow.contracts.serde import AvroSerde

__all__ = [
    "DEAD_LETTERS_TOTAL",
    "DEAD_LETTER_FAILURES",
    "NEVER_REPLAYED",
    "REPLAYABLE_STAGES",
    "STAGES",
    "DeadLetterMessage",
    "DeadLetterReason",
    "DeadLetterWriter",
    "ReplaySelection",
]

log = logging.getLogger(__name__)

DEAD_LETTERS_TOTAL = "museflow_dead_letters_total"
DEAD_LETTER_FAILURES = "museflow_dead_letter_failures_total"
STAGES = ("router", "scorer", "refit", "label-join", "drift", "control", "producer", "replay")
"""Stages that write dead letters; any other value is counted as ``_other`` to keep labels bounded."""

_MAX_DETAIL = 4000
REPLAYABLE_STAGES = frozenset({"router", "scorer"})
"""Stages whose dead letters hold the bytes of an event (what the events topic takes)."""


class DeadLetterReason(StrEnum):
    """Why a record became a dead letter. Values are stable: dashboards and replays key on them."""

    def __new__(cls, value: str, doc: str) -> DeadLetterReason:
        member = str.__new__(cls, value)
        member._value_ = value
        member.__doc__ = doc
        return member

    UNDECODABLE = ("undecodable", "The bytes are not a museflow Avro record: no known framing, truncated or corrupt.")
    UNKNOWN_SCHEMA = ("unknown_schema", "The framing names a schema fingerprint or registry id nobody knows.")
    WRONG_SCHEMA = ("wrong_schema", "A valid record of another type (e.g. a Label on the events topic).")
    INVALID_EVENT = ("invalid_event", "Decoded, but a field breaks the contract (empty id, bad intent, currency...).")
    INVALID_TENANT = ("invalid_tenant", "The tenant id is not ^[a-z0-9][a-z0-9-]{0,62}$ (it names a topic).")
    INVALID_AMOUNT = ("invalid_amount", "The amount is NaN, infinite, negative or implausibly large.")
    CLOCK_SKEW = ("clock_skew", "event_time is further in the future than the allowed clock skew.")
    UNKNOWN_TENANT = ("unknown_tenant", "A well-formed tenant id that is not onboarded (no route at all).")
    TENANT_MISMATCH = ("tenant_mismatch", "An event on tenant T's ingest topic (museflow.events.T) names another "
                       "tenant: never routed (only T may write that topic; the tenant field is not trusted).")
    UNKNOWN_INTENT = ("unknown_intent", "The tenant exists but has no route for this intent.")
    NO_ROUTE = ("no_route", "No route resolves for the event (e.g. the route was deleted).")
    MODEL_UNAVAILABLE = ("model_unavailable", "The routed model version is not loaded or failed to load.")
    SCORING_FAILED = ("scoring_failed", "Feature building or prediction raised for this event.")
    OVERSIZE = ("oversize", "An output of the event is larger than its topic or the producer takes (max message size).")
    INVALID_HEADERS = ("invalid_headers", "A model-topic record whose mf-* routing headers are missing or malformed.")
    UNENCODABLE = ("unencodable", "A record museflow built does not fit its own schema (a museflow bug).")
    INTERNAL_ERROR = ("internal_error", "An unexpected error; the detail holds the exception. Report it.")

    @property
    def description(self) -> str:
        """One line saying what the reason means."""
        return self.__doc__ or ""

    @classmethod
    def parse(cls, value: str | DeadLetterReason) -> DeadLetterReason:
        """The member for ``value``; unknown codes become :attr:`INTERNAL_ERROR` (never raises)."""
        member = cls._value2member_map_.get(str(value))
        return member if isinstance(member, DeadLetterReason) else cls.INTERNAL_ERROR


NEVER_REPLAYED = frozenset({DeadLetterReason.TENANT_MISMATCH.value})
"""Reasons ``museflow dlq replay`` refuses: replaying them would undo the check that made them."""


@dataclass(frozen=True, slots=True)
class ReplaySelection:
    """Dead letters of ``reasons`` that failed in ``[since_ms, until_ms)``, from a replayable stage."""

    reasons: frozenset[str]
    since_ms: int
    until_ms: int

    def __post_init__(self) -> None:
        refused = sorted(self.reasons & NEVER_REPLAYED)
        if refused:
            raise ValueError(f"dead letters of {', '.join(refused)} are never replayed: the shared events topic "
                             "would trust the tenant field that the ingest topic proved false")

    def skip(self, letter: dict[str, Any]) -> str | None:
        """None when ``letter`` (a decoded DeadLetter) is to be replayed, else why not (a count label)."""
        if letter.get("reason") not in self.reasons:
            return "another reason"
        failed_at = _millis(letter.get("failed_at"))
        if not self.since_ms <= failed_at < self.until_ms:
            return "outside the time range"
        if letter.get("stage") not in REPLAYABLE_STAGES:
            return f"stage {letter.get('stage')} (not an event)"
        if not letter.get("original_value"):
            return "empty original (a tombstone)"
        return None


def _millis(value: Any) -> int:
    """Epoch milliseconds from an int or a datetime (fastavro decodes timestamp-millis to datetimes)."""
    timestamp = getattr(value, "timestamp", None)
    return int(timestamp() * 1000) if timestamp is not None else int(value or 0)


@dataclass(frozen=True, slots=True)
class DeadLetterMessage:
    """A dead letter ready to send: destination topic, key (the original key) and Avro value."""

    topic: str
    key: bytes | None
    value: bytes
    reason: DeadLetterReason
    stage: str


AsyncSendFn = Callable[[str, bytes | None, bytes], Awaitable[object]]

_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, tuple[Counter, Counter]] = weakref.WeakKeyDictionary()


def _metrics(registry: CollectorRegistry) -> tuple[Counter, Counter]:
    """One pair of counters per registry, so several writers (router, scorer) can share one."""
    found = _METRICS.get(registry)
    if found is None:
        total = Counter(DEAD_LETTERS_TOTAL, "Records sent to the dead-letter topic, by reason code and stage.",
                        ["reason", "stage"], registry=registry)
        failures = Counter(DEAD_LETTER_FAILURES, "Dead letters that could not be built or handed to the producer.",
                           ["stage"], registry=registry)
        found = _METRICS[registry] = (total, failures)
    return found


class DeadLetterWriter:
    """Builds, counts and sends dead letters; never raises into the stream.

    ``topic`` is the DLQ topic (``settings.topics.dlq``); ``serde`` encodes ``DeadLetter``
    records (default: single-object framing); ``registry`` receives the counters.
    """

    def __init__(
        self,
        topic: str,
        *,
        serde: AvroSerde | None = None,
        registry: CollectorRegistry | None = None,
        stage: str = "router",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if serde is None:
            from museflow.contracts.serde import AvroSerde

            serde = AvroSerde.for_schema("DeadLetter")
        self.topic = topic
        self.serde = serde
        self.stage = stage
        self._clock = clock
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._total, self._failures = _metrics(self.registry)
        self._children: dict[tuple[str, str], Any] = {}
        self._failure_children: dict[str, Any] = {}
        self.counts: dict[tuple[str, str], int] = {}
        """(reason, stage) -> dead letters counted by this writer (the Prometheus counter is shared)."""
        self.failures = 0

    def build(
        self,
        value: bytes | None,
        *,
        reason: DeadLetterReason | str,
        detail: str,
        key: bytes | None = None,
        stage: str | None = None,
        source_topic: str = "",
        source_partition: int = -1,
        source_offset: int = -1,
        tenant: str | None = None,
        timestamp_ms: int | None = None,
        max_bytes: int | None = None,
    ) -> DeadLetterMessage | None:
        """The dead letter for one rejected record, or None (logged and counted) if it cannot be built.

        ``max_bytes`` bounds the encoded value (what the dead-letter topic takes): a dead letter
        that would be larger keeps only the start of the original value and its detail says so.
        """
        stage = stage or self.stage
        try:
            code = DeadLetterReason.parse(reason)
            text = str(detail)
            if code is DeadLetterReason.INTERNAL_ERROR and str(reason) != code.value:
                text = f"unknown reason code {str(reason)!r}: {text}"
            if value is None:
                text = f"{text} (the original value was null: a tombstone)"
            if len(text) > _MAX_DETAIL:
                text = text[: _MAX_DETAIL - 15] + "... (truncated)"
            record = {
                "reason": code.value,
                "detail": text,
                "stage": stage,
                "source_topic": source_topic,
                "source_partition": int(source_partition),
                "source_offset": int(source_offset),
                "original_key": None if key is None else bytes(key),
                "original_value": b"" if value is None else bytes(value),
                "failed_at": int(self._clock() * 1000),
                "tenant": tenant,
                "original_timestamp": timestamp_ms,
            }
            encoded = self.serde.encode(record)
            if max_bytes is not None and len(encoded) > max_bytes:
                encoded = self._cut(record, text, len(encoded), max_bytes)
        except Exception:
            self._failed(stage, f"building a dead letter for {source_topic}[{source_partition}]@{source_offset}")
            return None
        return DeadLetterMessage(self.topic, None if key is None else bytes(key), encoded, code, stage)

    def _cut(self, record: dict[str, Any], text: str, size: int, max_bytes: int) -> bytes:
        original: bytes = record["original_value"]
        note = (f" (the original value of {len(original):,} bytes is cut to its first {{kept:,}}: the whole dead "
                f"letter would exceed the {max_bytes:,} bytes the dead-letter topic takes)")
        kept = max(0, len(original) - (size - max_bytes) - len(note) - 32)
        record["original_value"] = original[:kept]
        record["detail"] = text[: _MAX_DETAIL - len(note) - 16] + note.format(kept=kept)
        log.warning("a %s dead letter of %d bytes keeps the first %d bytes of its original value (limit %d)",
                    record["reason"], size, kept, max_bytes)
        return self.serde.encode(record)

    def count(self, reason: DeadLetterReason | str, stage: str | None = None) -> None:
        """Count one dead letter (call it once the message is handed to a producer)."""
        try:
            code = DeadLetterReason.parse(reason).value
            label_stage = stage or self.stage
            if label_stage not in STAGES:
                label_stage = "_other"
            key = (code, label_stage)
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self._total.labels(code, label_stage)
            child.inc()
            self.counts[key] = self.counts.get(key, 0) + 1
        except Exception:  # a metrics failure must not stop the stream either
            log.exception("counting a dead letter failed; the dead letter itself was sent")

    async def awrite(self, asend: AsyncSendFn, value: bytes | None, **fields: Any) -> bool:
        """Build (as :meth:`build`), await ``asend(topic, key, value)`` (a Faust agent: its topic's ``send``), count.

        True when the message was handed over; a failure is logged and counted, never raised.
        """
        message = self.build(value, **fields)
        if message is None:
            return False
        try:
            await asend(message.topic, message.key, message.value)
        except Exception:
            self._failed(message.stage, f"sending a dead letter ({message.reason.value}) to {message.topic}")
            return False
        self.count(message.reason, message.stage)
        return True

    def _failed(self, stage: str, what: str) -> None:
        self.failures += 1
        try:
            label_stage = stage if stage in STAGES else "_other"
            child = self._failure_children.get(label_stage)
            if child is None:
                child = self._failure_children[label_stage] = self._failures.labels(label_stage)
            child.inc()
        except Exception as exc:  # a metrics failure must not stop the stream either
            log.debug("counting a dead-letter failure failed: %s", exc)
        log.error("%s failed; counted in %s, not retried", what, DEAD_LETTER_FAILURES, exc_info=True)
