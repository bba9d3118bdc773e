"""Serde: both framings round-trip, ordinary Avro tooling reads them, bad bytes fail with one typed error."""

from __future__ import annotations

import io
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import fastavro
import numpy as np
import pytest
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from hypothesis import given, settings
from hypothesis import strategies as st

from museflow.config import TopicNames
from museflow.contracts.deadletter import DeadLetterReason
from museflow.contracts.schemas import SCHEMA_NAMES, fingerprint, load_schema
from museflow.contracts.serde import SINGLE_OBJECT_MAGIC, AvroSerde, Serdes, framing_of
from museflow.contracts.topics import ingest_topic_name
from museflow.contracts.validation import EventLimits, validate_event
from museflow.control.routing import load_routes_yaml
from museflow.control.state import PipelineState
from museflow.demo.loadgen import TransactionGenerator
from museflow.demo.malformed import BAD_KINDS, make_bad_event
from museflow.errors import SchemaError, SerializationError, ValidationError
from museflow.kafka.schema_registry import ConfluentSchemaIdResolver
from museflow.observe.metrics import PipelineMetrics
from museflow.runtime.pipeline import InMessage, RouterStep, StepResult

NOW_MS = 1_780_000_000_000

SAMPLES: dict[str, dict[str, Any]] = {
    "ScoredEvent": {
        "event_id": "e1", "tenant": "acme-bank", "intent": "card-not-present", "model": "fraud-cnp",
        "model_version": "2", "route_version": 3, "role": "champion", "raw_score": 0.12,
        "corrected_score": 0.01, "score": 0.4, "map_version": 7, "reference": "acme-cnp@1",
        "event_time": NOW_MS, "scored_at": NOW_MS + 12, "latency_ms": 12.0, "timings": {"predict": 0.4},
    },
    "ScoreLogBatch": {
        "tenant": "acme-bank", "intent": "card-not-present", "model": "fraud-cnp", "model_version": "3",
        "role": "shadow", "served": False, "route_version": 3, "map_version": None, "reference": "acme-cnp@1",
        "scored_at": NOW_MS + 9, "event_ids": ["e1", "e2"], "event_times": [NOW_MS, NOW_MS + 1],
        "raw_scores": [0.2, 0.3], "corrected_scores": [0.02, 0.03], "scores": [0.5, 0.6],
        "features": {"amount": [12.5, 7.0]},
    },
    "Label": {"event_id": "e1", "tenant": "acme-bank", "is_fraud": True, "label_time": NOW_MS + 5000,
              "event_time": NOW_MS, "cohort": "web"},
    "DeadLetter": {
        "reason": "undecodable", "detail": "bad", "stage": "router", "source_topic": "museflow.events",
        "source_partition": 2, "source_offset": 41, "original_key": b"k", "original_value": b"\x01\x02",
        "failed_at": NOW_MS, "tenant": None, "original_timestamp": NOW_MS - 5,
    },
    "Route": {
        "tenant": "acme-bank", "intent": "card-not-present", "version": 2,
        "champion": {"model": "fraud-cnp", "version": "1"},
        "candidates": [{"model": "fraud-cnp", "version": "2", "mode": "canary", "fraction": 0.1}],
        "reference": {"name": "acme-cnp", "version": 1}, "watch_thresholds": [0.9], "updated_at": NOW_MS,
        "updated_by": "ops", "comment": None, "deleted": False, "auto_rollback": False,
    },
    "ModelDeployment": {
        "model": "fraud-cnp", "version": "2", "action": "deploy", "spec_yaml": "name: fraud-cnp\n",
        "spec_sha256": "ab" * 32, "artifact_uri": "models/fraud-cnp-2.ubj", "artifact_format": "xgboost-ubj",
        "artifact_sha256": "cd" * 32, "deployed_at": NOW_MS, "deployed_by": "ops",
    },
    "QuantileMap": {
        "model": "fraud-cnp", "model_version": "2", "tenant": None, "intent": "card-not-present", "version": 4,
        "reference_name": "acme-cnp", "reference_version": 1, "sample_count": 5000, "tail_sample_count": 400,
        "window_start_ms": NOW_MS - 1000, "window_end_ms": NOW_MS, "created_at_ms": NOW_MS, "source": "rehearsal",
        "evidence": [],
        "knots_x": [0.0, 0.5, 1.0], "knots_y": [0.0, 0.7, 1.0],
    },
    "ReferenceDistribution": {"name": "acme-cnp", "version": 1, "kind": "beta", "params": {"a": 2.0, "b": 8.0},
                              "knots_u": [0.0, 1.0], "knots_x": [0.0, 1.0]},
    "ContractVerdict": {"kind": "breach", "tenant": "acme-bank", "intent": "card-not-present", "model": "fraud-cnp",
                        "model_version": "2", "route_version": 4, "tolerance": 0.1, "confidence": 0.95,
                        "thresholds": [{"threshold": 0.95, "target": 0.05, "estimate": 0.071, "low": 0.066,
                                        "high": 0.076, "samples": 24_000, "samples_needed": 7299,
                                        "verdict": "above"}],
                        "detail": "", "at": NOW_MS, "by": "museflow-watch"},
}


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return [g.event for g in TransactionGenerator(seed=7, start_ms=NOW_MS).generate(300)]


