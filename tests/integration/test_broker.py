"""The foundation on a real broker: produce/consume across partitions, topic provisioning."""

from __future__ import annotations

import time
from collections.abc import Callable

from museflow.config import Settings
from museflow.contracts.topics import core_topics
from museflow.kafka.admin import ensure_topics, existing_topics
from museflow.kafka.clients import DeliveryReport, iter_topic, make_consumer, make_producer, read_topic


def test_thousand_messages_round_trip_through_a_consumer_group(
    settings: Settings, create_topic: Callable[..., str], unique: str
) -> None:
    topic = create_topic("roundtrip", partitions=6)
    producer = make_producer(settings)
    report = DeliveryReport()
    for i in range(1000):
        producer.produce(topic, key=f"k{i % 97}".encode(), value=f"v{i}".encode(), on_delivery=report)
    assert producer.flush(30) == 0
    assert (report.acked, report.failed) == (1000, 0)

    consumer = make_consumer(settings, group_id=f"g-{unique}")
    seen: set[bytes] = set()
    partitions: set[int] = set()
    try:
        consumer.subscribe([topic])
        for _ in range(200):
            for msg in consumer.consume(500, timeout=0.5):
                assert msg.error() is None
                seen.add(msg.value())
                partitions.add(msg.partition())
            if len(seen) == 1000:
                break
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    assert seen == {f"v{i}".encode() for i in range(1000)}
    assert len(partitions) == 6


def test_read_topic_returns_everything_up_to_the_end(settings: Settings, create_topic: Callable[..., str]) -> None:
    topic = create_topic("readback", partitions=3)
    producer = make_producer(settings)
    for i in range(250):
        producer.produce(topic, key=str(i).encode(), value=str(i).encode())
    producer.flush(30)
    values = sorted(int(r.value or b"-1") for r in read_topic(settings, topic))
    assert values == list(range(250))


def test_a_long_read_that_keeps_going_is_not_cut_off_by_the_timeout(settings: Settings,
                                                                     create_topic: Callable[..., str]) -> None:
    """The timeout bounds a stall: a rehearsal reading a day of labels takes longer than it, and must finish."""
    topic = create_topic("slowread", partitions=2)
    producer = make_producer(settings)
    for i in range(60):
        producer.produce(topic, value=str(i).encode())
    producer.flush(30)
    started, seen = time.monotonic(), []
    for record in iter_topic(settings, topic, timeout=1.0):
        seen.append(int(record.value or b"-1"))
        time.sleep(0.05)  # three seconds in all, three times the timeout
    assert sorted(seen) == list(range(60)) and time.monotonic() - started > 3.0


def test_core_topics_are_created_once_with_explicit_partitions_and_compaction(settings: Settings) -> None:
    specs = core_topics(settings)
    created = ensure_topics(settings, specs)
    assert sorted(created) == sorted(s.name for s in specs)
    assert ensure_topics(settings, specs) == []
    present = existing_topics(settings)
    assert present[settings.topics.events] == settings.partitions
    assert present[settings.topics.routes] == 1

    from confluent_kafka.admin import ConfigResource

    from museflow.kafka.admin import admin_client

    resource = ConfigResource(ConfigResource.Type.TOPIC, settings.topics.routes)
    admin = admin_client(settings)
    config = admin.describe_configs([resource])[resource].result()
    assert config["cleanup.policy"].value == "compact"
