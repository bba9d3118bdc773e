"""The streaming pipeline on a real broker: routing, shared models, tenant topics, conservation."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from museflow.config import Settings
from museflow.contracts.scorelog import rows
from museflow.control.routing import ModelRef
from museflow.demo.loadgen import TransactionGenerator
from museflow.demo.producing import produce_events
from museflow.demo.supervise import WorkerProcess
from museflow.kafka.plane import publish_route, read_state
from tests.integration.conftest import read_records, topic_size, wait_for

TENANTS = ("acme-bank", "globex-pay", "initech-fin")


def scored_by_tenant(settings: Settings) -> dict[str, list[dict]]:
    return {t: read_records(settings, settings.topics.scores(t), "ScoredEvent") for t in TENANTS}


def test_twenty_thousand_events_land_once_in_their_own_tenant_topic(
    settings: Settings, deployed: dict[str, Path], start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker()
    sent = produce_events(settings, TransactionGenerator(seed=11), 20_200, bad_fraction=0.01, keep=True, seed=5)
    assert sent.ok and sent.sent == 20_200
    good = {e["event_id"]: e for e in sent.events}
    expected_out = len(good)
    wait_for(lambda: sum(topic_size(settings, settings.topics.scores(t)) for t in TENANTS) >= expected_out
             and topic_size(settings, settings.topics.dlq) >= len(sent.bad), 180, "every event scored or dead-lettered")
    time.sleep(2)

    scored = scored_by_tenant(settings)
    seen: Counter[str] = Counter()
    for tenant, records in scored.items():
        for r in records:
            seen[r["event_id"]] += 1
            assert r["tenant"] == tenant, f"{r['event_id']} of {r['tenant']} landed in {tenant}'s topic"
            assert good[r["event_id"]]["tenant"] == tenant
            assert r["role"] in ("champion", "canary") and r["map_version"] >= 0 and r["route_version"] == 1
    assert set(seen) == set(good), f"missing {len(set(good) - set(seen))} events"
    assert max(seen.values()) == 1

    # Shadow scores (fraud-cnp@2 on acme-bank) go to the score log only.
    log = list(rows(read_records(settings, settings.topics.score_log, "ScoreLogBatch")))
    shadow = [r for r in log if r["role"] == "shadow"]
    acme_cnp = [e for e in good.values() if e["tenant"] == "acme-bank" and e["intent"] == "card-not-present"]
    assert len(shadow) == len(acme_cnp) and {r["model_version"] for r in shadow} == {"2"}
    assert all(not r["served"] for r in shadow)
    assert not [r for r in scored["acme-bank"] if r["model_version"] == "2"]

    # Canary: 10% +- 1.5% of globex-pay card-not-present is served by fraud-cnp@2.
    globex = [r for r in scored["globex-pay"] if r["intent"] == "card-not-present"]
    canary = [r for r in globex if r["role"] == "canary"]
    assert all(r["model_version"] == "2" for r in canary)
    assert abs(len(canary) / len(globex) - 0.10) <= 0.015, len(canary) / len(globex)

    # Conservation: events in = scored + dead letters, and every bad event has its reason.
    dead = read_records(settings, settings.topics.dlq, "DeadLetter")
    assert sent.sent == sum(len(v) for v in scored.values()) + len(dead)
    by_value = {d["original_value"]: d["reason"] for d in dead}
    for bad in sent.bad:
        assert by_value[bad.value] == bad.reason.value, bad.kind

    metrics = worker.metrics()
    assert "museflow_events_out_total" in metrics and "museflow_dead_letters_total" in metrics


def test_a_route_change_applies_to_later_events_without_restart(
    settings: Settings, deployed: dict[str, Path], start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker(roles=("router", "scorer"))
    first = produce_events(settings, TransactionGenerator(seed=21), 2000, keep=True)
    topic = settings.topics.scores("initech-fin")
    first_ids = {e["event_id"] for e in first.events if e["tenant"] == "initech-fin"}
    wait_for(lambda: topic_size(settings, topic) >= len(first_ids), 120, "first batch scored")

    route = read_state(settings).routes.get("initech-fin", "card-not-present")
    assert route is not None
    from dataclasses import replace

    publish_route(settings, replace(route, champion=ModelRef("fraud-cnp", "2"), version=route.version + 1))
    time.sleep(3)
    later = produce_events(settings, TransactionGenerator(seed=22), 2000, keep=True)
    later_ids = {e["event_id"] for e in later.events if e["tenant"] == "initech-fin"}
    wait_for(lambda: topic_size(settings, topic) >= len(first_ids) + len(later_ids), 120, "second batch scored")

    records = {r["event_id"]: r for r in read_records(settings, topic, "ScoredEvent")}
    cnp_later = [records[i] for i in later_ids if records[i]["intent"] == "card-not-present"]
    assert cnp_later and all((r["model_version"], r["route_version"]) == ("2", 2) for r in cnp_later)
    cnp_first = [records[i] for i in first_ids if records[i]["intent"] == "card-not-present"]
    assert all((r["model_version"], r["route_version"]) == ("1", 1) for r in cnp_first)


def test_two_workers_in_one_group_split_partitions_and_score_everything(
    settings: Settings, deployed: dict[str, Path], start_worker: Callable[..., WorkerProcess]
) -> None:
    a = start_worker(roles=("router", "scorer"))
    b = start_worker(roles=("router", "scorer"))
    time.sleep(5)
    sent = produce_events(settings, TransactionGenerator(seed=31), 6000, keep=True)
    ids = {e["event_id"] for e in sent.events}
    wait_for(lambda: sum(topic_size(settings, settings.topics.scores(t)) for t in TENANTS) >= len(ids), 150,
             "both workers scored everything")
    scored = [r["event_id"] for records in scored_by_tenant(settings).values() for r in records]
    assert set(scored) == ids and len(scored) == len(ids)

    def routed(worker: WorkerProcess) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in worker.metrics().splitlines()
                   if line.startswith("museflow_events_in_total{"))

    assert routed(a) > 0 and routed(b) > 0, (routed(a), routed(b))
    assert routed(a) + routed(b) == len(ids)