@pytest.fixture(scope="module")
def serdes() -> Serdes:
    return Serdes()


def registry_serdes(url: str = "mock://serde-tests") -> tuple[Serdes, ConfluentSchemaIdResolver]:
    resolver = ConfluentSchemaIdResolver.from_config({"url": url})
    return Serdes(resolver), resolver


def test_samples_cover_every_schema_but_the_event() -> None:
    assert set(SAMPLES) | {"TransactionEvent"} == set(SCHEMA_NAMES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_record_type_round_trips_in_both_framings(name: str, serdes: Serdes) -> None:
    reg, _ = registry_serdes()
    for serde in (serdes[name], reg[name]):
        assert serde.decode(serde.encode(SAMPLES[name])) == SAMPLES[name]


def test_events_round_trip_exactly_in_a_batch(events: list[dict[str, Any]], serdes: Serdes) -> None:
    decoded = serdes.events.decode_many(serdes.events.encode_many(events))
    assert decoded == events
    assert all(type(d["attributes"]["velocity_1h"]) is int for d in decoded)  # type: ignore[index]


def test_single_object_bytes_carry_the_spec_header_and_the_avro_package_reads_the_body(
    events: list[dict[str, Any]], serdes: Serdes,
) -> None:
    value = serdes.events.encode(events[0])
    assert value[:2] == SINGLE_OBJECT_MAGIC == b"\xc3\x01"
    parsed = avro.schema.parse(json.dumps(load_schema("TransactionEvent")))
    assert value[2:10] == avro.schema.parse(parsed.canonical_form.replace('{"type":"long"}', '"long"')).fingerprint()
    body = avro.io.DatumReader(parsed).read(avro.io.BinaryDecoder(io.BytesIO(value[10:])))
    assert body["event_id"] == events[0]["event_id"]
    assert body["event_time"].timestamp() * 1000 == pytest.approx(events[0]["event_time"])
    assert body["attributes"] == events[0]["attributes"]
    assert fastavro.schemaless_reader(io.BytesIO(value[10:]), load_schema("TransactionEvent"), None)[
        "amount"] == events[0]["amount"]


def test_registry_framing_is_read_by_confluents_deserializer_and_ours_reads_confluents_serializer(
    events: list[dict[str, Any]],
) -> None:
    reg, resolver = registry_serdes("mock://confluent-interop")
    value = reg.events.encode(events[0])
    assert value[0] == 0 and int.from_bytes(value[1:5], "big") == reg.events.schema_id
    ctx = SerializationContext("museflow.events", MessageField.VALUE)
    theirs = AvroDeserializer(resolver.client)(value, ctx)
    assert theirs["event_id"] == events[0]["event_id"] and theirs["amount"] == events[0]["amount"]
    serializer = AvroSerializer(resolver.client, json.dumps(load_schema("Label")),
                                conf={"auto.register.schemas": True})
    written = serializer(SAMPLES["Label"], ctx)
    assert reg.labels.decode(written) == SAMPLES["Label"]
    with pytest.raises(SerializationError) as info:
        reg.events.decode(written)
    assert info.value.reason == "wrong_schema"


def test_a_reader_in_either_mode_reads_both_framings(events: list[dict[str, Any]], serdes: Serdes) -> None:
    reg, _ = registry_serdes("mock://both")
    assert reg.events.decode(serdes.events.encode(events[1])) == events[1]
    assert serdes.labels.decode(serdes.labels.encode(SAMPLES["Label"])) == SAMPLES["Label"]
    assert framing_of(reg.events.encode(events[1])) == "registry"


def test_an_older_writer_schema_is_resolved_to_the_current_reader() -> None:
    old = load_schema("Label")
    old["fields"] = [f for f in old["fields"] if f["name"] not in ("cohort", "event_time")]
    writer = AvroSerde(old)
    reader = AvroSerde.for_schema("Label")
    value = writer.encode({"event_id": "e", "tenant": "t", "is_fraud": False, "label_time": 5})
    with pytest.raises(SerializationError, match="not a known schema") as info:
        reader.decode(value)
    assert info.value.reason == "unknown_schema"
    reader.add_writer_schema(old)
    assert reader.decode(value) == {"event_id": "e", "tenant": "t", "is_fraud": False, "label_time": 5,
                                    "event_time": None, "cohort": None}
    with pytest.raises(SchemaError):
        reader.add_writer_schema(load_schema("Route"))


@pytest.mark.parametrize(
    ("value", "reason", "message"),
    [
        (None, "undecodable", "null"),
        (b"", "undecodable", "neither Avro single-object"),
        (b"{\"json\": true}", "undecodable", "neither Avro single-object"),
        (b"\xc3\x01\x00", "undecodable", "neither"),
        (SINGLE_OBJECT_MAGIC + b"\x00" * 8 + b"body", "unknown_schema", "fingerprint 0000000000000000"),
        (b"\x00\x00\x00\x30\x39" + b"body", "unknown_schema", "registry id 12345"),
    ],
)
def test_bad_framings_raise_one_typed_error(value: bytes | None, reason: str, message: str, serdes: Serdes) -> None:
    with pytest.raises(SerializationError, match=message) as info:
        serdes.events.decode(value)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)


