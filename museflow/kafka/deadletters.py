"""Re-publish dead letters to the events topic once their cause is fixed (``museflow dlq replay``).

The dead-letter topic is read from the first record stamped at or after ``since`` (less a
minute: its timestamps and ``failed_at`` are the same worker clock, milliseconds apart) up to its
end *as of the start*, so a replay never picks up the dead letters it causes itself. A selected
dead letter's original key and bytes go to the events topic unchanged, with an
``mf-replay-of: <dlq>[<partition>]@<offset>`` header for the audit trail (the router ignores
``mf-*`` headers on events). Event ids are preserved: replaying the same range twice publishes
the events twice, and tenants dedupe on ``event_id`` as for any at-least-once redelivery.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import KafkaException, Producer, TopicPartition

from museflow.config import Settings
from museflow.contracts.deadletter import ReplaySelection
from museflow.contracts.serde import Serdes
from museflow.contracts.topics import DEAD_LETTER_MAX_BYTES
from museflow.errors import BrokerError, SerializationError
from museflow.kafka.clients import DeliveryReport, make_consumer, make_producer, topic_end_offsets

__all__ = ["H_REPLAY_OF", "DlqReplay", "replay_dead_letters"]

H_REPLAY_OF = "mf-replay-of"
_SEEK_MARGIN_MS = 60_000
_TIMEOUT = 30.0


@dataclass
class DlqReplay:
    """What a replay read, re-published (or would have, with ``dry_run``) and left alone, and why."""

    topic: str
    events_topic: str
    dry_run: bool
    read: int = 0
    replayed: Counter[str] = field(default_factory=Counter)
    """Reason -> dead letters re-published (or selected, in a dry run)."""
    skipped: Counter[str] = field(default_factory=Counter)
    """Why not -> dead letters in the range read that were not selected."""
    delivery: DeliveryReport = field(default_factory=DeliveryReport)

    @property
    def selected(self) -> int:
        return sum(self.replayed.values())


def replay_dead_letters(settings: Settings, serdes: Serdes, selection: ReplaySelection, *, dry_run: bool = False,
                        timeout: float = _TIMEOUT, group_id: str | None = None) -> DlqReplay:
    """Read the dead-letter topic over ``selection``'s range and re-publish what it selects to the events topic."""
    dlq, events = settings.topics.dlq, settings.topics.events
    report = DlqReplay(dlq, events, dry_run)
    consumer = make_consumer(settings, group_id=group_id or f"{settings.app_id}-dlq-replay-{time.time_ns()}")
    producer = None if dry_run else make_producer(settings, **{"message.max.bytes": DEAD_LETTER_MAX_BYTES})
    try:
        ends = {p: hi for p, (lo, hi) in topic_end_offsets(consumer, dlq, timeout).items() if hi > lo}
        starts = {tp.partition: tp.offset for tp in consumer.offsets_for_times(
            [TopicPartition(dlq, p, max(0, selection.since_ms - _SEEK_MARGIN_MS)) for p in ends], timeout=timeout)}
        remaining = {p: end for p, end in ends.items() if 0 <= starts.get(p, -1) < end}
        consumer.assign([TopicPartition(dlq, p, starts[p]) for p in remaining])
        deadline = time.monotonic() + timeout
        while remaining:
            if time.monotonic() > deadline:
                raise BrokerError(f"reading {dlq} timed out after {timeout:.0f}s with partitions "
                                 f"{sorted(remaining)} not read to their end")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise BrokerError(f"reading {dlq}: {msg.error()}")
            partition, offset = int(msg.partition() or 0), int(msg.offset() or 0)
            if partition not in remaining or offset >= remaining[partition]:
                continue
            if offset + 1 >= remaining[partition]:
                del remaining[partition]
            deadline = time.monotonic() + timeout
            report.read += 1
            try:
                letter = serdes.dead_letters.decode(msg.value())
            except SerializationError:
                report.skipped["not a dead letter"] += 1
                continue
            why = selection.skip(letter)
            if why is not None:
                report.skipped[why] += 1
                continue
            report.replayed[str(letter["reason"])] += 1
            if producer is not None:
                _send(producer, report, events, letter.get("original_key"), letter["original_value"],
                      f"{dlq}[{partition}]@{offset}")
        if producer is not None and producer.flush(timeout) > 0:
            raise BrokerError(f"{len(producer)} replayed events not acknowledged by {events} within {timeout:.0f}s; "
                             "run the replay again (tenants dedupe on event_id)")
    except KafkaException as exc:
        raise BrokerError(f"replaying {dlq} to {events} on {settings.bootstrap_servers}: {exc}") from exc
    finally:
        consumer.close()
    return report


def _send(producer: Producer, report: DlqReplay, topic: str, key: bytes | None, value: bytes, origin: str) -> None:
    """Produce one replayed event; a record the producer refuses outright is counted as a failed delivery."""
    while True:
        try:
            producer.produce(topic, key=key, value=value, headers=[(H_REPLAY_OF, origin.encode())],
                             on_delivery=report.delivery)
            break
        except BufferError:
            producer.poll(0.05)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else exc
            name = str(error.name()) if hasattr(error, "name") else str(error)
            report.delivery.failed += 1
            report.delivery.errors[name] = report.delivery.errors.get(name, 0) + 1
            break
    producer.poll(0)
