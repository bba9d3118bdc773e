"""Publishing synthetic load: transactions, delayed labels and malformed events (``museflow produce``).

:func:`produce_events` is the whole load generator behind the CLI, the integration tests, the
benchmark and the demo. Events are keyed by card (account when there is no card) so per-entity
order holds; the producer is idempotent with ``acks=all``; every delivery is accounted for in
the returned :class:`ProduceSummary` (nothing is dropped silently).

Labels are a real delayed stream: the label of an event is published ``label_delay_s`` after
the event was sent. When the run ends with labels still pending, ``labels_at_exit="wait"``
(default) keeps publishing them as they fall due; ``"flush"`` publishes them at once (they then
arrive early, and the summary says how many). An interrupt (Ctrl-C) always flushes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from museflow.config import Settings
from museflow.contracts.serde import Serdes
from museflow.contracts.topics import core_topics
from museflow.contracts.validation import event_key
from museflow.demo.loadgen import TransactionGenerator
from museflow.demo.malformed import BAD_KINDS, BadEvent, make_bad_event
from museflow.errors import BrokerError, ConfigError
from museflow.kafka.admin import ensure_topics
from museflow.kafka.clients import DeliveryReport, KafkaException, Producer, make_producer

__all__ = ["ProduceProgress", "ProduceSummary", "TokenBucket", "produce_events"]

log = logging.getLogger(__name__)

_LABEL_EXIT = ("wait", "flush")


class TokenBucket:
    """Paces sends at ``rate`` per second with a small burst allowance (virtual scheduling)."""

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ConfigError(f"rate must be > 0 events/s, got {rate}")
        self.rate = rate
        self.burst = max(1.0, rate * 0.05) if burst is None else max(1.0, burst)
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()

    def reserve(self, n: float = 1.0) -> float:
        """Take ``n`` tokens; return how many seconds to wait before using them (0 = now)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate) - n
        self._last = now
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


@dataclass(frozen=True)
class ProduceProgress:
    """A snapshot for progress bars."""

    sent: int
    acked: int
    failed: int
    elapsed_s: float
    target: int | None
    labels_sent: int
    labels_pending: int


@dataclass
class ProduceSummary:
    """What a :func:`produce_events` run published and what the broker acknowledged."""

    events_topic: str
    labels_topic: str | None
    sent: int = 0
    acked: int = 0
    failed: int = 0
    good: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    bad_by_kind: dict[str, int] = field(default_factory=dict)
    labels_sent: int = 0
    labels_acked: int = 0
    labels_failed: int = 0
    labels_flushed_early: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)
    """The good events sent, in order (only with ``keep=True``)."""
    bad: list[BadEvent] = field(default_factory=list)
    """Every malformed event sent, with the reason it must get (only with ``keep=True``)."""
    labels: list[dict[str, Any]] = field(default_factory=list)
    """The labels sent (only with ``keep=True``)."""

    @property
    def bad_total(self) -> int:
        return sum(self.bad_by_kind.values())

    @property
    def achieved_rate(self) -> float:
        """Acknowledged events per second over the run."""
        return self.acked / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def ok(self) -> bool:
        """True when every event and label sent was acknowledged."""
        return self.failed == 0 and self.labels_failed == 0 and self.acked == self.sent \
            and self.labels_acked == self.labels_sent