def test_truncated_corrupt_and_padded_bodies_are_undecodable(events: list[dict[str, Any]], serdes: Serdes) -> None:
    value = serdes.events.encode(events[2])
    spoiled = [value[:cut] for cut in range(10, len(value))] + [value + b"\x00"]
    corrupt = bytearray(value)
    corrupt[10] = 0x7F  # event_id length -> 63 chars, misaligning everything after it
    spoiled.append(bytes(corrupt))
    results = serdes.events.decode_many(spoiled)
    assert len(results) == len(spoiled)
    assert all(isinstance(r, SerializationError) and r.reason == "undecodable" for r in results), [
        r for r in results if not isinstance(r, SerializationError)][:1]


def test_a_record_of_another_museflow_type_is_wrong_schema(serdes: Serdes) -> None:
    with pytest.raises(SerializationError, match="a Label record where a TransactionEvent") as info:
        serdes.events.decode(serdes.labels.encode(SAMPLES["Label"]))
    assert info.value.reason == "wrong_schema"


def test_decode_many_keeps_going_past_bad_elements(events: list[dict[str, Any]], serdes: Serdes) -> None:
    values = serdes.events.encode_many(events[:3])
    mixed = [values[0], b"junk", values[1], None, values[2]]
    out = serdes.events.decode_many(mixed)
    assert [isinstance(o, SerializationError) for o in out] == [False, True, False, True, False]
    assert [o for o in out if isinstance(o, dict)] == events[:3]


