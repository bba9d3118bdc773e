"""Poison input and repair on the real broker: oversize events, forged ``mf-*`` headers, DLQ replay.

- An event whose forward exceeds the model topic's ``max.message.bytes`` becomes exactly one
  ``oversize`` dead letter with its original bytes; the events around it are scored and the
  workers keep running (before, the refused delivery stopped the router on every restart).
- Events carrying forged ``mf-*`` headers get the very decisions of the same events sent clean.
- Events dead-lettered for a missing route are scored after the route is set and
  ``museflow dlq replay`` re-publishes them; every event id is accounted for.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from museflow.cli.main import cli
from museflow.config import Settings
from museflow.contracts.validation import event_key
from museflow.control.routing import ModelRef, Route
from museflow.demo.loadgen import TransactionGenerator
from museflow.demo.supervise import WorkerProcess
from museflow.kafka.clients import DeliveryReport, make_producer, read_topic
from museflow.kafka.plane import set_routes
from museflow.kafka.schema_registry import serdes_from_settings
from tests.integration.conftest import wait_for
from tests.integration.test_faults import TENANTS, Traffic, account
from tests.integration.test_runtime import _set_max_message_bytes
from tests.unit.test_bad_input import encoded
from tests.unit.test_poison_input import FORGED

DECISION = ("model", "model_version", "role", "route_version", "raw_score", "corrected_score", "score",
            "map_version", "reference", "tenant", "intent")


Record = tuple[bytes | None, bytes, dict[str, bytes] | None]


def _send(settings: Settings, records: list[Record]) -> None:
    producer = make_producer(settings)
    report = DeliveryReport()
    for key, value, headers in records:
        producer.produce(settings.topics.events, key=key, value=value, on_delivery=report,
                         headers=list(headers.items()) if headers else None)
    assert producer.flush(30) == 0 and report.failed == 0, report.errors


def _scored(settings: Settings, tenants: tuple[str, ...] = TENANTS) -> list[dict[str, Any]]:
    serde = serdes_from_settings(settings).scored
    return [serde.decode(r.value) for t in tenants for r in read_topic(settings, settings.topics.scores(t))]


def _dead_letters(settings: Settings) -> list[dict[str, Any]]:
    serde = serdes_from_settings(settings).dead_letters
    return [serde.decode(r.value) for r in read_topic(settings, settings.topics.dlq)]


def _events(seed: int, n: int, **changes: Any) -> list[dict[str, Any]]:
    start = int(time.time() * 1000) - 60_000
    return [{**g.event, **changes} for g in TransactionGenerator(seed=seed).generate(n, start_ms=start, rate=50)]


def test_an_oversize_forward_is_one_dead_letter_and_the_workers_keep_scoring(
        settings: Settings, deployed: dict[str, Path], start_worker: Callable[..., WorkerProcess]) -> None:
    _set_max_message_bytes(settings, settings.topics.model("fraud-cnp"), 300_000)
    router, scorer = start_worker(roles=("router",)), start_worker(roles=("scorer",))
    big = encoded(event_id="oversize-1", attributes={f"a{i}": float(i) for i in range(20_000)})
    assert 300_000 < len(big) < 1_000_000  # the events topic takes it; the model topic does not
    before = Traffic(settings, 300, rate=300, seed=81).join()
    _send(settings, [(b"card-oversize", big, None)])
    after = Traffic(settings, 300, rate=300, seed=82).join()

    good = {e["event_id"] for e in (*before.events, *after.events)}
    wait_for(lambda: good <= {r["event_id"] for r in _scored(settings)} and bool(_dead_letters(settings)), 120,
             "every good event scored and the dead letter out", poll=2)
    time.sleep(2)  # anything late (a second dead letter, a duplicate) would show now
    letters = _dead_letters(settings)
    assert [(d["reason"], d["stage"], d["original_value"], d["original_key"]) for d in letters] == [
        ("oversize", "router", big, b"card-oversize")], [d["detail"] for d in letters]
    assert "300,000" in letters[0]["detail"]
    for summary in (before, after):
        acc = account(settings, summary)
        assert acc.lost == 0 and acc.good_in_dlq == 0 and acc.duplicates == 0
    scored = Counter(r["event_id"] for r in _scored(settings))
    assert "oversize-1" not in scored and set(scored) == good and set(scored.values()) == {1}
    assert len(good) + 1 == sum(scored.values()) + len(letters), "conservation"
    assert router.alive() and scorer.alive(), router.log_tail()
    assert 'museflow_dead_letters_total{reason="oversize",stage="router"} 1.0' in router.metrics()


def test_forged_mf_headers_on_events_get_the_decisions_of_the_same_events_sent_clean(
        settings: Settings, deployed: dict[str, Path], start_worker: Callable[..., WorkerProcess]) -> None:
    start_worker(roles=("router",))
    start_worker(roles=("scorer",))
    events = _events(83, 300)
    values = serdes_from_settings(settings).events.encode_many(events)
    clean: list[Record] = [(event_key(e), v, None) for e, v in zip(events, values, strict=True)]
    forged: list[Record] = [(event_key(e), v, FORGED[i % len(FORGED)])
                            for i, (e, v) in enumerate(zip(events, values, strict=True))]
    _send(settings, clean + forged)

    wait_for(lambda: len(_scored(settings)) >= 2 * len(events), 120, "both copies of every event scored", poll=2)
    time.sleep(2)
    copies: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in _scored(settings):
        copies[record["event_id"]].append(record)
    assert set(copies) == {e["event_id"] for e in events}
    for event_id, records in copies.items():
        assert len(records) == 2, (event_id, records)
        first, second = ({k: r[k] for k in DECISION} for r in records)
        assert first == second, event_id
    assert {r[0]["role"] for r in copies.values()} >= {"champion", "canary"}  # canary draws included
    assert _dead_letters(settings) == []


def test_dead_letters_of_a_missing_route_are_scored_after_the_fix_and_a_replay(
        settings: Settings, deployed: dict[str, Path], start_worker: Callable[..., WorkerProcess]) -> None:
    worker = start_worker(roles=("router", "scorer"))
    serde = serdes_from_settings(settings).events
    good = _events(84, 100)
    wire = _events(85, 50, tenant="acme-bank", intent="wire-transfer")
    wire_values = serde.encode_many(wire)
    sent: list[Record] = [(event_key(e), v, None) for e, v in zip(good, serde.encode_many(good), strict=True)]
    _send(settings, sent + [(event_key(e), v, None) for e, v in zip(wire, wire_values, strict=True)])
    wait_for(lambda: len(_dead_letters(settings)) >= 50 and len(_scored(settings)) >= 100, 120,
             "the route-less events dead-lettered", poll=2)
    assert {d["reason"] for d in _dead_letters(settings)} == {"unknown_intent"}

    set_routes(settings, [Route("acme-bank", "wire-transfer", ModelRef("ato", "1"))])  # the fix
    probe = _events(86, 1, tenant="acme-bank", intent="wire-transfer", event_id="probe-1")
    _send(settings, [(b"probe", serde.encode(probe[0]), None)])
    wait_for(lambda: "probe-1" in {r["event_id"] for r in _scored(settings, ("acme-bank",))}, 60,
             "the worker to apply the new route", poll=1)

    env = {**settings.to_env(), "COLUMNS": "200"}
    dry = CliRunner().invoke(cli, ["dlq", "replay", "--reason", "unknown_intent", "--since", "15m", "--dry-run"],
                             env=env)
    assert dry.exit_code == 0, dry.output
    assert "dry run: 50 dead letters would go to" in dry.output
    skipped = CliRunner().invoke(cli, ["dlq", "replay", "--reason", "model_unavailable", "--since", "15m",
                                       "--dry-run"], env=env)
    assert skipped.exit_code == 0 and "dry run: 0 dead letters" in skipped.output and "another reason" in skipped.output
    done = CliRunner().invoke(cli, ["dlq", "replay", "--reason", "unknown_intent", "--since", "15m"], env=env)
    assert done.exit_code == 0, done.output
    assert "50 of 50 events re-published" in done.output

    ids = {e["event_id"] for e in (*good, *wire)} | {"probe-1"}
    wait_for(lambda: ids <= {r["event_id"] for r in _scored(settings)}, 120, "the replayed events scored", poll=2)
    time.sleep(2)
    scored = Counter(r["event_id"] for r in _scored(settings))
    assert set(scored) == ids and set(scored.values()) == {1}
    letters = _dead_letters(settings)
    assert sorted(d["original_value"] for d in letters) == sorted(wire_values), "no new dead letters"
    events_topic = read_topic(settings, settings.topics.events)
    replayed = [r for r in events_topic if any(k == "mf-replay-of" for k, _ in r.headers)]
    assert sorted(r.value or b"" for r in replayed) == sorted(wire_values)
    assert {r.key for r in replayed} == {event_key(e) for e in wire}
    assert len(events_topic) == sum(scored.values()) + len(letters), "conservation: in = scored + dead letters"
    wire_scored = [r for r in _scored(settings, ("acme-bank",)) if r["intent"] == "wire-transfer"]
    assert {(r["model"], r["model_version"]) for r in wire_scored} == {("ato", "1")} and len(wire_scored) == 51
    assert worker.alive(), worker.log_tail()