def produce_events(
    settings: Settings,
    generator: TransactionGenerator,
    count: int | None = None,
    *,
    duration_s: float | None = None,
    rate: float = 0.0,
    labels: bool = False,
    label_delay_s: float = 0.0,
    labels_at_exit: str = "wait",
    bad_fraction: float = 0.0,
    bad_kinds: Sequence[str] | None = None,
    seed: int = 0,
    serdes: Serdes | None = None,
    keep: bool = False,
    chunk: int = 500,
    progress: Callable[[ProduceProgress], None] | None = None,
    stop: threading.Event | None = None,
    producer: Producer | None = None,
    flush_timeout_s: float = 60.0,
) -> ProduceSummary:
    """Publish ``count`` events (or for ``duration_s``, or until ``stop``) to the events topic.

    ``rate`` is events/s (0 = as fast as the producer goes); ``bad_fraction`` of the messages
    are malformed (kinds from :data:`~museflow.demo.malformed.BAD_KINDS`, chosen uniformly); with
    ``labels`` each good event's label goes to the labels topic ``label_delay_s`` later.
    Creates the topics it writes if they are missing. Returns the summary; delivery failures
    are counted there, never raised.
    """
    if count is not None and count < 0:
        raise ConfigError(f"count must be >= 0, got {count}")
    if duration_s is not None and duration_s < 0:
        raise ConfigError(f"duration must be >= 0 seconds, got {duration_s}")
    if not 0.0 <= bad_fraction <= 1.0:
        raise ConfigError(f"bad_fraction must be in [0, 1], got {bad_fraction}")
    if rate < 0 or label_delay_s < 0:
        raise ConfigError(f"rate and label delay must be >= 0, got {rate} and {label_delay_s}")
    if labels_at_exit not in _LABEL_EXIT:
        raise ConfigError(f"labels_at_exit must be one of {_LABEL_EXIT}, got {labels_at_exit!r}")
    kinds = list(bad_kinds) if bad_kinds is not None else list(BAD_KINDS)
    unknown = [k for k in kinds if k not in BAD_KINDS]
    if unknown or not kinds:
        raise ConfigError(f"bad kinds {unknown or kinds} are not among {sorted(BAD_KINDS)}")
    if chunk < 1:
        raise ConfigError(f"chunk must be >= 1, got {chunk}")

    topics = settings.topics
    wanted = {topics.events} | ({topics.labels} if labels else set())
    ensure_topics(settings, [spec for spec in core_topics(settings) if spec.name in wanted])
    serdes = serdes if serdes is not None else _serdes(settings)
    producer = producer if producer is not None else make_producer(settings)
    summary = ProduceSummary(topics.events, topics.labels if labels else None)
    run = _Run(summary, producer, serdes, DeliveryReport(), DeliveryReport(), keep)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x6D616C66]))
    bucket = TokenBucket(rate) if rate > 0 else None
    gen_rate = rate if rate > 0 else max(generator.rate, 10_000.0)
    start = time.monotonic()
    deadline = None if duration_s is None else start + duration_s
    last_progress = 0.0
    try:
        while not (stop is not None and stop.is_set()):
            remaining = None if count is None else count - summary.sent
            if remaining is not None and remaining <= 0:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            n = chunk if remaining is None else min(chunk, remaining)
            if bucket is not None:
                n = min(n, max(1, int(rate)))
            batch = generator.generate(n, start_ms=int(time.time() * 1000), rate=gen_rate)
            bad_mask = rng.random(n) < bad_fraction if bad_fraction > 0 else np.zeros(n, dtype=bool)
            messages = run.prepare(batch, bad_mask, kinds, rng, label_delay_s)
            for message in messages:
                if bucket is not None:
                    wait = bucket.reserve()
                    if wait > 0:
                        producer.poll(wait)
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if stop is not None and stop.is_set():
                    break
                run.send_event(message)
                run.send_due_labels(time.monotonic())
                now = time.monotonic()
                if progress is not None and now - last_progress >= 0.2:
                    last_progress = now
                    progress(run.progress(now - start, count))
            producer.poll(0)
        if labels_at_exit == "wait":
            while run.pending_labels and not (stop is not None and stop.is_set()):
                run.send_due_labels(time.monotonic())
                if progress is not None:
                    progress(run.progress(time.monotonic() - start, count))
                if run.pending_labels:
                    producer.poll(max(0.0, min(0.2, run.pending_labels[0][0] - time.monotonic())))
    except KeyboardInterrupt:
        summary.interrupted = True
        log.warning("interrupted: publishing pending labels now and waiting for acknowledgements")
    except KafkaException as exc:
        raise BrokerError(f"producing to {topics.events} on {settings.bootstrap_servers}: {exc}") from exc
    finally:
        run.flush_labels()
        summary.elapsed_s = time.monotonic() - start
        left = producer.flush(flush_timeout_s)
        run.finish(left)
        if progress is not None:
            progress(run.progress(summary.elapsed_s, count))
    return summary


def _serdes(settings: Settings) -> Serdes:
    from museflow.kafka.schema_registry import serdes_from_settings

    return serdes_from_settings(settings)


@dataclass(frozen=True, slots=True)
class _Message:
    key: bytes | None
    value: bytes
    bad: BadEvent | None
    event: dict[str, Any] | None
    label: tuple[bytes, bytes, dict[str, Any]] | None