def test_encoding_a_record_that_does_not_fit_says_which_and_why(serdes: Serdes) -> None:
    with pytest.raises(SerializationError, match=r"record #1 does not fit schema io.museflow.labels.Label") as info:
        serdes.labels.encode_many([SAMPLES["Label"], {"event_id": "e"}])
    assert info.value.reason == "unencodable"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_serialization_error(value: bytes) -> None:
    serde = _SERDES.events
    for candidate in (value, SINGLE_OBJECT_MAGIC + serde.fingerprint + value):
        try:
            decoded = serde.decode(candidate)
        except SerializationError as exc:
            assert exc.reason in {"undecodable", "unknown_schema", "wrong_schema"}
        else:  # random bytes can happen to be a valid body; then they decode to a whole record
            assert set(decoded) == {f["name"] for f in load_schema("TransactionEvent")["fields"]}


_SERDES = Serdes()


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=299), st.data())
def test_any_truncation_or_byte_flip_of_an_event_is_caught_or_still_a_valid_event(index: int, data: Any) -> None:
    value = _SERDES.events.encode(_EVENTS[index])
    cut = data.draw(st.integers(min_value=0, max_value=len(value) - 1))
    with pytest.raises(SerializationError):
        _SERDES.events.decode(value[:cut])
    flipped = bytearray(value)
    flipped[data.draw(st.integers(min_value=10, max_value=len(value) - 1))] ^= data.draw(
        st.integers(min_value=1, max_value=255))
    try:
        _SERDES.events.decode(bytes(flipped))
    except SerializationError as exc:
        assert exc.reason == "undecodable"


_EVENTS = [g.event for g in TransactionGenerator(seed=11, start_ms=NOW_MS).generate(300)]


# -- validation and classification ---------------------------------------------------------


