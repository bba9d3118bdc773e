"""Tenant ingest topics: the topic a record was read from names its tenant, not the record.

An event on tenant T's ingest topic (``museflow.events.T``, which only T may write) whose
``tenant`` is not T is a ``tenant_mismatch`` dead letter with its original bytes, never routed;
a matching one is routed exactly as from the shared events topic, where nothing changes.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from museflow.config import Settings, TopicNames
from museflow.contracts.deadletter import DeadLetterReason, DeadLetterWriter
from museflow.contracts.serde import Serdes
from museflow.contracts.topics import (
    EVENT_MAX_BYTES,
    configured_max_bytes,
    core_topics,
    ingest_pattern,
    ingest_tenant,
    ingest_topic,
    ingest_topic_name,
)
from museflow.contracts.validation import validate_event
from museflow.control.routing import load_routes_yaml
from museflow.control.state import PipelineState
from museflow.demo.loadgen import TransactionGenerator
from museflow.observe.metrics import PipelineMetrics
from museflow.runtime.pipeline import InMessage, RouterStep, StepResult

TOPICS = TopicNames("u.")
NOW_MS = int(time.time() * 1000)
CNP = "card-not-present"
ROUTES = f"""
routes:
  - {{tenant: acme, intent: {CNP}, champion: fraud-cnp@1}}
  - {{tenant: acme-bank, intent: {CNP}, champion: fraud-cnp@1}}