class _Run:
    """The mutable state of one produce run (kept out of the loop for readability)."""

    def __init__(self, summary: ProduceSummary, producer: Producer, serdes: Serdes,
                 events_report: DeliveryReport, labels_report: DeliveryReport, keep: bool) -> None:
        self.summary = summary
        self.producer = producer
        self.serdes = serdes
        self.events_report = events_report
        self.labels_report = labels_report
        self.keep = keep
        self.pending_labels: deque[tuple[float, bytes, bytes, dict[str, Any]]] = deque()
        self.label_delay_s = 0.0

    def prepare(self, batch: Sequence[Any], bad_mask: np.ndarray[Any, Any], kinds: Sequence[str],
                rng: np.random.Generator, label_delay_s: float) -> list[_Message]:
        self.label_delay_s = label_delay_s
        good = [g for g, bad in zip(batch, bad_mask.tolist(), strict=True) if not bad]
        encoded = iter(self.serdes.events.encode_many([g.event for g in good]))
        label_values: Any = iter(())
        label_records: list[dict[str, Any]] = []
        if self.summary.labels_topic is not None:
            delay_ms = int(label_delay_s * 1000)
            label_records = [
                {"event_id": g.event["event_id"], "tenant": g.event["tenant"], "is_fraud": bool(g.is_fraud),
                 "label_time": int(g.event["event_time"]) + delay_ms, "event_time": int(g.event["event_time"]),
                 "cohort": g.event.get("channel")}
                for g in good
            ]
            label_values = iter(self.serdes.labels.encode_many(label_records))
        records = iter(label_records)
        messages: list[_Message] = []
        for generated, bad in zip(batch, bad_mask.tolist(), strict=True):
            key = event_key(generated.event)
            if bad:
                kind = kinds[int(rng.integers(0, len(kinds)))]
                spoiled = make_bad_event(kind, generated.event, key, self.serdes, rng)
                messages.append(_Message(key, spoiled.value, spoiled, None, None))
                continue
            label = None
            if self.summary.labels_topic is not None:
                record = next(records)
                label = (str(record["event_id"]).encode("utf-8"), next(label_values), record)
            messages.append(_Message(key, next(encoded), None, generated.event, label))
        return messages

    def _produce(self, topic: str, key: bytes | None, value: bytes, report: DeliveryReport) -> None:
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, on_delivery=report)
                return
            except BufferError:
                self.producer.poll(0.05)

    def send_event(self, message: _Message) -> None:
        summary = self.summary
        self._produce(summary.events_topic, message.key, message.value, self.events_report)
        summary.sent += 1
        if message.bad is not None:
            kind = message.bad.kind
            summary.bad_by_kind[kind] = summary.bad_by_kind.get(kind, 0) + 1
            if self.keep:
                summary.bad.append(message.bad)
            return
        summary.good += 1
        if self.keep and message.event is not None:
            summary.events.append(message.event)
        if message.label is not None:
            key, value, record = message.label
            self.pending_labels.append((time.monotonic() + self.label_delay_s, key, value, record))

    def send_due_labels(self, now: float) -> None:
        pending = self.pending_labels
        while pending and pending[0][0] <= now:
            _, key, value, record = pending.popleft()
            self._send_label(key, value, record)

    def flush_labels(self) -> None:
        early = len(self.pending_labels)
        while self.pending_labels:
            _, key, value, record = self.pending_labels.popleft()
            self._send_label(key, value, record)
        self.summary.labels_flushed_early += early

    def _send_label(self, key: bytes, value: bytes, record: dict[str, Any]) -> None:
        assert self.summary.labels_topic is not None
        self._produce(self.summary.labels_topic, key, value, self.labels_report)
        self.summary.labels_sent += 1
        if self.keep:
            self.summary.labels.append(record)

    def progress(self, elapsed: float, target: int | None) -> ProduceProgress:
        return ProduceProgress(
            sent=self.summary.sent, acked=self.events_report.acked, failed=self.events_report.failed,
            elapsed_s=elapsed, target=target, labels_sent=self.summary.labels_sent,
            labels_pending=len(self.pending_labels),
        )

    def finish(self, undelivered: int) -> None:
        """Copy the delivery counts; messages still queued after the flush timeout count as failed."""
        s = self.summary
        s.acked, s.labels_acked = self.events_report.acked, self.labels_report.acked
        s.failed, s.labels_failed = self.events_report.failed, self.labels_report.failed
        s.errors = {**self.events_report.errors}
        for name, n in self.labels_report.errors.items():
            s.errors[f"labels:{name}"] = s.errors.get(f"labels:{name}", 0) + n
        if undelivered:
            s.errors["not acknowledged before flush timeout"] = undelivered
            missing_events = s.sent - s.acked - s.failed
            s.failed += missing_events
            s.labels_failed += s.labels_sent - s.labels_acked - s.labels_failed
