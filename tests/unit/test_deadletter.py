"""Dead letters: documented reason codes, faithful records, counting, and never raising."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from museflow.contracts.deadletter import DeadLetterReason, DeadLetterWriter
from museflow.contracts.schemas import load_schema
from museflow.contracts.serde import Serdes


class Sink:
    """An agent's send (Faust: its dead-letter topic's ``send``) that keeps what it was given."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    async def __call__(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.sent.append((topic, key, value))


def write(writer: DeadLetterWriter, send: Any, value: bytes | None, **fields: Any) -> bool:
    return asyncio.run(writer.awrite(send, value, **fields))


def counter(registry: CollectorRegistry, reason: str, stage: str) -> float:
    value = registry.get_sample_value("museflow_dead_letters_total", {"reason": reason, "stage": stage})
    return value or 0.0


def test_reason_codes_are_a_documented_stable_set() -> None:
    values = [r.value for r in DeadLetterReason]
    assert len(values) == len(set(values))
    assert {"undecodable", "unknown_schema", "wrong_schema", "invalid_event", "invalid_tenant", "invalid_amount",
            "clock_skew", "unknown_tenant", "unknown_intent", "no_route", "model_unavailable", "scoring_failed",
            "oversize"} <= set(values)
    for reason in DeadLetterReason:
        assert reason.description and reason.description != DeadLetterReason.__doc__
        assert reason == reason.value and DeadLetterReason(reason.value) is reason
    doc = next(f["doc"] for f in load_schema("DeadLetter")["fields"] if f["name"] == "reason")
    assert all(v in doc for v in values), "the DeadLetter schema documents every reason code"


def test_awrite_sends_the_original_bytes_with_reason_detail_and_coordinates() -> None:
    serdes, sink, registry = Serdes(), Sink(), CollectorRegistry()
    writer = DeadLetterWriter("t.museflow.dlq", serde=serdes.dead_letters, registry=registry,
                              stage="router", clock=lambda: 1_700_000_000.5)
    original = b"\xc3\x01garbage\x00\xff"
    assert write(writer, sink, original, reason=DeadLetterReason.UNDECODABLE, detail="bad header", key=b"card-1",
                        source_topic="t.museflow.events", source_partition=3, source_offset=99, timestamp_ms=5)
    ((topic, key, value),) = sink.sent
    assert (topic, key) == ("t.museflow.dlq", b"card-1")
    record = serdes.dead_letters.decode(value)
    assert record == {
        "reason": "undecodable", "detail": "bad header", "stage": "router", "source_topic": "t.museflow.events",
        "source_partition": 3, "source_offset": 99, "original_key": b"card-1", "original_value": original,
        "failed_at": 1_700_000_000_500, "tenant": None, "original_timestamp": 5,
    }
    assert counter(registry, "undecodable", "router") == 1
    assert writer.counts == {("undecodable", "router"): 1}


def test_dead_letters_are_counted_per_reason_and_stage_and_keep_the_tenant() -> None:
    sink, registry = Sink(), CollectorRegistry()
    writer = DeadLetterWriter("dlq", registry=registry, stage="scorer")
    for _ in range(3):
        write(writer, sink, b"v", reason=DeadLetterReason.INVALID_AMOUNT, detail="NaN", tenant="acme-bank")
    write(writer, sink, b"v", reason=DeadLetterReason.NO_ROUTE, detail="no route", source_topic="x")
    assert counter(registry, "invalid_amount", "scorer") == 3
    assert counter(registry, "no_route", "scorer") == 1
    assert Serdes().dead_letters.decode(sink.sent[0][2])["tenant"] == "acme-bank"


def test_writers_share_counters_on_one_registry() -> None:
    registry = CollectorRegistry()
    router = DeadLetterWriter("dlq", registry=registry, stage="router")
    scorer = DeadLetterWriter("dlq", registry=registry, stage="scorer")
    write(router, Sink(), b"a", reason="clock_skew", detail="x")
    write(scorer, Sink(), b"a", reason="clock_skew", detail="x")
    assert counter(registry, "clock_skew", "router") == counter(registry, "clock_skew", "scorer") == 1


