"""On a real broker: 10,000 events for 3 tenants with 2% malformed; every good one reads back
exactly, every bad one becomes a dead letter with the right reason and its original bytes."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

from confluent_kafka import Producer

from museflow.config import Settings
from museflow.contracts.deadletter import DeadLetterWriter
from museflow.contracts.serde import AvroSerde, Serdes
from museflow.contracts.topics import core_topics
from museflow.contracts.validation import validate_event
from museflow.control.routing import load_routes_yaml
from museflow.control.state import PipelineState
from museflow.demo.loadgen import DEFAULT_TENANTS, TransactionGenerator
from museflow.demo.malformed import BAD_KINDS
from museflow.demo.producing import produce_events
from museflow.kafka.admin import ensure_topics
from museflow.kafka.clients import DeliveryReport, make_producer, read_topic
from museflow.observe.metrics import PipelineMetrics
from museflow.runtime.pipeline import InMessage, RouterStep, StepResult


def _route(settings: Settings, serde: AvroSerde, intents: set[str],
           tmp_path: Path) -> tuple[list[InMessage], StepResult]:
    """The events topic through the production router, with a route for every default tenant and ``intents``."""
    state = PipelineState(model_dir=tmp_path, metrics=PipelineMetrics())
    lines = [f"  - {{tenant: {t.name}, intent: {i}, champion: fraud-cnp@1}}" for t in DEFAULT_TENANTS
             for i in sorted(intents)]
    for route in load_routes_yaml(text="routes:\n" + "\n".join(lines) + "\n"):
        state.routes.apply(replace(route, version=1))
    records = read_topic(settings, settings.topics.events)
    messages = [InMessage(r.key, r.value, r.topic, r.partition, r.offset, r.timestamp_ms or 0) for r in records]
    return messages, RouterStep(state, settings.topics, validate_event).run(messages, serde.decode_many(
        [m.value for m in messages]))


def _route_bad_events(settings: Settings, serdes: Serdes, intents: set[str], tmp_path: Path) -> tuple[int, int]:
    """What the router does: route every event; dead-letter the rejects with a confluent producer."""
    producer: Producer = make_producer(settings)
    report = DeliveryReport()
    writer = DeadLetterWriter(settings.topics.dlq, serde=serdes.dead_letters, stage="router")
    _, result = _route(settings, serdes.events, intents, tmp_path)
    for dead in result.dead:
        m = dead.message
        letter = writer.build(m.value, reason=dead.reason, detail=dead.detail, key=m.key, source_topic=m.topic,
                              source_partition=m.partition, source_offset=m.offset, tenant=dead.tenant,
                              timestamp_ms=m.timestamp_ms or None)
        assert letter is not None
        producer.produce(letter.topic, value=letter.value, key=letter.key, on_delivery=report)
    assert producer.flush(30) == 0
    assert report.failed == 0
    return result.primary, report.acked


def test_ten_thousand_events_with_two_percent_bad_end_up_decoded_or_dead_lettered(settings: Settings,
                                                                                  tmp_path: Path) -> None:
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

    accepted, dead = _route_bad_events(settings, serdes, set(generator.intents), tmp_path)
    assert (accepted, dead) == (summary.good, summary.bad_total)

    letters = [serdes.dead_letters.decode(r.value) for r in read_topic(settings, settings.topics.dlq)]
    assert len(letters) == summary.bad_total
    got = Counter((d["original_value"], d["reason"]) for d in letters)
    expected = Counter((b.value, b.reason.value) for b in summary.bad)
    assert got == expected  # every bad one: its exact bytes, the right reason
    assert all(d["source_topic"] == settings.topics.events and d["source_offset"] >= 0 for d in letters)
    assert Counter(d["reason"] for d in letters) == Counter(b.reason.value for b in summary.bad)


def test_registry_framing_on_the_broker_round_trips(settings: Settings, tmp_path: Path) -> None:
    from museflow.kafka.schema_registry import serdes_from_settings

    registry_settings = settings.replace(schema_registry_url="mock://events-integration")
    serdes = serdes_from_settings(registry_settings)
    summary = produce_events(registry_settings, TransactionGenerator(seed=3), 500, serdes=serdes, keep=True,
                             bad_fraction=0.1, seed=3)
    assert summary.ok
    records = read_topic(settings, settings.topics.events)
    assert sum(1 for r in records if r.value and r.value[:1] == b"\x00") >= summary.good  # registry-framed
    messages, result = _route(settings, serdes.events, {"card-not-present", "account-takeover"}, tmp_path)
    routed = [serdes.events.decode(o.value) for o in result.out if o.primary]
    assert {e["event_id"]: e for e in routed} == {e["event_id"]: e for e in summary.events}
    assert len(messages) == len(records)
    assert Counter(d.reason for d in result.dead) == Counter(b.reason.value for b in summary.bad)