def _event(**changes: Any) -> dict[str, Any]:
    event = dict(_EVENTS[0])
    event.update(changes)
    return event


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"amount": math.nan}, "invalid_amount"),
        ({"amount": math.inf}, "invalid_amount"),
        ({"amount": -1.0}, "invalid_amount"),
        ({"amount": 1e12}, "invalid_amount"),
        ({"tenant": "Acme"}, "invalid_tenant"),
        ({"tenant": "acme.bank"}, "invalid_tenant"),
        ({"tenant": "../scores"}, "invalid_tenant"),
        ({"tenant": "a" * 64}, "invalid_tenant"),
        ({"event_id": ""}, "invalid_event"),
        ({"intent": "Card Not Present"}, "invalid_event"),
        ({"currency": "euro"}, "invalid_event"),
        ({"event_time": NOW_MS + 3_600_000}, "clock_skew"),
        ({"attributes": {"velocity_1h": math.inf}}, "invalid_event"),
        ({"tenant": "ghost-bank"}, "unknown_tenant"),
        ({"intent": "teleportation"}, "unknown_intent"),
    ],
)
def test_validate_event_rejects_with_the_right_reason(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_event(_event(**changes), now_ms=NOW_MS, tenants={"acme-bank", "globex-pay", "initech-fin"},
                       intents={"card-not-present", "account-takeover"})
    assert info.value.reason == reason
    assert reason in {r.value for r in DeadLetterReason}


def test_validate_event_accepts_generated_events_and_nan_attributes() -> None:
    for event in _EVENTS:
        validate_event(event, now_ms=NOW_MS)
    validate_event(_event(attributes={"ip_risk": math.nan}), now_ms=NOW_MS,
                   limits=EventLimits(max_future_skew_ms=10**12))


def _router(tmp_path: Path, tenants: tuple[str, ...] = ("acme-bank", "globex-pay", "initech-fin"),
            intents: tuple[str, ...] = ("card-not-present", "account-takeover")) -> RouterStep:
    """The production router with a route for every tenant and intent, its clock at NOW_MS."""
    state = PipelineState(model_dir=tmp_path, metrics=PipelineMetrics())
    lines = [f"  - {{tenant: {t}, intent: {i}, champion: fraud-cnp@1}}" for t in tenants for i in intents]
    for route in load_routes_yaml(text="routes:\n" + "\n".join(lines) + "\n"):
        state.routes.apply(replace(route, version=1))
    return RouterStep(state, TopicNames("s."), validate_event, clock=lambda: NOW_MS / 1000)


def _route(router: RouterStep, serde: AvroSerde, values: list[bytes]) -> StepResult:
    messages = [InMessage(b"k", v, router.topics.events, 0, i) for i, v in enumerate(values)]
    return router.run(messages, serde.decode_many(values))


@pytest.mark.parametrize("kind", sorted(BAD_KINDS))
@pytest.mark.parametrize("registry", [False, True], ids=["single-object", "registry"])
def test_every_malformed_kind_is_dead_lettered_by_the_router_with_its_reason(
        kind: str, registry: bool, tmp_path: Path) -> None:
    serdes = registry_serdes(f"mock://classify-{kind}")[0] if registry else _SERDES
    rng = np.random.default_rng(3)
    bad = [make_bad_event(kind, event, b"k", serdes, rng) for event in _EVENTS[:20]]
    result = _route(_router(tmp_path), serdes.events, [b.value for b in bad])
    assert not result.out and len(result.dead) == len(bad)
    for b, dead in zip(bad, result.dead, strict=True):
        assert DeadLetterReason.parse(dead.reason) is b.reason == BAD_KINDS[kind], (kind, dead)
        assert dead.detail and dead.message.value == b.value


def test_the_router_passes_good_events_on_and_names_the_tenant_of_a_rejected_one(
        serdes: Serdes, tmp_path: Path) -> None:
    router = _router(tmp_path, tenants=tuple(sorted({e["tenant"] for e in _EVENTS[:50]})),
                     intents=tuple(sorted({e["intent"] for e in _EVENTS[:50]})))
    good = _route(router, serdes.events, serdes.events.encode_many(_EVENTS[:50]))
    assert not good.dead and good.primary == 50
    assert [serdes.events.decode(o.value) for o in good.out if o.primary] == _EVENTS[:50]
    (rejected,) = _route(router, serdes.events, [serdes.events.encode(_event(tenant="BAD", amount=-5.0))]).dead
    assert rejected.reason == DeadLetterReason.INVALID_TENANT.value
    assert rejected.tenant is None
    (mismatch,) = router.run([InMessage(b"k", b"v", ingest_topic_name(router.topics, "acme-bank"), 0, 0)],
                             [_event(tenant="globex-pay")]).dead
    assert mismatch.reason == DeadLetterReason.TENANT_MISMATCH.value and mismatch.tenant == "acme-bank"


def test_decode_any_picks_the_schema_by_framing(serdes: Serdes) -> None:
    for name, sample in SAMPLES.items():
        decoded = serdes.decode_any(serdes[name].encode(sample))
        assert (decoded.schema, decoded.record) == (name, sample)
    with pytest.raises(SerializationError, match="cannot tell which museflow schema"):
        serdes.decode_any(b"\x05\x06")
    assert serdes.schema_for_topic("p.museflow.scores.acme-bank", _topics("p.")) == "ScoredEvent"
    assert serdes.schema_for_topic("museflow.dlq") == "DeadLetter"
    assert serdes.schema_for_topic("elsewhere") is None


def _topics(prefix: str) -> Any:
    from museflow.config import TopicNames

    return TopicNames(prefix)


def test_fingerprint_header_matches_the_schema_module() -> None:
    assert _SERDES.events.header == SINGLE_OBJECT_MAGIC + fingerprint(load_schema("TransactionEvent"))