def test_a_failing_send_is_logged_and_counted_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()

    async def broken(topic: str, key: bytes | None, value: bytes) -> None:
        raise BufferError("queue full")

    writer = DeadLetterWriter("dlq", registry=registry)
    assert write(writer, broken, b"x", reason="undecodable", detail="d") is False
    assert writer.failures == 1
    assert registry.get_sample_value("museflow_dead_letter_failures_total", {"stage": "router"}) == 1
    assert counter(registry, "undecodable", "router") == 0
    assert "queue full" in caplog.text


def test_a_dead_letter_that_cannot_be_built_is_counted_not_raised() -> None:
    writer, sink = DeadLetterWriter("dlq", registry=CollectorRegistry()), Sink()
    bad_offset: Any = "not a number"
    assert writer.build(b"x", reason="undecodable", detail="d", source_offset=bad_offset) is None
    assert write(writer, sink, b"x", reason="undecodable", detail="d", source_partition=bad_offset) is False
    assert not sink.sent
    assert writer.failures == 2


def test_unknown_reasons_null_values_and_huge_details_are_kept_honest() -> None:
    sink = Sink()
    writer = DeadLetterWriter("dlq", registry=CollectorRegistry(), stage="not-a-stage")
    write(writer, sink, None, reason="made_up", detail="x" * 10_000)
    record = Serdes().dead_letters.decode(sink.sent[0][2])
    assert record["reason"] == "internal_error"
    assert record["detail"].startswith("unknown reason code 'made_up'")
    assert record["detail"].endswith("(truncated)") and len(record["detail"]) <= 4000
    assert record["original_value"] == b""
    assert writer.counts == {("internal_error", "_other"): 1}
    null_note = DeadLetterWriter("dlq", registry=CollectorRegistry()).build(None, reason="undecodable",
                                                                          detail="empty")
    assert null_note is not None and b"tombstone" in null_note.value


def test_build_and_count_serve_callers_that_send_themselves() -> None:
    registry = CollectorRegistry()
    writer = DeadLetterWriter("dlq", registry=registry, stage="scorer")
    message = writer.build(b"orig", reason=DeadLetterReason.SCORING_FAILED, detail="boom", key=None)
    assert message is not None and message.reason is DeadLetterReason.SCORING_FAILED and message.key is None
    writer.count(message.reason, message.stage)
    assert counter(registry, "scoring_failed", "scorer") == 1


def test_an_agent_rejects_a_record_through_the_writer_and_the_apps_producer() -> None:
    """The path of the Faust agents (refit and label-join on the score log, label-join on labels)."""
    from types import SimpleNamespace

    from museflow.agents.context import agent_rejecter
    from museflow.errors import SerializationError

    class Topic:
        def __init__(self, fail: bool) -> None:
            self.fail, self.sent = fail, []

        async def send(self, *, key: bytes | None, value: bytes) -> None:
            if self.fail:
                raise RuntimeError("broker gone")
            self.sent.append((key, value))

    serdes, registry = Serdes(), CollectorRegistry()
    writer = DeadLetterWriter("t.museflow.dlq", serde=serdes.dead_letters, registry=registry)
    message = SimpleNamespace(key=b"acme/m@1", value=b"\x00garbage", topic="t.museflow.score-log", partition=2,
                              offset=41)
    error = SerializationError("no known framing", reason="undecodable")
    topics = [Topic(fail=False), Topic(fail=True)]
    for topic in topics:
        app = SimpleNamespace(topic=lambda name, topic=topic: topic)
        reject = agent_rejecter(app, writer, "refit")  # type: ignore[arg-type]
        assert asyncio.run(reject(SimpleNamespace(message=message), error)) is not topic.fail
    ((key, value),) = topics[0].sent
    record = serdes.dead_letters.decode(value)
    assert key == b"acme/m@1"
    assert (record["reason"], record["stage"], record["original_value"], record["source_topic"],
            record["source_partition"], record["source_offset"]) == (
        "undecodable", "refit", b"\x00garbage", "t.museflow.score-log", 2, 41)
    assert counter(registry, "undecodable", "refit") == 1 and writer.failures == 1
