"""Refit guards and the Refitter: each guard refuses with a reason, allowed cases publish, pooled fallback."""

from __future__ import annotations

import numpy as np
import pytest

from museflow.control.contract import Contract, blend_map, credibility, judge
from museflow.transform.qmap import QuantileMap
from museflow.transform.reference import ReferenceDistribution
from museflow.transform.refit import ExactSample, RefitPolicy, Refitter, alert_rate_on, fit_map, with_evidence
from museflow.transform.sketch import WindowedSketch

REF = ReferenceDistribution.uniform("pct", 1)
WATCH = (0.95, 0.99, 0.995)


def _sketch(data: np.ndarray, now: float = 10.0) -> WindowedSketch:
    sketch = WindowedSketch(window_seconds=3600.0)
    for i in range(0, data.size, 500):
        sketch.update(data[i : i + 500], now=now)
    return sketch


def _fit(sketch: WindowedSketch, version: int = 1) -> QuantileMap:
    return fit_map(sketch, REF, model="xgb", model_version="2", tenant="acme", intent="cnp", version=version)


@pytest.fixture(scope="module")
def traffic() -> np.ndarray:
    return np.random.default_rng(21).beta(0.5, 9.0, size=60_000)


def test_fit_map_records_counts_window_and_reference(traffic: np.ndarray) -> None:
    sketch = WindowedSketch(window_seconds=600.0, buckets=10)
    sketch.update(traffic[:30_000], now=120.0)
    sketch.update(traffic[30_000:], now=300.0)
    qmap = fit_map(sketch, REF, model="xgb", model_version="2", tenant="acme", intent="cnp", version=4,
                   tail_threshold=0.99, now_ms=300_000)
    assert qmap.version == 4 and qmap.sample_count == traffic.size
    assert qmap.reference_name == "pct" and qmap.reference_version == 1
    assert qmap.window_start_ms == 120_000 and qmap.window_end_ms == qmap.created_at_ms == 300_000
    assert qmap.tail_sample_count == pytest.approx(0.01 * traffic.size, rel=0.1)
    assert qmap.knots_x[0] == pytest.approx(traffic.min(), rel=1e-6)
    assert qmap.knots_x[-1] == pytest.approx(traffic.max(), rel=1e-6)
    assert qmap.knots_x.size >= 70


def test_too_few_samples_is_refused(traffic: np.ndarray) -> None:
    sketch = _sketch(traffic[:5000])
    decision = RefitPolicy(min_samples=10_000).decide(_fit(sketch), None, sketch)
    assert not decision.publish and decision.reason == "too-few-samples"
    assert "5000 samples in the window" in decision.message and "10000" in decision.message


def test_too_few_tail_samples_is_refused(traffic: np.ndarray) -> None:
    sketch = _sketch(traffic[:20_000])
    policy = RefitPolicy(min_samples=10_000, min_tail_samples=200, watch_thresholds=WATCH)
    decision = policy.decide(_fit(sketch), None, sketch)
    assert not decision.publish and decision.reason == "too-few-tail-samples"
    assert decision.details["tail_samples"] == pytest.approx(100, rel=0.2)  # 0.5% of 20000
    assert "above 0.995" in decision.message


def test_first_map_is_published_against_identity_or_nothing(traffic: np.ndarray) -> None:
    sketch = _sketch(traffic)
    policy = RefitPolicy(min_samples=10_000, min_tail_samples=100, watch_thresholds=WATCH)
    candidate = _fit(sketch)
    ident = QuantileMap.identity("xgb", "2", "acme", "cnp")
    for current in (None, ident):
        decision = policy.decide(candidate, current, sketch)
        assert decision.publish and decision.reason == "first-map"
    assert alert_rate_on(ident, sketch, 0.99) < 0.002  # raw scores would barely alert at all


def test_alert_rate_shift_beyond_the_bound_is_held(traffic: np.ndarray) -> None:
    old = _sketch(traffic)
    current = _fit(old)
    shifted = _sketch(np.clip(traffic * 1.6, 0, 1))  # an attack or a feature outage
    candidate = _fit(shifted, version=2)
    policy = RefitPolicy(min_samples=10_000, min_tail_samples=50, watch_thresholds=WATCH,
                         max_alert_rate_shift=0.25)
    decision = policy.decide(candidate, current, shifted)
    assert not decision.publish and decision.reason == "alert-rate-shift"
    assert decision.details["max_relative_shift"] > 0.25
    assert "bound 25%" in decision.message and "v1" in decision.message
    forced = policy.decide(candidate, current, shifted, allow_shift=True)
    assert forced.publish


def test_refit_on_similar_traffic_is_published(traffic: np.ndarray) -> None:
    current = _fit(_sketch(traffic[:20_000]))
    recent = _sketch(traffic[20_000:])
    policy = RefitPolicy(min_samples=10_000, min_tail_samples=50, watch_thresholds=WATCH,
                         max_alert_rate_shift=0.25)
    decision = policy.decide(_fit(recent, version=2), current, recent)
    assert decision.publish and decision.reason == "published"
    assert decision.details["max_relative_shift"] < 0.25


