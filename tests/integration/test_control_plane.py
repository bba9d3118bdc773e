"""The control plane on a real broker: convergence after compaction, compare-and-set, where groups start.

The convergence test writes every hazard (through the library and raw producers) while a
worker runs, makes the log cleaner compact the control topics, starts a second worker and
compares the two: the route, model and map versions they export, and the versions on scored
probe events, must be identical, with no ``model_unavailable`` or ``unknown_route`` dead letters.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from museflow.config import Settings
from museflow.contracts.topics import COMPACTED, TopicSpec, core_topics
from museflow.control.keys import control_key, value_digest
from museflow.control.routing import Candidate, ModelRef, load_routes_yaml
from museflow.demo.supervise import WorkerProcess
from museflow.errors import ConflictError
from museflow.kafka.admin import ensure_topics
from museflow.kafka.clients import read_topic
from museflow.kafka.control import publish_control
from museflow.kafka.plane import (
    deployment_record,
    publish_reference,
    publish_route,
    read_state,
    set_routes,
)
from museflow.kafka.schema_registry import serdes_from_settings
from museflow.transform.qmap import QuantileMap
from museflow.transform.reference import ReferenceDistribution
from tests.integration.conftest import ROUTES, wait_for
from tests.integration.test_faults import Traffic, settled, worker

pytestmark = pytest.mark.timeout(600)

CNP = "card-not-present"
V1, V2 = ModelRef("fraud-cnp", "1"), ModelRef("fraud-cnp", "2")
# Segments roll within a second and any dirty ratio is worth cleaning: the cleaner runs within
# its backoff (15 s) of the next append.
EAGER = {**COMPACTED, "segment.ms": "1000", "min.cleanable.dirty.ratio": "0.001", "delete.retention.ms": "1000"}


def state_metrics(w: WorkerProcess) -> dict[str, dict[tuple[str, ...], float]]:
    """The gauges that say what a worker serves: route, map and loaded model versions."""
    wanted = {"museflow_route_version", "museflow_quantile_map_version", "museflow_models_loaded"}
    out: dict[str, dict[tuple[str, ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(w.metrics()):
        for sample in family.samples:
            if sample.name in wanted:
                out[sample.name][tuple(sorted(sample.labels.items()))] = sample.value  # type: ignore[arg-type]
    return dict(out)


def raw(settings: Settings, kind: str, schema: str, record: dict[str, Any], key: str | None = None) -> None:
    """A record written around the library, as a second tool or an older CLI would."""
    value = serdes_from_settings(settings)[schema].encode(record)
    topic = {"route": settings.topics.routes, "deployment": settings.topics.deployments,
             "map": settings.topics.quantile_maps, "reference": settings.topics.references}[kind]
    publish_control(settings, topic, key or control_key(kind, record, value_digest(value)), value)


def compaction_done(settings: Settings, topic: str, key: str) -> bool:
    return sum(1 for r in read_topic(settings, topic) if r.key == key.encode()) == 1


def test_a_worker_started_after_compaction_serves_exactly_what_a_running_one_serves(
        settings: Settings, demo_models: dict[str, Path], tmp_path: Path, workers: list[WorkerProcess]) -> None:
    from museflow.kafka.plane import deploy

    t = settings.topics
    ensure_topics(settings, [TopicSpec(name, 1, dict(EAGER)) for name in
                             (t.routes, t.deployments, t.quantile_maps, t.references)])
    ensure_topics(settings, core_topics(settings))
    for spec in demo_models.values():
        deploy(settings, spec)
    set_routes(settings, load_routes_yaml(text=ROUTES))
    running = worker(settings, tmp_path, "running").start()
    workers.append(running)
    running.wait_ready(90)

    now = int(time.time() * 1000)
    good = deployment_record(settings, demo_models["fraud-cnp@1"])
    bad = {**good, "artifact_sha256": "0" * 64, "deployed_at": now}
    raw(settings, "deployment", "ModelDeployment", bad)
    raw(settings, "deployment", "ModelDeployment", bad, key="fraud-cnp@1")  # the key the old CLI used
    raw(settings, "deployment", "ModelDeployment", {**good, "artifact_uri": "/etc/passwd", "deployed_at": 1})
    state = read_state(settings)
    acme = state.routes.get("acme-bank", CNP)
    assert acme is not None
    first = replace(acme, version=2, champion=V2, candidates=(), updated_at=now)
    second = replace(acme, version=2, candidates=(Candidate(V2, "shadow", 1.0),), updated_at=now + 1)
    raw(settings, "route", "Route", first.to_record())
    raw(settings, "route", "Route", second.to_record())  # a second writer of v2
    raw(settings, "route", "Route", replace(acme, champion=V2, candidates=(), updated_at=now + 2).to_record())  # lower
    raw(settings, "route", "Route", {**replace(acme, version=3).to_record(), "champion": {"model": "BAD!",
                                                                                          "version": "1"}},
        key=f"acme-bank/{CNP}")
    stray = QuantileMap(model="fraud-cnp", model_version="1", tenant="nobody", intent=CNP, version=1,
                        reference_name="uniform", reference_version=1, knots_x=[0, 0.5, 1], knots_y=[0, 0.4, 1])
    raw(settings, "map", "QuantileMap", stray.to_record())
    frozen = ReferenceDistribution.beta("globex-pay-cnp", 1, 2.0, 8.0)
    publish_reference(settings, frozen, point=f"globex-pay/{CNP}")  # a reference change
    onto = QuantileMap(model="fraud-cnp", model_version="1", tenant="globex-pay", intent=CNP, version=1,
                       reference_name="globex-pay-cnp", reference_version=1, knots_x=[0, 0.5, 1],
                       knots_y=[0, 0.2, 1], created_at_ms=now)
    raw(settings, "map", "QuantileMap", onto.to_record())
    raw(settings, "map", "QuantileMap", onto.to_record())  # an identical re-publication: compaction drops one

    wait_for(lambda: state_metrics(running).get("museflow_route_version", {}).get(
        (("intent", CNP), ("tenant", "acme-bank"))) == 2.0, 30, "the running worker applying acme v2")
    repeated = control_key("map", onto.to_record(), value_digest(serdes_from_settings(settings).quantile_maps
                                                                 .encode(onto.to_record())))
    time.sleep(1.5)
    for topic in (t.routes, t.deployments, t.quantile_maps, t.references):
        publish_control(settings, topic, "segment-roll", None)  # rolls the segment holding the records above
    wait_for(lambda: compaction_done(settings, t.quantile_maps, repeated), 120, "the log cleaner", poll=2)

    fresh = worker(settings, tmp_path, "fresh").start()
    workers.append(fresh)
    fresh.wait_ready(90)
    assert state_metrics(fresh) == state_metrics(running)
    acme_now = read_state(settings).routes.get("acme-bank", CNP)
    assert acme_now is not None and acme_now.version == 2 and acme_now.champion == V2, "the first writer wins"

    traffic = Traffic(settings, 1500, rate=500, seed=71)
    acc = settled(settings, traffic.join())
    assert acc.lost == 0 and acc.good_in_dlq == 0, acc.line("probe")
    served: dict[tuple[str, str, str], set[tuple[Any, ...]]] = defaultdict(set)  # (champion or canary)
    for r in acc.records:
        served[(r["tenant"], r["intent"], f"{r['model']}@{r['model_version']}")].add(
            (r["route_version"], r["map_version"], r["reference"]))
    print(f"\nserved by route and model: {dict(served)}")
    assert all(len(v) == 1 for v in served.values()), f"the two workers served differently: {dict(served)}"
    assert {k[2] for k in served if k[:2] == ("acme-bank", CNP)} == {"fraud-cnp@2"}, "the first writer of v2 serves"
    assert served[("globex-pay", CNP, "fraud-cnp@1")] == {(2, 1, "globex-pay-cnp@1")}
    for w in (running, fresh):
        log = w.log_path.read_text()
        assert "etc/passwd" in log, "the escaping deployment was not refused with its path"


def test_concurrent_writers_of_one_route_never_publish_the_same_version_twice(settings: Settings,
                                                                              deployed: dict[str, Path]) -> None:
    acme = read_state(settings).routes.get("acme-bank", CNP)
    assert acme is not None
    outcomes: list[str] = []

    def writer(champion: ModelRef) -> None:
        for _ in range(3):
            try:
                route = set_routes(settings, [replace(acme, champion=champion, candidates=())], by=str(champion))[0]
                outcomes.append(f"v{route.version}")
            except ConflictError as exc:
                outcomes.append(f"conflict: {exc}")

    threads = [threading.Thread(target=writer, args=(m,)) for m in (V1, V2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    serde = serdes_from_settings(settings)["Route"]
    versions = [serde.decode(r.value)["version"] for r in read_topic(settings, settings.topics.routes,
                                                                      isolation_level="read_committed")
                if r.value is not None and serde.decode(r.value)["tenant"] == "acme-bank"
                and serde.decode(r.value)["intent"] == CNP]
    print(f"\noutcomes: {outcomes}; versions written: {versions}")
    assert len(outcomes) == 6, "a writer crashed"
    assert len(versions) == len(set(versions)), f"a route version was written twice: {versions}"
    assert sorted(versions) == list(range(1, len(versions) + 1))
    assert len([o for o in outcomes if o.startswith("v")]) == len(versions) - 1
    with pytest.raises(ConflictError, match="not v1"):
        set_routes(settings, [acme], if_version=1)
    with pytest.raises(ConflictError, match="not the next version"):
        publish_route(settings, replace(acme, version=2))


def test_switching_to_exactly_once_scores_no_event_twice_and_skips_none(
        settings: Settings, deployed: dict[str, Path], start_worker: Any) -> None:
    first = start_worker(roles=("router", "scorer"))
    before = Traffic(settings, 2000, rate=1000, seed=81)
    settled(settings, before.join())
    assert first.stop() == 0
    after = Traffic(settings, 2000, rate=1000, seed=82)
    after_summary = after.join()
    eos = settings.replace(processing_guarantee="exactly_once")
    w = WorkerProcess(eos, roles=("router", "scorer"), log_path=Path(settings.data_dir) / "eos.log").start()
    try:
        w.wait_ready(90)
        acc = settled(settings, _joined(before, after_summary), isolation="read_committed")
    finally:
        w.stop()
    print(f"\n{acc.line('at-least-once then exactly-once')}")
    assert acc.lost == 0 and acc.duplicates == 0 and acc.good_in_dlq == 0
    assert "resuming from committed offsets" in w.log_path.read_text()


def _joined(a: Traffic, b_summary: Any) -> Any:
    """Both runs' events as one summary."""
    assert a.summary is not None
    return replace(a.summary, events=[*a.summary.events, *b_summary.events], bad=[*a.summary.bad, *b_summary.bad])


