"""Swap rehearsal, without a broker: flags a candidate broken for one tenant, is deterministic, predicts."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from museflow.control.rehearsal import (
    PREDICTION_CHECK,
    Rehearsal,
    build_report,
    rehearsal_vs_shadow,
    spearman,
    wilson,
    write_report,
)
from museflow.control.routing import ModelRef, Route
from museflow.control.state import PipelineState
from museflow.demo.loadgen import TransactionGenerator
from museflow.observe.metrics import PipelineMetrics

V1, V2 = ModelRef("fraud-cnp", "1"), ModelRef("fraud-cnp", "2")
TENANTS = ("acme-bank", "globex-pay", "initech-fin")
CNP = "card-not-present"


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> PipelineState:
    from museflow.demo.models import train_demo_models

    out = tmp_path_factory.mktemp("models")
    state = PipelineState(model_dir=out, metrics=PipelineMetrics())
    for m in train_demo_models(out, seed=3, n_events=20_000):
        state.registry.load(m.spec_path)
    return state


def traffic(seed: int, n: int = 30_000, broken: str | None = None) -> tuple[list[dict[str, Any]], dict[str, bool]]:
    """Events of three tenants; ``broken``'s producer sends ``velocity_24h`` (v2's strongest feature) x100."""
    generated = TransactionGenerator(seed=seed).generate(n, start_ms=1_700_000_000_000)
    events, labels = [], {}
    for i, g in enumerate(generated):
        event = dict(g.event)
        event.update(tenant=TENANTS[i % 3], intent=CNP)
        if event["tenant"] == broken:
            attributes = dict(event.get("attributes") or {})
            attributes["velocity_24h"] = (attributes.get("velocity_24h") or 0) * 100
            event["attributes"] = attributes
        events.append(event)
        labels[event["event_id"]] = g.is_fraud
    return events, labels


def rehearsed(state: PipelineState, events: list[dict[str, Any]], chunk: int = 2000) -> Rehearsal:
    rehearsal = Rehearsal(state, V2, [Route(t, CNP, V1, version=1) for t in TENANTS])
    for i in range(0, len(events), chunk):
        batch = events[i:i + chunk]
        rehearsal.observe(batch, [e["event_time"] for e in batch])
    return rehearsal


@pytest.mark.parametrize("seed", [1, 2])
def test_a_candidate_broken_for_one_tenants_traffic_is_flagged_and_only_that_tenant(
        state: PipelineState, seed: int) -> None:
    events, labels = traffic(seed, broken="initech-fin")
    rehearsal = rehearsed(state, events)
    report = build_report(rehearsal, rehearsal.fit_maps((0, 1), {}), (0, 1), labels)
    verdicts = report.verdicts()
    print(f"\n{ {k: (round(v['rank_agreement'], 3), v['verdict']) for k, v in report.routes.items()} }")
    assert "broken or in other units" in verdicts[f"initech-fin/{CNP}"], verdicts
    assert verdicts[f"acme-bank/{CNP}"] == verdicts[f"globex-pay/{CNP}"] == "ok"


def test_healthy_traffic_raises_no_flag(state: PipelineState) -> None:
    events, labels = traffic(3)
    rehearsal = rehearsed(state, events)
    report = build_report(rehearsal, rehearsal.fit_maps((0, 1), {}), (0, 1), labels)
    assert set(report.verdicts().values()) == {"ok"}, report.verdicts()


def test_two_rehearsals_of_one_window_give_the_same_maps_and_byte_identical_reports(
        state: PipelineState, tmp_path: Path) -> None:
    events, labels = traffic(4, n=12_000)
    shuffled = list(events)
    random.Random(0).shuffle(shuffled)
    outputs = []
    for run, order, chunk in (("a", events, 2000), ("b", shuffled, 777)):
        rehearsal = rehearsed(state, order, chunk)
        maps = rehearsal.fit_maps((1_700_000_000_000, 1_700_000_600_000), {})
        report = build_report(rehearsal, maps, (1_700_000_000_000, 1_700_000_600_000), labels)
        write_report(report, tmp_path / run)
        outputs.append({k: v.to_record() for k, v in maps.items()})  # type: ignore[union-attr]
    assert outputs[0] == outputs[1]
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir()) and len(files) == 5
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert all(m["source"] == "rehearsal" for m in outputs[0].values())


def test_the_map_fitted_on_the_replay_holds_the_alert_rate_on_later_traffic(state: PipelineState) -> None:
    """Fit on one window, serve the next: >= 90% of the (tenant, threshold) pairs with enough samples
    (PREDICTION_CHECK: both windows' sampling errors fit in ±15% at 99%) land within ±15% of the target."""
    past, _ = traffic(5, 36_000)
    future, _ = traffic(6, 36_000)
    rehearsal = rehearsed(state, past)
    maps = rehearsal.fit_maps((0, 1), {})
    reference = state.reference("uniform@1")
    judged, held = 0, 0
    for tenant in TENANTS:
        qmap = maps[(tenant, CNP)]
        fitted = qmap.apply(rehearsal.columns((tenant, CNP))["candidate"])  # type: ignore[union-attr]
        mine = [e for e in future if e["tenant"] == tenant]
        live = qmap.apply(state.registry.get("fraud-cnp", "2").score(mine).probability)  # type: ignore[union-attr]
        for tau in (0.95, 0.99, 0.995):
            if not PREDICTION_CHECK.can_compare(float(reference.alert_rate(tau)), fitted.size, len(mine)):
                continue
            judged += 1
            held += abs(float(np.mean(live > tau)) / float(reference.alert_rate(tau)) - 1) <= 0.15
    assert judged >= 3 and held >= 0.9 * judged, (judged, held)


def test_spearman_and_wilson_match_their_definitions() -> None:
    a = np.array([1.0, 2.0, 3.0, 4.0])
    assert spearman(a, a) == pytest.approx(1.0) and spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(np.array([1.0, 1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(0.9486833)
    low, high = wilson(10, 100)
    assert low == pytest.approx(0.0552, abs=1e-4) and high == pytest.approx(0.1744, abs=1e-4)


def test_a_rehearsal_map_is_compared_with_the_shadow_map_on_the_shadow_traffic(state: PipelineState) -> None:
    """Same traffic: the rehearsal map gives the target rates; traffic that moved up: it alerts more."""
    from museflow.transform.refit import ExactSample, fit_map

    reference = state.reference("uniform@1")
    rng = np.random.default_rng(0)
    scores = rng.beta(1, 60, 50_000)

    def fitted(values: np.ndarray) -> Any:
        return fit_map(ExactSample(values), reference, model="m", model_version="1", tenant="t",
                       intent=CNP, version=1)

    same = rehearsal_vs_shadow(fitted(scores), fitted(scores), reference)
    assert same == pytest.approx({0.05: 0.05, 0.01: 0.01}, rel=1e-3)
    later = rehearsal_vs_shadow(fitted(scores), fitted(scores + 0.01), reference)
    assert later[0.05] > 0.06 and later[0.01] > 0.012, later