def test_a_map_on_more_samples_is_kept_until_traffic_shows_it_off_contract(traffic: np.ndarray) -> None:
    """No churn: a smaller refit does not replace a bigger map that still holds; it does once the map breaks."""
    current = _fit(_sketch(traffic[:40_000]))
    recent = _sketch(traffic[40_000:55_000])
    policy = RefitPolicy(min_samples=10_000, min_tail_samples=20, watch_thresholds=WATCH, max_alert_rate_shift=1.0)
    decision = policy.decide(_fit(recent, version=2), current, recent)
    assert not decision.publish and decision.reason == "no-new-evidence", decision.message
    assert "40000 samples" in decision.message
    drifted = _sketch(np.clip(traffic[40_000:55_000] * 1.15, 0, 1))
    assert policy.off_contract(_fit(drifted, version=2), current, drifted) is not None
    decision = policy.decide(_fit(drifted, version=2), current, drifted)
    assert decision.publish and decision.reason == "published", decision.message


@pytest.mark.parametrize("source", ["blended", "rehearsal"])
def test_a_stand_in_map_yields_to_the_tenants_own_map_however_far_apart(traffic: np.ndarray, source: str) -> None:
    """A blended or rehearsed map far off this tenant's traffic is replaced, not held by the shift guard for good."""
    record = _fit(_sketch(np.clip(traffic[:40_000] * 1.6, 0, 1))).to_record()
    current = QuantileMap.from_record({**record, "source": source})
    own = _sketch(traffic[40_000:55_000])
    policy = RefitPolicy(min_samples=10_000, min_tail_samples=20, watch_thresholds=WATCH)
    decision = policy.decide(_fit(own, version=2), current, own)
    assert decision.details["max_relative_shift"] > policy.max_alert_rate_shift
    assert decision.publish and decision.reason == "replaces-stopgap", decision.message
    assert f"replaces {source} map v1" in decision.message
    shadow = QuantileMap.from_record({**record, "source": "shadow"})
    held = policy.decide(_fit(own, version=2), shadow, own)  # a live map far off still needs a human
    assert not held.publish and held.reason == "alert-rate-shift", held.message


def test_refitter_publishes_tenant_and_pooled_and_a_blended_map_for_small_tenants(traffic: np.ndarray) -> None:
    policy = RefitPolicy(min_samples=10_000, min_tail_samples=20, watch_thresholds=WATCH)
    small_ref = ReferenceDistribution.uniform("small-ref", 1)
    refitter = Refitter(lambda tenant, intent: small_ref if tenant == "small" else REF, policy)
    for i in range(0, 50_000, 500):
        refitter.observe("xgb", "2", "big", "cnp", traffic[i : i + 500], now=5.0)
    refitter.observe("xgb", "2", "small", "cnp", traffic[50_000:51_000], now=5.0)
    outcomes = {o.key: o for o in refitter.refit(now=6.0)}
    assert outcomes[("xgb", "2", "cnp", "big")].published
    assert outcomes[("xgb", "2", "cnp", None)].published
    small = outcomes[("xgb", "2", "cnp", "small")]
    assert small.published and small.decision.reason == "blended", small.decision.message
    assert "too-few-samples" not in small.decision.message and "1000 samples in the window" in small.decision.message
    blended = refitter.store.resolve("xgb", "2", "small", "cnp", reference="small-ref@1")
    assert blended.tenant == "small" and blended.source == "blended" and blended.sample_count == 1000
    assert (blended.reference_name, blended.reference_version) == ("small-ref", 1)  # its own reference, not big's
    assert [t for t, _ in blended.evidence] == list(WATCH)
    assert all(n > 0 for _, n in blended.evidence)
    assert refitter.store.get("xgb", "2", "big") is not None
    assert refitter.store.resolve("xgb", "2", "big", "cnp").tenant == "big"
    again = {o.key: o for o in refitter.refit(now=7.0, force=True)}[("xgb", "2", "cnp", "small")]
    assert again.published and again.candidate is not None and again.candidate.version == 2
    refitter.observe("xgb", "2", "small", "cnp", traffic[51_000:51_500], now=8.0)
    recent = {o.key: o for o in refitter.refit(now=9.0)}[("xgb", "2", "cnp", "small")]
    assert not recent.published and recent.decision.reason == "blended-recent"  # no churn
    assert refitter.store.resolve("xgb", "3", "big", "cnp").is_identity
    assert refitter.refit(now=7.0) == []  # nothing new observed


def test_a_blended_map_carries_the_contracts_effective_samples_at_each_watch_threshold(traffic: np.ndarray) -> None:
    """What the refit agent and the rehearsal attach to a blended map, and promotion reads back."""
    tenants = {"big": ExactSample(traffic[:30_000]), "mid": ExactSample(traffic[30_000:50_000]),
               "small": ExactSample(traffic[50_000:51_000])}
    pooled = ExactSample(traffic[:51_000])
    cred = credibility(tenants, pooled)
    blended = blend_map(tenants["small"], cred, REF, model="xgb", model_version="2", tenant="small", intent="cnp",
                        version=3)
    contract = Contract()
    watched = with_evidence(blended, tenants["small"], cred, REF, contract, WATCH)
    assert [t for t, _ in watched.evidence] == list(WATCH)
    for tau, effective in watched.evidence:
        assert effective == judge(blended, tau, 1 - tau, tenants["small"], contract, cred).effective_samples
        assert watched.effective_samples(tau) == effective > 0
    assert {**watched.to_record(), "evidence": []} == blended.to_record()
    unwatched = with_evidence(blended, tenants["small"], cred, REF, contract)  # promotion's default rates
    assert [t for t, _ in unwatched.evidence] == pytest.approx([0.95, 0.99])


