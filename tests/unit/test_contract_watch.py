"""The alert-rate contract's watch on score-log batches (museflow.observe.contract_watch)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from museflow.control.contract import Contract
from museflow.control.routing import Candidate, ModelRef, Route, RouteTable
from museflow.observe.contract_watch import RouteBreach, ServedWatch
from museflow.observe.metrics import PipelineMetrics
from museflow.observe.monitoring import threshold_label
from museflow.transform.reference import ReferenceDistribution

CNP = "cnp"
V1, V2 = ModelRef("xgb", "1"), ModelRef("xgb", "2")
UNIFORM = ReferenceDistribution.uniform()


def value(metrics: PipelineMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def watcher(routes: RouteTable, metrics: PipelineMetrics, pairs: int = 100) -> ServedWatch:
    return ServedWatch(metrics, Contract(), route_at=routes.at, current=routes.get, reference=lambda name: UNIFORM,
                       pairs=pairs)


def batch(scores: np.ndarray, *, model: ModelRef = V1, route_version: int = 3, served: bool = True,
          tenant: str = "acme") -> dict[str, Any]:
    return {"tenant": tenant, "intent": CNP, "model": model.name, "model_version": model.version,
            "route_version": route_version, "served": served, "role": "champion" if served else "shadow",
            "scores": list(scores)}


def on_target(rng: np.random.Generator, n: int = 1000) -> np.ndarray:
    return rng.random(n)  # uniform: 5% above 0.95, 1% above 0.99, the targets on the uniform reference


def shifted(rng: np.random.Generator, n: int = 1000) -> np.ndarray:
    """7.5% above 0.95 (+50%)."""
    return np.where(rng.random(n) < 0.075, 0.95 + 0.05 * rng.random(n), 0.95 * rng.random(n))


@pytest.fixture
def routes() -> RouteTable:
    table = RouteTable()
    table.apply(Route("acme", CNP, V1, version=3, watch_thresholds=(0.95, 0.99)))
    return table


def test_served_scores_on_target_raise_nothing_and_export_what_the_contract_needs(routes: RouteTable) -> None:
    metrics = PipelineMetrics()
    metrics.set_known(["acme"], [CNP])
    watch, rng = watcher(routes, metrics), np.random.default_rng(8)
    assert watch.observe_log([batch(on_target(rng)) for _ in range(40)]) == []
    assert value(metrics, "museflow_alert_rate_contract_breached", tenant="acme", intent=CNP) == 0
    needed = {t: value(metrics, "museflow_contract_samples_needed", tenant="acme", intent=CNP,
                       threshold=threshold_label(t)) for t in (0.95, 0.99)}
    assert needed == {0.95: 7299, 0.99: 38031}


def test_a_bad_map_after_promotion_is_a_breach_of_the_new_version_then_the_watch_restarts(routes: RouteTable) -> None:
    metrics = PipelineMetrics()
    metrics.set_known(["acme"], [CNP])
    watch, rng = watcher(routes, metrics), np.random.default_rng(8)
    watch.observe_log([batch(on_target(rng)) for _ in range(10)])
    routes.apply(Route("acme", CNP, V2, version=4, watch_thresholds=(0.95, 0.99)))
    found: list[RouteBreach] = []
    for _ in range(40):
        found += watch.observe_log([batch(shifted(rng), model=V2, route_version=4)])
    assert found, "a +50% alert rate over 40,000 served scores went unnoticed"
    first = found[0]
    assert (first.tenant, first.intent, first.route_version, first.model) == ("acme", CNP, 4, ("xgb", "2"))
    assert any(b.threshold == 0.95 and b.direction == "above" for b in first.breaches)
    assert value(metrics, "museflow_alert_rate_contract_breached", tenant="acme", intent=CNP) == 1
    assert value(metrics, "museflow_alert_rate_breaches_total", tenant="acme", intent=CNP, direction="above") >= 1
    assert watch.observe_log([batch(shifted(rng), route_version=3)]) == []  # a backlog of v3 feeds nothing
    assert value(metrics, "museflow_alert_rate_contract_breached", tenant="acme", intent=CNP) == 1
    routes.apply(Route("acme", CNP, V1, version=5, watch_thresholds=(0.95, 0.99)))  # rolled back
    assert watch.observe_log([batch(on_target(rng, 10), route_version=5)]) == []
    assert value(metrics, "museflow_alert_rate_contract_breached", tenant="acme", intent=CNP) == 0


def test_shadow_scores_and_history_before_the_route_in_force_are_not_watched(routes: RouteTable) -> None:
    metrics = PipelineMetrics()
    watch, rng = watcher(routes, metrics), np.random.default_rng(9)
    assert watch.observe_log([batch(shifted(rng), served=False) for _ in range(60)]) == []
    assert watch.observe_log([batch(shifted(rng), route_version=2) for _ in range(60)]) == []  # read from the start
    assert watch.observe_log([batch(shifted(rng)) for _ in range(60)]), "the served v3 scores are watched"


def test_the_canary_is_watched_apart_from_the_champion(routes: RouteTable) -> None:
    """A canary's bad map breaches on the canary's scores, even while the champion's many on-target
    scores would dilute it below the band if the two were mixed."""
    routes.apply(Route("acme", CNP, V1, version=4, candidates=(Candidate(V2, "canary", 0.1),),
                       watch_thresholds=(0.95, 0.99)))
    metrics = PipelineMetrics()
    watch, rng = watcher(routes, metrics), np.random.default_rng(10)
    found: list[RouteBreach] = []
    for _ in range(60):
        found += watch.observe_log([batch(on_target(rng, 2000), route_version=4),
                                    batch(shifted(rng, 500), model=V2, route_version=4)])
    assert found and {b.model for b in found} == {("xgb", "2")}


def test_every_score_of_a_pair_in_one_watch_finds_a_breach_sooner_than_the_same_scores_split_over_workers(
        routes: RouteTable) -> None:
    """Why the watch reads the score log: a worker watching a third of a tenant's partitions needs
    about three times the scores (as before, when each worker watched what it scored)."""
    rng = np.random.default_rng(11)
    scores = [shifted(rng, 200) for _ in range(400)]

    def first_breach(feeds: list[ServedWatch], split: int) -> int:
        for i, chunk in enumerate(scores):
            if feeds[i % split].observe_log([batch(chunk)]):
                return (i + 1) * 200
        return 10**9

    whole = first_breach([watcher(routes, PipelineMetrics())], 1)
    split = first_breach([watcher(routes, PipelineMetrics()) for _ in range(3)], 3)
    assert whole * 2 < split, (whole, split)


def test_alpha_is_split_over_every_pair_watched_once_they_outnumber_the_configured_floor() -> None:
    routes = RouteTable()
    tenants = [f"t{i}" for i in range(4)]
    for t in tenants:
        routes.apply(Route(t, CNP, V1, version=1, watch_thresholds=(0.9, 0.95, 0.99)))
    watch, rng = watcher(routes, PipelineMetrics(), pairs=5), np.random.default_rng(12)
    watch.observe_log([batch(on_target(rng, 10), tenant=tenants[0], route_version=1)])
    assert watch.pairs == 5  # three watched, the floor stands
    watch.observe_log([batch(on_target(rng, 10), tenant=t, route_version=1) for t in tenants[1:]])
    assert watch.pairs == 12
    assert all(w.pairs == 12 for w in watch._watches.values())


def test_the_watch_refuses_a_meaningless_configuration() -> None:
    with pytest.raises(ValueError, match="pairs=0"):
        watcher(RouteTable(), PipelineMetrics(), pairs=0)
