"""True consumer lag from the broker's admin API, as data, as Prometheus metrics and for ``museflow lag``.

Lag is the log end offset (``list_offsets`` with ``OffsetSpec.latest``) minus the group's
committed offset (``list_consumer_group_offsets``) — what the broker knows, not what a consumer
believes, so it is right while the consumer is stopped, stuck or rebalancing. A partition of a
topic the group consumes (it has commits on the topic, or a member is assigned to it) that has
no commit yet counts from the log start, because museflow consumers reset to ``earliest``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, IsolationLevel, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]  # not in its __all__
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from museflow.config import Settings
from museflow.errors import BrokerError

__all__ = ["LagCollector", "PartitionLag", "list_groups", "read_lag", "summarize"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionLag:
    """One partition of one group: committed offset (``None`` when never committed), log start/end, lag."""

    group: str
    topic: str
    partition: int
    committed: int | None
    log_start: int
    log_end: int

    @property
    def lag(self) -> int:
        consumed_to = self.committed if self.committed is not None else self.log_start
        return max(0, self.log_end - consumed_to)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lag": self.lag}


def list_groups(settings: Settings, admin: AdminClient | None = None, timeout: float = 10.0) -> list[str]:
    """Every consumer group the broker knows (classic and consumer protocol), sorted."""
    admin = admin or AdminClient(settings.librdkafka_config())
    try:
        result = admin.list_consumer_groups(request_timeout=timeout).result()
    except KafkaException as exc:
        raise BrokerError(f"listing consumer groups on {settings.bootstrap_servers}: {exc}") from exc
    if result.errors and not result.valid:  # no broker answered: an empty list would read as "no lag"
        raise BrokerError(f"listing consumer groups on {settings.bootstrap_servers}: "
                         + "; ".join(str(e) for e in result.errors))
    return sorted(g.group_id for g in result.valid)


def read_lag(settings: Settings, groups: Iterable[str] | None = None, *, admin: AdminClient | None = None,
             timeout: float = 10.0) -> list[PartitionLag]:
    """Lag of every partition each group consumes (``groups=None``: every group on the broker)."""
    admin = admin or AdminClient(settings.librdkafka_config())
    wanted = list_groups(settings, admin, timeout) if groups is None else list(dict.fromkeys(groups))
    committed: dict[tuple[str, str, int], int | None] = {}
    for group in wanted:
        committed.update(_committed(admin, group, timeout, settings))
        for topic, partition in _assigned(admin, group, timeout):
            committed.setdefault((group, topic, partition), None)
    for group, topic in {(g, t) for g, t, _ in committed}:
        for partition in _partitions(admin, topic, timeout):
            committed.setdefault((group, topic, partition), None)
    partitions = {(t, p) for _, t, p in committed}
    ends = _offsets(admin, partitions, OffsetSpec.latest(), timeout, settings)  # type: ignore[no-untyped-call]
    starts = _offsets(admin, partitions, OffsetSpec.earliest(), timeout, settings)  # type: ignore[no-untyped-call]
    rows = [
        PartitionLag(group, topic, partition, offset, starts.get((topic, partition), 0),
                     ends.get((topic, partition), 0))
        for (group, topic, partition), offset in committed.items()
        if (topic, partition) in ends
    ]
    return sorted(rows, key=lambda r: (r.group, r.topic, r.partition))


def summarize(rows: Iterable[PartitionLag]) -> dict[tuple[str, str], int]:
    """Total lag per (group, topic)."""
    totals: dict[tuple[str, str], int] = {}
    for row in rows:
        totals[(row.group, row.topic)] = totals.get((row.group, row.topic), 0) + row.lag
    return totals


def _committed(admin: AdminClient, group: str, timeout: float,
               settings: Settings) -> dict[tuple[str, str, int], int | None]:
    futures = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=timeout)
    try:
        result = futures[group].result()
    except KafkaException as exc:
        raise BrokerError(f"reading committed offsets of group {group!r} on {settings.bootstrap_servers}: "
                         f"{exc}") from exc
    found: dict[tuple[str, str, int], int | None] = {}
    for tp in result.topic_partitions or ():
        if tp.error is not None:
            log.warning("group %s %s[%d]: %s", group, tp.topic, tp.partition, tp.error)
            continue
        found[(group, tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else None
    return found


def _assigned(admin: AdminClient, group: str, timeout: float) -> set[tuple[str, int]]:
    """Partitions live members hold (a group that has not committed yet still has lag)."""
    try:
        description = admin.describe_consumer_groups([group], request_timeout=timeout)[group].result()
    except KafkaException as exc:
        log.debug("describing group %s failed: %s", group, exc)
        return set()
    held: set[tuple[str, int]] = set()
    for member in description.members or ():
        assignment = getattr(member, "assignment", None)
        for tp in getattr(assignment, "topic_partitions", None) or ():
            held.add((tp.topic, tp.partition))
    return held


def _partitions(admin: AdminClient, topic: str, timeout: float) -> list[int]:
    try:
        metadata = admin.list_topics(topic, timeout=timeout)
    except KafkaException:
        return []
    info = metadata.topics.get(topic)
    if info is None or info.error is not None:
        return []
    return sorted(info.partitions)


def _offsets(admin: AdminClient, partitions: Iterable[tuple[str, int]], spec: OffsetSpec, timeout: float,
             settings: Settings) -> dict[tuple[str, int], int]:
    request = {TopicPartition(t, p): spec for t, p in partitions}
    if not request:
        return {}
    isolation = IsolationLevel.READ_COMMITTED if settings.exactly_once else IsolationLevel.READ_UNCOMMITTED
    futures = admin.list_offsets(request, isolation_level=isolation, request_timeout=timeout)
    found: dict[tuple[str, int], int] = {}
    for tp, future in futures.items():
        try:
            found[(tp.topic, tp.partition)] = int(future.result().offset)
        except KafkaException as exc:
            log.warning("log offsets of %s[%d] unavailable: %s", tp.topic, tp.partition, exc)
    return found


class LagCollector:
    """Prometheus collector of ``museflow_consumer_lag{group,topic,partition}`` and ``..._lag_sum{group,topic}``.

    Scrapes serve the last snapshot; :meth:`refresh` (from a timer or thread, never the event
    loop — it blocks on admin requests) reads a new one. A failed refresh keeps the old snapshot
    and is counted, and the refresh timestamp shows how fresh the numbers are.
    """

    def __init__(self, settings: Settings, groups: Sequence[str] | None = None, *,
                 registry: CollectorRegistry | None = None, timeout: float = 10.0,
                 group_prefix: str | None = None) -> None:
        self.settings = settings
        self.groups = None if groups is None else tuple(groups)
        self.group_prefix = group_prefix
        self.timeout = timeout
        self._admin: AdminClient | None = None
        self._rows: list[PartitionLag] = []
        self._refreshed_at = 0.0
        self._failures = 0
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def refresh(self) -> list[PartitionLag]:
        """Read lag from the broker now; returns the rows (the old ones when the broker fails)."""
        try:
            if self._admin is None:
                self._admin = AdminClient(self.settings.librdkafka_config())
            groups: Sequence[str] | None = self.groups
            if groups is None and self.group_prefix is not None:
                groups = [g for g in list_groups(self.settings, self._admin, self.timeout)
                          if g == self.group_prefix or g.startswith(self.group_prefix + "-")]
            rows = read_lag(self.settings, groups, admin=self._admin, timeout=self.timeout)
        except BrokerError as exc:
            with self._lock:
                self._failures += 1
            log.warning("consumer lag refresh failed (keeping the last reading): %s", exc)
            return self.rows
        with self._lock:
            self._rows = rows
            self._refreshed_at = time.time()
        return rows

    @property
    def rows(self) -> list[PartitionLag]:
        with self._lock:
            return list(self._rows)

    def describe(self) -> Iterator[Metric]:
        yield from self._families([], 0.0, 0)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            rows, refreshed, failures = list(self._rows), self._refreshed_at, self._failures
        yield from self._families(rows, refreshed, failures)

    @staticmethod
    def _families(rows: list[PartitionLag], refreshed: float, failures: int) -> Iterator[Metric]:
        per_partition = GaugeMetricFamily(
            "museflow_consumer_lag", "Messages between a group's committed offset and the log end, per partition.",
            labels=["group", "topic", "partition"])
        for row in rows:
            per_partition.add_metric([row.group, row.topic, str(row.partition)], row.lag)
        total = GaugeMetricFamily("museflow_consumer_lag_sum", "Consumer lag summed over a topic's partitions.",
                                  labels=["group", "topic"])
        for (group, topic), lag in sorted(summarize(rows).items()):
            total.add_metric([group, topic], lag)
        stamp = GaugeMetricFamily("museflow_consumer_lag_refreshed_timestamp_seconds",
                                  "When consumer lag was last read from the broker.")
        stamp.add_metric([], refreshed)
        errors = CounterMetricFamily("museflow_consumer_lag_refresh_failures",
                                   "Lag readings that failed since start (the last good reading is kept).")
        errors.add_metric([], failures)
        yield from (per_partition, total, stamp, errors)
