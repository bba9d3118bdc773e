"""Swap rehearsal, without a broker: flags a candidate broken for one tenant, is deterministic, predicts,
and serves a small tenant the blended map the refit agent would."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from museflow.config import Settings
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
from museflow.errors import MapError
from museflow.observe.metrics import PipelineMetrics
from museflow.transform.qmap import QuantileMap
from museflow.transform.refit import ExactSample, RefitPolicy, fit_map, refitter_for_routes

V1, V2 = ModelRef("fraud-cnp", "1"), ModelRef("fraud-cnp", "2")
TENANTS = ("acme-bank", "globex-pay", "initech-fin")
CNP = "card-not-present"
BIG = tuple(f"big-{i}" for i in range(6))
SMALL = "small-co"
BIG_EVENTS, SMALL_EVENTS = 6000, 500
WATCH = (0.95, 0.99)
WINDOW = (1_700_000_000_000, 1_700_000_600_000)


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


def rehearsed(state: PipelineState, events: list[dict[str, Any]], chunk: int = 2000,
              routes: list[Route] | None = None,
              policy_for: Callable[[str | None, str], RefitPolicy] | None = None) -> Rehearsal:
    rehearsal = Rehearsal(state, V2, routes or [Route(t, CNP, V1, version=1) for t in TENANTS],
                          policy_for=policy_for)
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
    # blended maps too: each tenant's 4,000 events are short of the default guards' 10,000
    assert all(m["evidence"] for m in outputs[0].values())
    assert f"| acme-bank/{CNP} | 0.95 | 5.000% | blended (" in (tmp_path / "a" / "rehearsal.md").read_text()


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


def small_and_big(seed: int) -> list[dict[str, Any]]:
    """Six big tenants' and one small tenant's card-not-present events, all of one traffic mix (one tail shape)."""
    generator = TransactionGenerator(seed=seed)
    return [{**g.event, "tenant": tenant, "intent": CNP} for tenant in (*BIG, SMALL)
            for g in generator.generate(SMALL_EVENTS if tenant == SMALL else BIG_EVENTS, start_ms=WINDOW[0])]


def guarded(state: PipelineState, events: list[dict[str, Any]], chunk: int = 2000) -> Rehearsal:
    """A rehearsal of :func:`small_and_big` under the refit agent's guards at the default settings."""
    routes = [Route(t, CNP, V1, version=1, watch_thresholds=WATCH) for t in (*BIG, SMALL)]
    defaults = Settings()
    refitter = refitter_for_routes(routes, state.reference, min_samples=defaults.refit_min_samples,
                                   min_tail_samples=defaults.refit_min_tail_samples,
                                   max_alert_rate_shift=defaults.refit_max_alert_rate_shift,
                                   window_seconds=defaults.refit_window_seconds)
    return rehearsed(state, events, chunk, routes, refitter.policy_for)


def records(maps: Mapping[tuple[str, str], QuantileMap | MapError]) -> dict[tuple[str, str], dict[str, Any]]:
    assert all(isinstance(m, QuantileMap) for m in maps.values()), maps
    return {key: m.to_record() for key, m in maps.items() if isinstance(m, QuantileMap)}


def own_fit(rehearsal: Rehearsal, tenant: str) -> QuantileMap:
    """The tenant-only map: the rehearsal's fit before small tenants were blended."""
    return fit_map(ExactSample(rehearsal.columns((tenant, CNP))["candidate"], WINDOW[0]),
                   rehearsal.state.reference("uniform@1"), model=V2.name, model_version=V2.version, tenant=tenant,
                   intent=CNP, version=1, tail_threshold=WATCH[-1], now_ms=WINDOW[1])


def test_a_small_tenant_is_rehearsed_on_a_blended_map_closer_to_its_true_rates_and_big_ones_keep_their_own(
        state: PipelineState) -> None:
    """500 events (the guards need 5,000) vs six tenants of 6,000: the small tenant's map borrows from the pool,
    records the effective samples promotion judges, alerts nearer the target on fresh traffic and is the same
    map when fitted again; the big tenants' maps are their own fits, byte for byte."""
    fresh = [g.event for g in TransactionGenerator(seed=99).generate(100_000, start_ms=WINDOW[0])]
    truth = state.registry.get("fraud-cnp", "2").score(fresh).probability  # type: ignore[union-attr]
    errors: dict[str, list[float]] = {"blended": [], "tenant-only": []}
    effective: list[float] = []
    for seed in range(1, 5):
        rehearsal = guarded(state, small_and_big(seed))
        maps = rehearsal.fit_maps(WINDOW, {})
        fitted = records(maps)
        assert records(rehearsal.fit_maps(WINDOW, {})) == fitted
        for tenant in BIG:
            assert fitted[(tenant, CNP)] == own_fit(rehearsal, tenant).to_record()
        small = maps[(SMALL, CNP)]
        assert isinstance(small, QuantileMap) and small.source == "rehearsal" and small.sample_count == SMALL_EVENTS
        assert (small.window_start_ms, small.window_end_ms) == WINDOW
        assert [t for t, _ in small.evidence] == list(WATCH)
        effective += [n for _, n in small.evidence]
        for name, qmap in (("blended", small), ("tenant-only", own_fit(rehearsal, SMALL))):
            errors[name] += [abs(float(np.mean(qmap.apply(truth) > tau)) / (1 - tau) - 1) for tau in WATCH]
    mae = {name: float(np.mean(e)) for name, e in errors.items()}
    print(f"\nsmall tenant's mean alert-rate error {mae}; effective samples {[round(n) for n in effective]}")
    assert mae["blended"] < 0.5 * mae["tenant-only"], mae
    assert float(np.median(effective)) > 2 * SMALL_EVENTS, effective
    rows = {(r.tenant, r.threshold): r for r in build_report(rehearsal, maps, WINDOW).rows}
    for tau, n in small.evidence:
        assert (rows[(SMALL, tau)].fit, rows[(SMALL, tau)].effective_samples) == ("blended", n)
        assert (rows[(BIG[0], tau)].fit, rows[(BIG[0], tau)].effective_samples) == ("own", BIG_EVENTS)
