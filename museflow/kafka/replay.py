"""Read the events topic between two times: the retained traffic a rehearsal replays.

Times become offsets per partition (``offsets_for_times``); one consumer is assigned every
partition from its start offset, so librdkafka fetches all partitions at once, and reading stops
at each partition's end offset. Nothing is committed: the group id (``<app id>-rehearse-...``)
only has to be one the platform's ACLs allow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import TopicPartition

from museflow.config import Settings
from museflow.contracts.serde import Serdes
from museflow.errors import BrokerError
from museflow.kafka.clients import make_consumer, position_of, topic_end_offsets

__all__ = ["ReplayProgress", "replay_window"]

_TIMEOUT = 30.0


@dataclass(frozen=True)
class ReplayProgress:
    done: int
    total: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


def replay_window(settings: Settings, serdes: Serdes, start_ms: int, end_ms: int, *, batch_size: int = 2000,
                  progress: Callable[[ReplayProgress], None] | None = None,
                  ) -> Iterator[tuple[Sequence[Mapping[str, Any] | Exception], list[int]]]:
    """Yield (decoded events, Kafka timestamps) of every event with a timestamp in [start, end)."""
    topic = settings.topics.events
    consumer = make_consumer(settings, group_id=f"{settings.app_id}-rehearse-{time.time_ns()}",
                             **{"isolation.level": "read_committed"})
    try:
        watermarks = topic_end_offsets(consumer, topic, timeout=_TIMEOUT)
        partitions = sorted(watermarks)
        starts = _offsets_at(consumer, topic, partitions, start_ms, watermarks)
        ends = _offsets_at(consumer, topic, partitions, end_ms, watermarks)
        remaining = {p: ends[p] for p in partitions if ends[p] > starts[p]}
        total = sum(ends[p] - starts[p] for p in remaining)
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in remaining])
        began, done = time.monotonic(), 0
        while remaining:
            messages = consumer.consume(batch_size, timeout=1.0)
            values, stamps = [], []
            for msg in messages:
                if msg.error():
                    continue
                _, p, offset = position_of(msg)
                if p not in remaining or offset >= remaining[p]:
                    continue
                if offset + 1 >= remaining[p]:
                    del remaining[p]
                values.append(msg.value())
                stamps.append(msg.timestamp()[1])
            if not messages:
                remaining = _unfinished(consumer, topic, remaining)
            if values:
                done += len(values)
                yield serdes.events.decode_many(values), stamps
                if progress is not None:
                    progress(ReplayProgress(done, total, time.monotonic() - began))
    finally:
        consumer.close()


def _offsets_at(consumer: Any, topic: str, partitions: list[int], at_ms: int,
                watermarks: Mapping[int, tuple[int, int]]) -> dict[int, int]:
    """The first offset with a timestamp >= ``at_ms`` per partition (the end offset if none)."""
    try:
        found = consumer.offsets_for_times([TopicPartition(topic, p, at_ms) for p in partitions], timeout=_TIMEOUT)
    except Exception as exc:
        raise BrokerError(f"cannot look up offsets of {topic} at {at_ms}: {exc}") from exc
    return {tp.partition: tp.offset if tp.offset >= 0 else watermarks[tp.partition][1] for tp in found}


def _unfinished(consumer: Any, topic: str, remaining: dict[int, int]) -> dict[int, int]:
    """Drop partitions whose position passed their end (e.g. the last offsets were transaction markers)."""
    positions = consumer.position([TopicPartition(topic, p) for p in remaining])
    return {tp.partition: remaining[tp.partition] for tp in positions
            if tp.offset < 0 or tp.offset < remaining[tp.partition]}
