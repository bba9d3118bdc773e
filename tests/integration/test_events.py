"""On a real broker: 10,000 events for 3 tenants with 2% malformed; every good one reads back
exactly, every bad one becomes a dead letter with the right reason and its original bytes."""

from __future__ import annotations

from collections import Counter

from confluent_kafka import Producer

from museflow.config import Settings
from museflow.contracts.deadletter import DeadLetterWriter, Rejection
from museflow.contracts.serde import Serdes
from museflow.contracts.topics import core_topics
from museflow.contracts.validation import EventClassifier
from museflow.demo.loadgen import DEFAULT_TENANTS, TransactionGenerator
from museflow.demo.malformed import BAD_KINDS
from museflow.demo.producing import produce_events
from museflow.kafka.admin import ensure_topics
from museflow.kafka.clients import DeliveryReport, make_producer, read_topic


def _route_bad_events(settings: Settings, serdes: Serdes, classifier: EventClassifier) -> tuple[int, int]:
    """What the router does: classify every event; dead-letter the rejects with a confluent producer."""
    producer: Producer = make_producer(settings)
    report = DeliveryReport()

    def send(topic: str, key: bytes | None, value: bytes) -> None:
        producer.produce(topic, value=value, key=key, on_delivery=report)

    writer = DeadLetterWriter(settings.topics.dlq, serde=serdes.dead_letters, send=send, stage="router")
    records = read_topic(settings, settings.topics.events)
    accepted = 0
    for record, result in zip(records, classifier.classify_many(r.value for r in records), strict=True):
        if isinstance(result, Rejection):
            assert writer.reject(result, record.value, key=record.key, source_topic=record.topic,
                                 source_partition=record.partition, source_offset=record.offset,
                                 timestamp_ms=record.timestamp_ms)
        else:
            accepted += 1
    assert producer.flush(30) == 0
    assert report.failed == 0
    return accepted, report.acked


def test_ten_thousand_events_with_two_percent_bad_end_up_decoded_or_dead_lettered(settings: Settings) -> None:
    ensure_topics(settings, core_topics(settings))
    serdes = Serdes()
    generator = TransactionGenerator(DEFAULT_TENANTS, seed=42)
    summary = produce_events(settings, generator, 10_000, bad_fraction=0.02, seed=42, serdes=serdes, keep=True,
                             labels=True, label_delay_s=0.0)
    assert summary.ok, summary.errors
    assert (summary.sent, summary.acked, summary.failed) == (10_000, 10_000, 0)
    assert 120 < summary.bad_total < 280 and summary.good + summary.bad_total == 10_000
    assert set(summary.bad_by_kind) == set(BAD_KINDS)
    assert {e["tenant"] for e in summary.events} == {t.name for t in DEFAULT_TENANTS}
    assert summary.labels_sent == summary.labels_acked == summary.good

    records = read_topic(settings, settings.topics.events)
    assert len(records) == 10_000
    decoded = serdes.events.decode_many(r.value for r in records)
    good_sent = {e["event_id"]: e for e in summary.events}
    good_read = {d["event_id"]: d for d in decoded if isinstance(d, dict) and d["event_id"] in good_sent}
    assert good_read == good_sent  # every good event decodes to exactly what was sent
    by_key = {(r.key, r.value) for r in records}
    assert all((b.key, b.value) in by_key for b in summary.bad)
    card_partitions: dict[bytes | None, set[int]] = {}
    for r in records:
        card_partitions.setdefault(r.key, set()).add(r.partition)
    assert all(len(p) == 1 for p in card_partitions.values()), "one entity, one partition"

    labels = serdes.labels.decode_many(r.value for r in read_topic(settings, settings.topics.labels))
    assert {lab["event_id"]: lab["is_fraud"] for lab in labels if isinstance(lab, dict)} == {
        e["event_id"]: f["is_fraud"] for e, f in zip(summary.events, summary.labels, strict=True)}

    classifier = EventClassifier(serdes.events, tenants={t.name for t in DEFAULT_TENANTS},
                                 intents=set(generator.intents))
    accepted, dead = _route_bad_events(settings, serdes, classifier)
    assert (accepted, dead) == (summary.good, summary.bad_total)

    letters = [serdes.dead_letters.decode(r.value) for r in read_topic(settings, settings.topics.dlq)]
    assert len(letters) == summary.bad_total
    got = Counter((d["original_value"], d["reason"]) for d in letters)
    expected = Counter((b.value, b.reason.value) for b in summary.bad)
    assert got == expected  # every bad one: its exact bytes, the right reason
    assert all(d["source_topic"] == settings.topics.events and d["source_offset"] >= 0 for d in letters)
    assert Counter(d["reason"] for d in letters) == Counter(b.reason.value for b in summary.bad)


def test_registry_framing_on_the_broker_round_trips(settings: Settings) -> None:
    from museflow.kafka.schema_registry import serdes_from_settings

    registry_settings = settings.replace(schema_registry_url="mock://events-integration")
    serdes = serdes_from_settings(registry_settings)
    summary = produce_events(registry_settings, TransactionGenerator(seed=3), 500, serdes=serdes, keep=True,
                             bad_fraction=0.1, seed=3)
    assert summary.ok
    records = read_topic(settings, settings.topics.events)
    assert sum(1 for r in records if r.value and r.value[:1] == b"\x00") >= summary.good  # registry-framed
    results = EventClassifier(serdes.events, tenants={t.name for t in DEFAULT_TENANTS},
                              intents={"card-not-present", "account-takeover"}).classify_many(r.value for r in records)
    assert {r["event_id"]: r for r in results if isinstance(r, dict)} == {e["event_id"]: e for e in summary.events}
    assert Counter(r.reason.value for r in results if isinstance(r, Rejection)) == Counter(
        b.reason.value for b in summary.bad)
