"""One partitioning key: producers and the router key an event the same way (no broker)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from museflow.config import TopicNames
from museflow.contracts.serde import Serdes
from museflow.contracts.validation import event_key, validate_event
from museflow.control.routing import load_routes_yaml
from museflow.control.state import PipelineState
from museflow.demo import producing
from museflow.demo.loadgen import TransactionGenerator
from museflow.observe.metrics import PipelineMetrics
from museflow.runtime.pipeline import InMessage, RouterStep

TOPICS = TopicNames("k.")


def test_the_key_is_the_card_else_the_account_else_the_event() -> None:
    assert event_key({"card_id": "c1", "account_id": "a1", "event_id": "e1"}) == b"c1"
    assert event_key({"card_id": None, "account_id": "a1", "event_id": "e1"}) == b"a1"
    assert event_key({"card_id": "", "account_id": None, "event_id": "e1"}) == b"e1"
    assert event_key({}) == b""
    assert producing.event_key is event_key  # the demo producer keys with the same function


def test_the_router_keeps_a_producers_key_and_keys_an_unkeyed_event_like_a_producer(tmp_path: Path) -> None:
    state = PipelineState(model_dir=tmp_path, metrics=PipelineMetrics())
    for route in load_routes_yaml(text="routes:\n  - {tenant: acme-bank, intent: card-not-present, "
                                       "champion: fraud-cnp@1}\n"):
        state.routes.apply(replace(route, version=1))
    event = dict(TransactionGenerator(seed=5).generate(1, start_ms=1_700_000_000_000)[0].event)
    event.update(tenant="acme-bank", intent="card-not-present")
    serdes = Serdes()
    value = serdes.events.encode(event)
    messages = [InMessage(None, value, TOPICS.events, 0, 0), InMessage(b"given", value, TOPICS.events, 0, 1)]
    result = RouterStep(state, TOPICS, validate_event, clock=lambda: 1_700_000_000.0).run(
        messages, serdes.events.decode_many([value, value]))
    assert not result.dead
    assert [o.key for o in result.out] == [event_key(event), b"given"]
