"""The control plane converges: a worker that reads the compacted topics later holds the same state.

Each test builds a log of control records with every hazard in it (bad and duplicate records,
two writers of one route version, lower versions, a bad record after a good one under its old
key, superseded maps and their tombstones, an undecodable record), applies it record by record
to one state (the worker that ran all along) and what compaction leaves of it, in offset order
and shuffled, to others (workers started later). All must agree.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from museflow.config import Settings
from museflow.control.keys import control_key, map_message, record_digest, value_digest
from museflow.control.routing import Candidate, ModelRef, Route
from museflow.control.state import PipelineState, rejection_key, resolve_artifact
from museflow.errors import ArtifactError
from museflow.kafka.plane import deployment_record
from museflow.observe.metrics import PipelineMetrics
from museflow.transform.qmap import QuantileMap
from museflow.transform.reference import ReferenceDistribution

V1, V2 = ModelRef("fraud-cnp", "1"), ModelRef("fraud-cnp", "2")
CNP = "card-not-present"

Entry = tuple[str, str, dict[str, Any] | None, str, str | None]  # kind, key, record, digest, decode error


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from museflow.demo.models import train_demo_models

    out = tmp_path_factory.mktemp("specs")
    return {f"{m.name}@{m.version}": m.spec_path for m in train_demo_models(out, seed=3, n_events=4000)}


def entry(kind: str, record: dict[str, Any], key: str | None = None) -> Entry:
    digest = record_digest(record)
    return kind, key or control_key(kind, record, digest), record, digest, None


def route(tenant: str, version: int, champion: ModelRef, *, updated_at: int, reference: str = "uniform@1",
          shadow: ModelRef | None = None) -> dict[str, Any]:
    candidates = (Candidate(shadow, "shadow", 1.0),) if shadow else ()
    return Route(tenant, CNP, champion, version=version, candidates=candidates, reference=reference,
                 updated_at=updated_at).to_record()


def qmap(tenant: str | None, version: int, *, reference: str = "uniform@1", created: int = 0) -> dict[str, Any]:
    name, _, ref_version = reference.partition("@")
    return QuantileMap(model="fraud-cnp", model_version="1", tenant=tenant, intent=CNP, version=version,
                       reference_name=name, reference_version=int(ref_version), knots_x=[0.0, 0.3, 1.0],
                       knots_y=[0.0, 0.1 * version, 1.0], created_at_ms=created).to_record()


def hazard_log(settings: Settings, specs: dict[str, Path]) -> list[Entry]:
    good1 = deployment_record(settings, specs["fraud-cnp@1"])
    good2 = deployment_record(settings, specs["fraud-cnp@2"])
    altered = {**good1, "artifact_sha256": "0" * 64, "deployed_at": good1["deployed_at"] + 10}
    escaping = {**good1, "artifact_uri": "/etc/passwd", "deployed_at": 1}  # sorts first, never loads
    redeployed = {**good1, "deployed_at": good1["deployed_at"] + 20, "deployed_by": "someone else"}
    reference = ReferenceDistribution.from_samples("acme-cnp", 1, [i / 97 for i in range(97)]).to_record()
    rival_reference = ReferenceDistribution.uniform("acme-cnp", 1).to_record()
    superseded = entry("map", qmap("acme-bank", 1, created=1))
    log = [
        entry("deployment", good1), entry("deployment", good2),
        entry("route", route("acme-bank", 1, V1, updated_at=10)),
        entry("route", route("globex-pay", 1, V1, updated_at=10)),
        superseded, entry("map", qmap("acme-bank", 2, created=2)),
        entry("reference", reference),
        # a bad deployment after the good one, under its own key and under the name the old CLI used
        entry("deployment", altered), entry("deployment", altered, key="fraud-cnp@1"),
        entry("deployment", escaping), entry("deployment", redeployed),
        # two writers of acme-bank v2; a lower version written later; a bad record under the old key
        entry("route", route("acme-bank", 2, V2, updated_at=30)),
        entry("route", route("acme-bank", 2, V1, updated_at=31, shadow=V2)),
        entry("route", route("acme-bank", 1, V2, updated_at=40)),
        entry("route", {**route("acme-bank", 3, V1, updated_at=50), "champion": {"model": "BAD!", "version": "1"}},
              key=f"acme-bank/{CNP}"),
        # globex moves to a frozen reference; its maps onto both references stay
        entry("route", route("globex-pay", 2, V1, updated_at=60, reference="acme-cnp@1")),
        entry("map", qmap("globex-pay", 1)), entry("map", qmap("globex-pay", 2, reference="acme-cnp@1")),
        entry("reference", rival_reference),
        # a map for a tenant no route knows, a newer map, the tombstone of the superseded one
        entry("map", qmap("nobody", 1)), entry("map", qmap("acme-bank", 3, created=3)),
        ("map", superseded[1], None, "", None),
        # an identical re-publication (compaction keeps the later copy) and an undecodable record
        entry("deployment", good1),
        ("route", "route/garbage#0", None, "ff" * 32, "not Avro"),
    ]
    return log


def compacted(log: list[Entry]) -> list[Entry]:
    """What the log cleaner leaves: the last record per key, in offset order, tombstones gone."""
    last = {(kind, key): i for i, (kind, key, *_) in enumerate(log)}
    return [log[i] for i in sorted(last.values()) if log[i][2] is not None or log[i][4] is not None]


def applied(entries: list[Entry], model_dir: Path) -> PipelineState:
    state = PipelineState(model_dir=model_dir, metrics=PipelineMetrics())
    for kind, key, record, digest, error in entries:
        state.apply(kind, key, record, digest, error=error)
    return state


def snapshot(state: PipelineState) -> dict[str, Any]:
    keys = {("acme-bank", CNP), ("globex-pay", CNP)}
    return {
        "routes": {r.key: (r.version, str(r.champion), [str(c.model) for c in r.candidates], r.reference)
                   for r in state.routes},
        "history": {k: [(r.version, str(r.champion), r.updated_at) for r in state.routes.history(*k)] for k in keys},
        "models": sorted((m.spec.name, m.spec.version, m.spec.digest) for m in state.registry),
        "deployments": sorted((str(ref), d.artifact_sha256, d.deployed_at) for ref, d in state.deployments.items()),
        "maps": sorted((m.tenant or "", m.reference_name, m.version, m.created_at_ms) for m in state.maps),
        "references": sorted((k, r.kind) for k, r in state.references.items()),
    }


@pytest.mark.parametrize("seed", range(6))
def test_a_worker_started_after_compaction_holds_the_state_of_one_that_ran_throughout(
        seed: int, specs: dict[str, Path], tmp_path: Path) -> None:
    settings = Settings(model_dir=str(tmp_path / "models"))
    log = hazard_log(settings, specs)
    rng = random.Random(seed)
    if seed:  # another interleaving of the same writes (the tombstone stays after what it removes)
        tombstone = next(e for e in log if e[2] is None and e[4] is None)
        log.remove(tombstone)
        rng.shuffle(log)
        superseded = next(i for i, e in enumerate(log) if e[1] == tombstone[1])
        log.insert(rng.randint(superseded + 1, len(log)), tombstone)
    model_dir = Path(settings.model_dir)
    running = applied(log, model_dir)
    survivors = compacted(log)
    restarted = applied(survivors, model_dir)
    rng.shuffle(survivors)
    shuffled = applied(survivors, model_dir)
    assert snapshot(restarted) == snapshot(running)
    assert snapshot(shuffled) == snapshot(running)

    held = snapshot(running)
    assert held["models"] == sorted([("fraud-cnp", "1", running.registry.get("fraud-cnp", "1").spec.digest),
                                     ("fraud-cnp", "2", running.registry.get("fraud-cnp", "2").spec.digest)])
    assert running.unloaded() == [], "a bad record displaced the good deployment"
    assert running.deployments[V1].deployed_by == "cli", "the first valid deployment of a version wins"
    acme = running.routes.get("acme-bank", CNP)
    assert acme is not None and acme.version == 2 and acme.champion == V2, "first writer of v2 must win"
    assert [r.version for r in running.routes.history("acme-bank", CNP)] == [1, 2]
    assert running.maps.get("fraud-cnp", "1", "acme-bank").version == 3  # type: ignore[union-attr]
    globex = running.routes.get("globex-pay", CNP)
    assert globex is not None and globex.reference == "acme-cnp@1"
    by_stamp = {v: running.maps.resolve("fraud-cnp", "1", "globex-pay", CNP, running.routes.at("globex-pay", CNP, v)
                                        .reference).version for v in (1, 2)}  # type: ignore[union-attr]
    assert by_stamp == {1: 1, 2: 2}, "each route version maps onto its own reference"


def test_two_writers_of_one_route_version_agree_on_the_first_by_their_stamp(
        specs: dict[str, Path], tmp_path: Path) -> None:
    late, early = (entry("route", route("acme-bank", 1, c, updated_at=t)) for c, t in ((V2, 20), (V1, 10)))
    for order in ([late, early], [early, late]):
        state = applied(list(order), tmp_path)
        found = state.routes.get("acme-bank", CNP)
        assert found is not None and found.champion == V1 and found.updated_at == 10


def test_an_artifact_path_outside_the_model_dir_is_refused_naming_the_deployment(tmp_path: Path) -> None:
    outside = tmp_path / "outside.ubj"
    outside.write_bytes(b"{}")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "link.ubj").symlink_to(outside)
    for uri, why in (("/etc/passwd", "absolute"), ("file:///etc/passwd", "absolute"), ("../x", "'..'"),
                     ("a/../../x", "'..'"), ("link.ubj", "outside the model directory")):
        with pytest.raises(ArtifactError, match=why) as caught:
            resolve_artifact(uri, tmp_path / "models", "fraud-cnp@9")
        assert "deployment fraud-cnp@9" in str(caught.value) and uri in str(caught.value)
    assert resolve_artifact("artifacts/x.ubj", tmp_path / "models", "m@1") == (tmp_path / "models" / "artifacts"
                                                                                / "x.ubj").resolve()


def test_a_deployment_escaping_the_model_dir_is_rejected_and_says_which(specs: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    settings = Settings(model_dir=str(tmp_path / "models"))
    record = {**deployment_record(settings, specs["fraud-cnp@1"]), "artifact_uri": "/etc/passwd"}
    state = applied([entry("deployment", record)], Path(settings.model_dir))
    assert state.registry.find("fraud-cnp", "1") is None
    assert "/etc/passwd" in state.rejected[rejection_key("deployment", V1)]
    assert "absolute" in state.rejected[rejection_key("deployment", V1)]


def test_a_deployment_waits_for_its_artifact_and_loads_when_it_appears(specs: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    settings = Settings(model_dir=str(tmp_path / "models"))
    record = deployment_record(settings, specs["fraud-cnp@1"])
    staged = Path(settings.model_dir) / record["artifact_uri"]
    kept = tmp_path / "kept"
    shutil.move(staged, kept)
    state = applied([entry("deployment", record), entry("route", route("acme-bank", 1, V1, updated_at=1))],
                    Path(settings.model_dir))
    assert state.unloaded() == [V1], "readiness must say a served model is not loaded"
    assert state.retry_artifacts() == 0
    staged.write_bytes(b"not the recorded bytes")
    assert state.retry_artifacts() == 0
    shutil.copyfile(kept, staged)
    assert state.retry_artifacts() == 1
    assert state.registry.find("fraud-cnp", "1") is not None and state.unloaded() == []
    assert rejection_key("deployment", V1) not in state.rejected


def test_a_retired_version_stays_retired_whatever_the_order(specs: dict[str, Path], tmp_path: Path) -> None:
    settings = Settings(model_dir=str(tmp_path / "models"))
    deployed = entry("deployment", deployment_record(settings, specs["fraud-cnp@1"]))
    retired = entry("deployment", deployment_record(settings, specs["fraud-cnp@1"], action="retire"))
    for order in ([deployed, retired], [retired, deployed]):
        state = applied(list(order), Path(settings.model_dir))
        assert state.registry.find("fraud-cnp", "1") is None and V1 not in state.deployments


def test_the_scorer_maps_by_the_route_version_the_router_stamped(specs: dict[str, Path], tmp_path: Path) -> None:
    from museflow.config import TopicNames
    from museflow.contracts.serde import Serdes
    from museflow.contracts.validation import validate_event
    from museflow.runtime.pipeline import H_ROUTE, H_SERVE, InMessage, RouterStep, ScorerStep
    from tests.unit.test_bad_input import encoded

    settings = Settings(model_dir=str(tmp_path / "models"))
    reference = ReferenceDistribution.beta("frozen", 1, 2.0, 5.0)
    log = [entry("deployment", deployment_record(settings, specs["fraud-cnp@1"])),
           entry("route", route("acme-bank", 1, V1, updated_at=1)),
           entry("reference", reference.to_record()),
           entry("map", {**qmap("acme-bank", 4), "tenant": "acme-bank"}),
           entry("map", qmap("acme-bank", 5, reference="frozen@1"))]
    state = applied(log, Path(settings.model_dir))
    topics, serdes = TopicNames("u."), Serdes()
    value = encoded()
    routed = RouterStep(state, topics, validate_event).run([InMessage(b"k", value, topics.events, 0, 0)],
                                                           serdes.events.decode_many([value]))
    stamped_v1 = InMessage(b"k", routed.out[0].value, routed.out[0].topic, 0, 0, 0, dict(routed.out[0].headers))
    assert stamped_v1.headers[H_ROUTE] == b"1" and stamped_v1.headers[H_SERVE] == b"fraud-cnp@1"
    state.apply(*entry("route", route("acme-bank", 2, V1, updated_at=2, reference="frozen@1"))[:4])
    stamped_v2 = replace(stamped_v1, offset=1, headers={**stamped_v1.headers, H_ROUTE: b"2"})
    result = ScorerStep(state, topics, serdes).run([stamped_v1, stamped_v2],
                                                   serdes.events.decode_many([value, value]))
    scored = [serdes.scored.decode(o.value) for o in result.out if o.topic == topics.scores("acme-bank")]
    assert [(r["route_version"], r["map_version"], r["reference"]) for r in scored] == [
        (1, 4, "uniform@1"), (2, 5, "frozen@1")]


def test_a_blended_maps_effective_samples_are_exported_per_threshold(tmp_path: Path) -> None:
    state = PipelineState(model_dir=tmp_path, metrics=PipelineMetrics())
    record = qmap("initech-fin", 1)
    record.update(source="blended", evidence=[{"threshold": 0.95, "effective_samples": 5210.0},
                                              {"threshold": 0.99, "effective_samples": 880.5}])
    digest = record_digest(record)
    state.apply("map", control_key("map", record, digest), record, digest)
    got = {t: state.metrics.registry.get_sample_value("museflow_quantile_map_effective_samples", {
        "model": "fraud-cnp", "tenant": "initech-fin", "threshold": t}) for t in ("0.95", "0.99")}
    assert got == {"0.95": 5210.0, "0.99": 880.5}
    assert state.maps.get("fraud-cnp", "1", "initech-fin").effective_samples(0.99) == 880.5  # type: ignore[union-attr]


def test_a_control_record_waits_for_the_registry_instead_of_becoming_undecodable(tmp_path: Path) -> None:
    """A route read while the schema registry is down is not a bad record: the follower waits and applies it."""
    import threading

    from museflow.errors import DependencyUnavailable
    from museflow.kafka.control import ControlFollower, apply_control

    settings = Settings(topic_prefix="u.", metrics_enabled=False)
    route = Route("acme-bank", CNP, V1, version=1).to_record()
    down = {"calls": 0}

    def decode(topic: str, value: bytes) -> dict[str, Any]:
        down["calls"] += 1
        if down["calls"] <= 2:
            raise DependencyUnavailable("registry answered 503", dependency="schema-registry")
        return route

    state = PipelineState(model_dir=tmp_path, metrics=PipelineMetrics())
    with pytest.raises(DependencyUnavailable):
        apply_control(state, decode, "route", settings.topics.routes, b"k", b"v", "routes[0]@0")
    assert state.routes.get("acme-bank", CNP) is None and not state.rejected  # nothing recorded as bad

    follower = ControlFollower(settings, state, decode)
    follower._apply(settings.topics.routes, 0, 0, b"k", b"v")
    assert down["calls"] == 3 and follower.applied == 1
    served = state.routes.get("acme-bank", CNP)
    assert served is not None and served.champion == V1

    stopping = ControlFollower(settings, PipelineState(model_dir=tmp_path, metrics=PipelineMetrics()), decode)
    down["calls"] = -10**6  # down for good
    stopping._stop.set()
    done = threading.Thread(target=stopping._apply, args=(settings.topics.routes, 0, 1, b"k", b"v"))
    done.start()
    done.join(5)
    assert not done.is_alive() and stopping.applied == 0  # a stop ends the wait


def test_a_map_is_published_under_the_content_key_of_its_encoded_record() -> None:
    fitted = QuantileMap.from_record(qmap("acme-bank", 3))
    key, value = map_message(fitted, lambda record: repr(sorted(record.items())).encode())
    assert value == repr(sorted(fitted.to_record().items())).encode()
    assert key == control_key("map", fitted.to_record(), value_digest(value))
    assert key.startswith("map/fraud-cnp@1/acme-bank/v3#")