def test_a_new_scorer_group_takes_over_where_the_group_it_replaces_left_off(
        settings: Settings, deployed: dict[str, Path], start_worker: Any) -> None:
    start_worker(roles=("router",))
    scorer = start_worker(roles=("scorer",))
    before = Traffic(settings, 1500, rate=1000, seed=91)
    settled(settings, before.join())
    assert scorer.stop() == 0
    after = Traffic(settings, 1500, rate=1000, seed=92)
    after_summary = after.join()
    narrowed = start_worker(roles=("scorer",), models=("ato", "fraud-cnp"))
    acc = settled(settings, _joined(before, after_summary))
    print(f"\n{acc.line('scorer group replaced')}")
    assert acc.lost == 0 and acc.duplicates == 0
    log = narrowed.log_path.read_text()
    assert f"starting where {settings.app_id}-scorer left off" in log, log[-2000:]


def test_a_fresh_deployment_starts_at_latest_and_replays_only_when_told(
        settings: Settings, deployed: dict[str, Path], tmp_path: Path, workers: list[WorkerProcess]) -> None:
    fresh = settings.replace(new_group_start="latest")
    old = Traffic(fresh, 300, rate=0, seed=101).join()
    w = worker(fresh, tmp_path, "latest").start()
    workers.append(w)
    w.wait_ready(90)
    new = Traffic(fresh, 300, rate=0, seed=102).join()
    acc = settled(fresh, new)
    assert acc.lost == 0
    old_ids = {e["event_id"] for e in old.events}
    assert not old_ids & set(acc.scored), "a fresh deployment re-scored traffic from before it started"
    assert "starting at latest" in w.log_path.read_text()
    w.stop()
    replay = worker(fresh, tmp_path, "replay", start_from="earliest").start()
    workers.append(replay)
    replay.wait_ready(90)
    acc = settled(fresh, old)
    assert acc.lost == 0, "--from earliest did not replay the retained traffic"
    assert "moved to earliest on purpose" in replay.log_path.read_text()
