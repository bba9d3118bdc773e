"""confluent-kafka producers and consumers configured from :class:`~museflow.config.Settings`.

Producers are idempotent with ``acks=all`` and a delivery callback that checks ``err`` and
counts; consumers check ``msg.error()`` and are closed in ``finally`` by their users.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer, TopicPartition

from museflow.config import Settings
from museflow.errors import BrokerError

# KafkaException and Producer are re-exported for the demo's load producer, which stays out of confluent_kafka.
__all__ = [
    "DeliveryReport",
    "KafkaException",
    "Producer",
    "Record",
    "headers_of",
    "make_consumer",
    "make_producer",
    "position_of",
    "read_topic",
    "topic_end_offsets",
]

log = logging.getLogger(__name__)


@dataclass
class DeliveryReport:
    """Counts what the broker acknowledged and what it refused; never drops an error silently."""

    acked: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def __call__(self, err: Any, msg: Message) -> None:
        if err is None:
            self.acked += 1
            return
        self.failed += 1
        key = str(err.name()) if hasattr(err, "name") else str(err)
        self.errors[key] = self.errors.get(key, 0) + 1
        if self.failed <= 10:
            log.error("delivery to %s failed: %s", msg.topic(), err)


def make_producer(settings: Settings, **overrides: Any) -> Producer:
    """An idempotent ``acks=all`` producer; ``overrides`` are librdkafka keys.

    Keys are placed by the Java client's murmur2 partitioner (librdkafka's default is
    ``consistent_random``), so a key lands on the same partition whichever client wrote it.
    """
    conf = {
        **settings.librdkafka_config(),
        "partitioner": "murmur2_random",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": max(1, int(settings.producer_linger_seconds * 1000)),
        "compression.type": "lz4",
        **overrides,
    }
    return Producer(conf)


def make_consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    """A consumer that starts at the earliest offset and commits only when told to."""
    conf = {
        **settings.librdkafka_config(),
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        **overrides,
    }
    return Consumer(conf)


@dataclass(frozen=True)
class Record:
    """One message read back from a topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...] = ()


def position_of(msg: Message) -> tuple[str, int, int]:
    """Topic, partition and offset of a consumed message (librdkafka sets all three on any message without
    an error; the Python signature says they may be None)."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    if topic is None or partition is None or offset is None:
        raise BrokerError(f"a consumed message without a position ({topic}[{partition}]@{offset}): {msg.error()}")
    return topic, partition, offset


def headers_of(msg: Message) -> tuple[tuple[str, bytes], ...]:
    """A message's headers as ``(name, bytes)`` pairs (a header without a value reads as ``b""``)."""
    raw = msg.headers() or ()
    pairs = raw.items() if isinstance(raw, dict) else raw
    return tuple((name, value.encode() if isinstance(value, str) else (value or b"")) for name, value in pairs)


def topic_end_offsets(consumer: Consumer, topic: str, timeout: float = 10.0) -> dict[int, tuple[int, int]]:
    """Partition -> (low, high) watermarks of ``topic``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            metadata = consumer.list_topics(topic, timeout=timeout)
            info = metadata.topics.get(topic)
            if info is None or info.error is not None:
                raise BrokerError(f"topic {topic} does not exist on the broker ({info.error if info else 'absent'})")
            return {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)
                for p in info.partitions
            }
        except KafkaException as exc:
            retriable = exc.args and getattr(exc.args[0], "retriable", lambda: False)()
            if (not retriable and "leader" not in str(exc).lower()) or time.monotonic() > deadline:
                raise BrokerError(f"reading the offsets of {topic}: {exc.args[0] if exc.args else exc} (is the broker "
                                 "reachable, and do the TLS/SASL settings match its listener?)") from exc
            time.sleep(0.2)


def read_topic(
    settings: Settings,
    topic: str,
    *,
    timeout: float = 30.0,
    isolation_level: str = "read_uncommitted",
    group_id: str | None = None,
) -> list[Record]:
    """Everything in ``topic`` up to its end as of the call, from every partition, in offset order."""
    return list(iter_topic(settings, topic, timeout=timeout, isolation_level=isolation_level, group_id=group_id))


def iter_topic(
    settings: Settings,
    topic: str,
    *,
    timeout: float = 30.0,
    isolation_level: str = "read_uncommitted",
    follow: bool = False,
    group_id: str | None = None,
) -> Iterator[Record]:
    """Yield the records of ``topic`` from the beginning; stop at the end unless ``follow``.

    ``timeout`` bounds a stall, not the read: it fails when no record arrives for that long while
    partitions are still short of their end (a long topic read at the broker's pace never does).
    Partitions are assigned, nothing is committed; the group id (default ``<app id>-reader-<n>``,
    inside the platform's ACLs) only has to be one the principal may use (a tenant: ``<tenant>-...``).
    """
    consumer = make_consumer(settings, group_id=group_id or f"{settings.app_id}-reader-{time.time_ns()}",
                             **{"isolation.level": isolation_level})
    try:
        ends = topic_end_offsets(consumer, topic)
        remaining = {p: hi for p, (lo, hi) in ends.items() if hi > lo}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + timeout
        while follow or remaining:
            if not follow and time.monotonic() > deadline:
                raise BrokerError(
                    f"reading {topic} stalled: no record for {timeout:.0f}s with partitions {sorted(remaining)} "
                    "not read to their end"
                )
            msg = consumer.poll(0.5)
            if msg is None:
                remaining = _drop_reached(consumer, topic, remaining)
                continue
            if msg.error():
                raise BrokerError(f"reading {topic}: {msg.error()}")
            _, partition, offset = position_of(msg)
            yield Record(
                topic=topic, partition=partition, offset=offset, key=msg.key(), value=msg.value(),
                timestamp_ms=msg.timestamp()[1], headers=headers_of(msg),
            )
            deadline = time.monotonic() + timeout  # the caller's time with the record is not a stall
            if partition in remaining and offset + 1 >= remaining[partition]:
                del remaining[partition]
    except KafkaException as exc:
        raise BrokerError(f"reading {topic} on {settings.bootstrap_servers}: {exc}") from exc
    finally:
        consumer.close()


def _drop_reached(consumer: Consumer, topic: str, remaining: dict[int, int]) -> dict[int, int]:
    """Transaction markers occupy offsets no message is delivered for (at either isolation level)."""
    positions = consumer.position([TopicPartition(topic, p) for p in remaining])
    return {tp.partition: remaining[tp.partition] for tp in positions
            if tp.offset < 0 or tp.offset < remaining[tp.partition]}