"""
SERDES = Serdes()


@pytest.fixture
def router(tmp_path: Path) -> RouterStep:
    state = PipelineState(model_dir=tmp_path, metrics=PipelineMetrics())
    for route in load_routes_yaml(text=ROUTES):
        state.routes.apply(replace(route, version=1))
    return RouterStep(state, TOPICS, validate_event, clock=lambda: NOW_MS / 1000)


def encoded(tenants: list[str], seed: int = 5) -> list[bytes]:
    generated = TransactionGenerator(seed=seed).generate(len(tenants), start_ms=NOW_MS - 60_000)
    events: list[dict[str, Any]] = [{**g.event, "tenant": t, "intent": CNP}
                                    for g, t in zip(generated, tenants, strict=True)]
    return [SERDES.events.encode(e) for e in events]


def run(router: RouterStep, topic: str, values: list[bytes], **kwargs: Any) -> tuple[list[InMessage], StepResult]:
    messages = [InMessage(b"card-%d" % i, v, topic, 0, i) for i, v in enumerate(values)]
    return messages, router.run(messages, SERDES.events.decode_many(values), **kwargs)


def test_an_event_on_a_tenants_ingest_topic_naming_another_tenant_is_dead_lettered_not_routed(
        router: RouterStep) -> None:
    tenants = ["acme", "acme-bank", "acme", "acme-bank", "acme"]
    values = encoded(tenants)
    messages, result = run(router, ingest_topic_name(TOPICS, "acme"), values)
    forged = [m for m, t in zip(messages, tenants, strict=True) if t != "acme"]
    assert [d.reason for d in result.dead] == ["tenant_mismatch"] * len(forged)
    assert [d.message for d in result.dead] == forged  # the original bytes and coordinates
    assert all(d.tenant == "acme" for d in result.dead), "the dead letter names the topic's (authenticated) tenant"
    assert "u.museflow.events.acme" in result.dead[0].detail and "'acme-bank'" in result.dead[0].detail
    routed = [o for o in result.out if o.primary]
    assert [o.source for o in routed] == [m for m, t in zip(messages, tenants, strict=True) if t == "acme"]
    assert all(SERDES.events.decode(o.value)["tenant"] == "acme" for o in result.out)
    assert result.primary + len(result.dead) == len(values)  # conservation


def test_the_shared_events_topic_routes_every_tenant_as_before(router: RouterStep) -> None:
    tenants = ["acme", "acme-bank", "acme", "acme-bank"]
    values = encoded(tenants)
    _, shared = run(router, TOPICS.events, values)
    assert shared.dead == [] and shared.primary == len(values)
    # the honest tenant's events come out of its ingest topic exactly as from the shared topic
    _, own = run(router, ingest_topic_name(TOPICS, "acme"), values)
    key = [(o.topic, o.key, o.value, o.headers) for o in own.out]
    assert key == [(o.topic, o.key, o.value, o.headers) for o in shared.out
                   if SERDES.events.decode(o.value)["tenant"] == "acme"]


def test_the_tenant_check_comes_before_validation_and_routing(router: RouterStep) -> None:
    values = [*encoded(["ACME", "initech", "initech"]), b"\x00not avro"]
    _, on_acme = run(router, ingest_topic_name(TOPICS, "acme"), values)
    _, garbage = run(router, TOPICS.events, values[3:])
    assert garbage.dead[0].reason != "tenant_mismatch"  # bytes that do not decode stay what they were
    assert [d.reason for d in on_acme.dead] == ["tenant_mismatch"] * 3 + [garbage.dead[0].reason]
    # on its own ingest topic a tenant without a route is unknown, as on the shared topic
    _, on_initech = run(router, ingest_topic_name(TOPICS, "initech"), values[1:3])
    _, shared = run(router, TOPICS.events, values[1:3])
    assert [d.reason for d in on_initech.dead] == [d.reason for d in shared.dead] == ["unknown_tenant"] * 2


def test_a_mismatched_event_is_not_scored_in_place_either(router: RouterStep) -> None:
    values = encoded(["acme-bank", "acme"])
    _, result = run(router, ingest_topic_name(TOPICS, "acme"), values, in_place=lambda model: True)
    assert [d.reason for d in result.dead] == ["tenant_mismatch"]
    assert [event["tenant"] for _, event in result.in_place] == ["acme"]


def test_the_router_pattern_matches_ingest_topics_only_under_its_own_prefix() -> None:
    pattern = ingest_pattern(TOPICS)
    assert pattern.startswith("^u\\.museflow\\.events\\.") and pattern.endswith("$")
    matches = [t for t in ("u.museflow.events.acme", "u.museflow.events.acme-bank", "u.museflow.events",
                           "u.museflow.events-x", "uxmuseflow.events.acme", "v.u.museflow.events.acme",
                           "u.museflow.events.acme.x", "u.museflow.scores.acme", "u.museflow.events.Acme")
               if re.match(pattern, t)]
    assert matches == ["u.museflow.events.acme", "u.museflow.events.acme-bank"]
    assert [ingest_tenant(TOPICS, t) for t in matches] == ["acme", "acme-bank"]
    assert ingest_tenant(TOPICS, TOPICS.events) is None and ingest_tenant(TOPICS, "u.museflow.dlq") is None


def test_an_ingest_topic_is_configured_as_the_events_topic() -> None:
    settings = Settings(topic_prefix="p.", partitions=3)
    spec = ingest_topic(settings, "acme")
    events = next(s for s in core_topics(settings) if s.name == settings.topics.events)
    assert spec.name == "p.museflow.events.acme"
    assert (spec.partitions, spec.config) == (events.partitions, events.config)
    assert configured_max_bytes(settings, spec.name) == EVENT_MAX_BYTES


def test_tenant_mismatch_is_a_reason_code_the_dead_letter_keeps() -> None:
    assert DeadLetterReason.parse("tenant_mismatch") is DeadLetterReason.TENANT_MISMATCH
    writer = DeadLetterWriter(TOPICS.dlq, serde=SERDES.dead_letters)
    original = encoded(["acme-bank"])[0]
    letter = writer.build(original, reason="tenant_mismatch", detail="d", tenant="acme",
                          source_topic="u.museflow.events.acme")
    assert letter is not None
    record = SERDES.dead_letters.decode(letter.value)
    assert (record["reason"], record["original_value"], record["tenant"]) == ("tenant_mismatch", original, "acme")