def test_refitter_increments_versions_on_the_whole_window(traffic: np.ndarray) -> None:
    refitter = Refitter(lambda tenant, intent: REF, RefitPolicy(min_samples=1000, min_tail_samples=5))
    refitter.observe("xgb", "2", "acme", "cnp", traffic[:20_000], now=1.0)
    assert [o.candidate.version for o in refitter.refit(1.0) if o.candidate] == [1, 1]
    refitter.observe("xgb", "2", "acme", "cnp", traffic[20_000:40_000], now=2.0)
    second = refitter.refit(2.0)
    assert all(o.published for o in second)
    latest = refitter.store.get("xgb", "2", "acme")
    assert latest is not None and latest.version == 2 and latest.sample_count == 40_000


def test_score_log_batches_and_their_rows_feed_the_same_sketches(traffic: np.ndarray) -> None:
    from museflow.contracts.scorelog import rows

    shared = {"intent": "cnp", "model": "xgb", "model_version": "2", "role": "champion", "served": True,
              "map_version": 0, "route_version": 1, "reference": {"name": "pct", "version": 1}, "scored_at": 0}
    batches = [{**shared, "tenant": tenant, "event_ids": [f"e{i}" for i in range(len(part))],
                "event_times": [0] * len(part), "raw_scores": list(part), "corrected_scores": list(part),
                "scores": list(part)}
               for tenant, part in (("acme", traffic[:3000]), ("beta", traffic[3000:4000]),
                                    ("acme", traffic[4000:5000]))]
    policy = RefitPolicy(min_samples=1000, min_tail_samples=5)
    by_batch, by_row = Refitter(REF, policy), Refitter(REF, policy)
    counts = by_batch.observe_log(batches, now=1.0)
    assert counts == {("xgb", "2", "acme", "cnp"): 4000, ("xgb", "2", "beta", "cnp"): 1000}
    assert by_row.observe_log(rows(batches), now=1.0) == counts
    fitted = [{o.key: o.candidate.sample_count for o in r.refit(2.0) if o.candidate} for r in (by_batch, by_row)]
    assert fitted[0] == fitted[1] == {("xgb", "2", "cnp", "acme"): 4000, ("xgb", "2", "cnp", "beta"): 1000,
                                      ("xgb", "2", "cnp", None): 5000}


def test_unfittable_constant_scores_are_reported_not_raised() -> None:
    refitter = Refitter(REF, RefitPolicy(min_samples=10, min_tail_samples=0))
    refitter.observe("xgb", "2", "acme", "cnp", np.full(100, 0.3), now=1.0)
    outcomes = refitter.refit(1.0)
    assert all(o.decision.reason == "unfittable" and o.candidate is None for o in outcomes)
    assert "constant model" in outcomes[0].decision.message


def test_model_swap_keeps_tenant_alert_rates_while_raw_rates_move() -> None:
    rng = np.random.default_rng(5)
    reference = ReferenceDistribution.from_samples("acme-incumbent", 1, rng.beta(0.5, 9.0, 300_000))
    watch = tuple(float(t) for t in reference.threshold_for([0.05, 0.01, 0.005]))
    refitter = Refitter(reference, RefitPolicy(min_samples=50_000, min_tail_samples=100, watch_thresholds=watch))
    incumbent = rng.beta(0.5, 9.0, 300_000)
    candidate = rng.beta(2.0, 3.0, 300_000)  # a new model with a very different score scale
    for i in range(0, 300_000, 500):
        refitter.observe("xgb", "1", "acme", "cnp", incumbent[i : i + 500], now=1.0)
        refitter.observe("xgb", "2", "acme", "cnp", candidate[i : i + 500], now=1.0)
    assert all(o.published for o in refitter.refit(2.0))
    old_map = refitter.store.resolve("xgb", "1", "acme", "cnp")
    new_map = refitter.store.resolve("xgb", "2", "acme", "cnp")
    fresh_old, fresh_new = rng.beta(0.5, 9.0, 500_000), rng.beta(2.0, 3.0, 500_000)
    for rate in (0.05, 0.01, 0.005):
        tau = float(reference.threshold_for(rate))
        before = float(np.mean(old_map.apply(fresh_old) > tau))
        after = float(np.mean(new_map.apply(fresh_new) > tau))
        assert after == pytest.approx(before, rel=0.15)
        assert after == pytest.approx(rate, rel=0.12)
        assert float(np.mean(fresh_new > tau)) > 5 * rate  # the raw candidate would flood the tenant
