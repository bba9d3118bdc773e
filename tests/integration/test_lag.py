"""True consumer lag on the real broker: the metric and ``museflow lag --json`` equal the events produced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry

from museflow.config import Settings
from museflow.kafka.clients import make_consumer, make_producer
from museflow.kafka.lag import LagCollector, read_lag


def produce(settings: Settings, topic: str, n: int, start: int = 0) -> None:
    producer = make_producer(settings)
    for i in range(start, start + n):
        producer.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
    assert producer.flush(30) == 0


def consume_and_commit(settings: Settings, topic: str, group: str, expected: int) -> None:
    consumer = make_consumer(settings, group)
    try:
        consumer.subscribe([topic])
        seen = 0
        deadline = time.monotonic() + 60
        while seen < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert not msg.error(), msg.error()
            seen += 1
        assert seen == expected
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()


def cli_json(settings: Settings, *args: str) -> dict:  # type: ignore[type-arg]
    env = {**os.environ, "MUSEFLOW_BOOTSTRAP_SERVERS": settings.bootstrap_servers}
    command = [sys.executable, "-c", "from museflow.cli.main import main; main()", "lag", "--json", *args]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_lag_metric_and_cli_equal_the_events_produced_after_the_commit(
        settings: Settings, create_topic: Callable[..., str], unique: str) -> None:
    topic = create_topic("lag-events", partitions=3)
    group = f"lag-group-{unique}"
    produce(settings, topic, 300)
    consume_and_commit(settings, topic, group, 300)
    assert sum(r.lag for r in read_lag(settings, [group])) == 0

    n = 137
    produce(settings, topic, n, start=300)

    rows = read_lag(settings, [group])
    assert {(r.topic, r.partition) for r in rows} == {(topic, p) for p in range(3)}
    assert sum(r.lag for r in rows) == n
    assert all(r.lag == r.log_end - (r.committed or 0) for r in rows)

    registry = CollectorRegistry()
    collector = LagCollector(settings, [group], registry=registry)
    collector.refresh()
    assert registry.get_sample_value("museflow_consumer_lag_sum", {"group": group, "topic": topic}) == n
    per_partition = [registry.get_sample_value("museflow_consumer_lag",
                                               {"group": group, "topic": topic, "partition": str(p)})
                     for p in range(3)]
    assert sum(v or 0 for v in per_partition) == n
    assert [r.lag for r in rows] == per_partition
    assert (registry.get_sample_value("museflow_consumer_lag_refreshed_timestamp_seconds") or 0) > time.time() - 60

    reading = cli_json(settings, "--group", group)
    assert reading["totals"] == [{"group": group, "topic": topic, "lag": n}]
    assert sorted((r["partition"], r["lag"]) for r in reading["rows"]) == sorted(
        (r.partition, r.lag) for r in rows)


def test_partitions_never_committed_count_from_the_log_start(
        settings: Settings, create_topic: Callable[..., str], unique: str) -> None:
    topic = create_topic("lag-partial", partitions=2)
    group = f"lag-partial-{unique}"
    producer = make_producer(settings)
    for _ in range(10):
        producer.produce(topic, value=b"x", partition=0)
    for _ in range(7):
        producer.produce(topic, value=b"y", partition=1)
    assert producer.flush(30) == 0
    consumer = make_consumer(settings, group)
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 4)], asynchronous=False)
    finally:
        consumer.close()
    rows = {r.partition: r for r in read_lag(settings, [group])}
    assert rows[0].committed == 4 and rows[0].lag == 6
    assert rows[1].committed is None and rows[1].lag == 7


def test_every_group_is_listed_without_a_group_filter(
        settings: Settings, create_topic: Callable[..., str], unique: str) -> None:
    topic = create_topic("lag-all", partitions=1)
    group = f"lag-all-{unique}"
    produce(settings, topic, 5)
    consumer = make_consumer(settings, group)
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    finally:
        consumer.close()
    assert any(r.group == group and r.lag == 3 for r in read_lag(settings))
