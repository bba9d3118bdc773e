"""Reading the score log back: by time window, for reference freezing, on-demand refits and reports."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from museflow.config import Settings
from museflow.contracts.scorelog import rows
from museflow.errors import BrokerError
from museflow.kafka.clients import make_consumer, position_of, topic_end_offsets
from museflow.kafka.schema_registry import serdes_from_settings

__all__ = ["read_score_log"]


def read_score_log(settings: Settings, *, since_ms: int | None = None, until_ms: int | None = None,
                   where: Callable[[Mapping[str, Any]], bool] | None = None,
                   timeout: float = 120.0) -> list[dict[str, Any]]:
    """Score-log rows (one per score) appended in [since_ms, until_ms) (broker time), filtered by ``where``."""
    return list(_iter(settings, since_ms, until_ms, where, timeout))


def _iter(settings: Settings, since_ms: int | None, until_ms: int | None,
          where: Callable[[Mapping[str, Any]], bool] | None, timeout: float) -> Iterator[dict[str, Any]]:
    topic = settings.topics.score_log
    serde = serdes_from_settings(settings).score_log
    consumer = make_consumer(settings, group_id=f"{settings.app_id}-scorelog-reader-{time.time_ns()}")
    try:
        ends = topic_end_offsets(consumer, topic)
        starts = {p: lo for p, (lo, _) in ends.items()}
        if since_ms is not None:
            found = consumer.offsets_for_times([TopicPartition(topic, p, since_ms) for p in ends], timeout=30)
            starts = {tp.partition: (tp.offset if tp.offset >= 0 else ends[tp.partition][1]) for tp in found}
        remaining = {p: hi for p, (_, hi) in ends.items() if hi > starts[p]}
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in ends])
        deadline = time.monotonic() + timeout
        while remaining:
            if time.monotonic() > deadline:
                raise BrokerError(f"reading the score log timed out; partitions {sorted(remaining)} unfinished")
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error():
                    raise BrokerError(f"reading {topic}: {msg.error()}")
                _, p, offset = position_of(msg)
                if p in remaining and offset + 1 >= remaining[p]:
                    del remaining[p]
                if until_ms is not None and msg.timestamp()[1] >= until_ms:
                    continue
                for row in rows([serde.decode(msg.value())]):
                    if where is None or where(row):
                        yield row
    except KafkaException as exc:
        raise BrokerError(f"reading {topic} on {settings.bootstrap_servers}: {exc}") from exc
    finally:
        consumer.close()
