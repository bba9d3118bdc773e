"""ScoreMonitor: sliding-window alert rates (mapped and raw) and drift gauges per tenant."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from prometheus_client import generate_latest

from museflow.observe.drift import DriftBins, alert_rates
from museflow.observe.metrics import PipelineMetrics
from museflow.observe.monitoring import ScoreMonitor, threshold_label
from museflow.transform.reference import ReferenceDistribution


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def value(metrics: PipelineMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


@pytest.fixture
def setup() -> tuple[PipelineMetrics, ScoreMonitor, Clock]:
    metrics = PipelineMetrics()
    metrics.set_known(["acme", "globex"], ["cnp"])
    clock = Clock()
    return metrics, ScoreMonitor(metrics, 60.0, buckets=6, publish_interval_seconds=5.0, clock=clock), clock


def test_alert_rates_match_the_definition_strictly_above_including_ties(setup) -> None:  # type: ignore[no-untyped-def]
    metrics, monitor, _clock = setup
    mapped = np.array([0.1, 0.5, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9, 0.2, 1.0])
    raw = np.array([0.01, 0.02, 0.5, 0.91, 0.92, 0.96, 0.2, 0.3, 0.4, 0.9])
    taus = (0.9, 0.99)
    monitor.observe("acme", mapped, raw, taus, ReferenceDistribution.uniform())
    monitor.publish()
    expected_mapped = alert_rates(mapped, taus)
    expected_raw = alert_rates(raw, taus)
    for k, tau in enumerate(taus):
        t = threshold_label(tau)
        assert value(metrics, "museflow_alert_rate", tenant="acme", threshold=t, kind="mapped") == \
            pytest.approx(expected_mapped[k])
        assert value(metrics, "museflow_alert_rate", tenant="acme", threshold=t, kind="raw") == \
            pytest.approx(expected_raw[k])
    assert expected_mapped.tolist() == [0.5, 0.3]  # 0.9 itself is not above 0.9; 0.99 not above 0.99


def test_drift_equals_psi_and_js_of_drift_bins_over_the_window(setup) -> None:  # type: ignore[no-untyped-def]
    metrics, monitor, clock = setup
    reference = ReferenceDistribution.uniform()
    rng = np.random.default_rng(7)
    shifted = rng.beta(2.0, 1.0, size=5000)
    for batch in np.array_split(shifted, 10):
        monitor.observe("acme", batch, batch, (0.9,), reference)
    monitor.publish()
    bins = DriftBins.from_reference(reference)
    assert value(metrics, "museflow_score_drift_psi", tenant="acme") == pytest.approx(bins.psi(shifted))
    assert value(metrics, "museflow_score_drift_js", tenant="acme") == pytest.approx(bins.jensen_shannon(shifted))
    assert bins.psi(shifted) > 0.2

    same = rng.uniform(size=20000)
    other = ScoreMonitor(PipelineMetrics(), 60.0, clock=clock)
    other.observe("acme", same, same, (0.9,), reference)
    stats = other.stats("acme")
    assert stats is not None and stats.psi < 0.01 and stats.js < 0.01


def test_old_buckets_leave_the_window_and_empty_tenants_lose_their_series(setup) -> None:  # type: ignore[no-untyped-def]
    metrics, monitor, clock = setup
    reference = ReferenceDistribution.uniform()
    monitor.observe("acme", np.full(200, 0.95), np.full(200, 0.95), (0.9,), reference)
    clock.now += 30
    monitor.observe("acme", np.full(200, 0.5), np.full(200, 0.5), (0.9,), reference)
    monitor.publish()
    assert value(metrics, "museflow_alert_rate", tenant="acme", threshold="0.9", kind="mapped") == 0.5
    clock.now += 40  # the first batch is now older than 60 s
    monitor.publish()
    assert value(metrics, "museflow_alert_rate", tenant="acme", threshold="0.9", kind="mapped") == 0.0
    clock.now += 60
    monitor.publish()
    assert value(metrics, "museflow_alert_rate", tenant="acme", threshold="0.9", kind="mapped") is None
    assert value(metrics, "museflow_score_drift_psi", tenant="acme") is None


def test_gauges_refresh_at_most_every_publish_interval(setup) -> None:  # type: ignore[no-untyped-def]
    metrics, monitor, clock = setup
    monitor.observe("acme", np.array([0.95]), np.array([0.95]), (0.9,), None)
    assert value(metrics, "museflow_alert_rate", tenant="acme", threshold="0.9", kind="mapped") is None
    clock.now += 5
    monitor.observe("acme", np.array([0.1]), np.array([0.1]), (0.9,), None)
    assert value(metrics, "museflow_alert_rate", tenant="acme", threshold="0.9", kind="mapped") == 0.5
    monitor.observe("acme", np.array([0.1, 0.1]), np.array([0.1, 0.1]), (0.9,), None)
    assert value(metrics, "museflow_alert_rate", tenant="acme", threshold="0.9", kind="mapped") == 0.5


def test_drift_waits_for_enough_samples_and_needs_a_reference(setup) -> None:  # type: ignore[no-untyped-def]
    metrics, monitor, _clock = setup
    reference = ReferenceDistribution.uniform()
    monitor.observe("acme", np.full(50, 0.5), np.full(50, 0.5), (0.9,), reference)
    monitor.observe("globex", np.full(500, 0.5), np.full(500, 0.5), (0.9,), None)
    monitor.publish()
    assert value(metrics, "museflow_score_drift_psi", tenant="acme") is None
    assert value(metrics, "museflow_score_drift_psi", tenant="globex") is None
    assert value(metrics, "museflow_alert_rate", tenant="globex", threshold="0.9", kind="mapped") == 0.0


def test_a_tenants_routes_share_one_window_with_the_union_of_their_thresholds(setup) -> None:  # type: ignore[no-untyped-def]
    """The scorer observes per (tenant, intent) with each route's thresholds: alternating must not reset."""
    metrics, monitor, _clock = setup
    reference = ReferenceDistribution.uniform()
    for _ in range(3):
        monitor.observe("acme", np.array([0.95, 0.1]), np.array([0.95, 0.1]), (0.9, 0.99), reference)
        monitor.observe("acme", np.array([0.97, 0.2]), np.array([0.5, 0.2]), (0.95,), reference)
    monitor.publish()
    stats = monitor.stats("acme")
    assert stats is not None and stats.count == 10  # the first new threshold restarts history once
    assert value(metrics, "museflow_alert_rate", tenant="acme", threshold="0.9", kind="mapped") == 0.5
    assert value(metrics, "museflow_alert_rate", tenant="acme", threshold="0.95", kind="mapped") == 0.3
    assert value(metrics, "museflow_alert_rate", tenant="acme", threshold="0.95", kind="raw") == 0.0
    assert value(metrics, "museflow_alert_rate", tenant="acme", threshold="0.99", kind="mapped") == 0.0


def test_a_new_reference_restarts_the_window_and_retires_old_thresholds(setup) -> None:  # type: ignore[no-untyped-def]
    metrics, monitor, _clock = setup
    monitor.observe("acme", np.array([0.95]), np.array([0.95]), (0.9,), ReferenceDistribution.uniform())
    monitor.publish()
    monitor.observe("acme", np.array([0.95]), np.array([0.95]), (0.99,),
                    ReferenceDistribution.uniform(version=2))
    monitor.publish()
    assert value(metrics, "museflow_alert_rate", tenant="acme", threshold="0.9", kind="mapped") is None
    assert value(metrics, "museflow_alert_rate", tenant="acme", threshold="0.99", kind="mapped") == 0.0


def test_unknown_tenants_are_bounded_to_other(setup) -> None:  # type: ignore[no-untyped-def]
    metrics, monitor, _clock = setup
    monitor.observe("not-configured", np.array([0.95]), np.array([0.95]), (0.9,), None)
    monitor.publish()
    assert value(metrics, "museflow_alert_rate", tenant="_other", threshold="0.9", kind="mapped") == 1.0


def test_a_scrape_publishes_when_due_so_a_burst_is_not_left_half_published(setup) -> None:  # type: ignore[no-untyped-def]
    metrics, monitor, clock = setup
    clock.now += 5
    monitor.observe("acme", np.array([0.95]), np.array([0.95]), (0.9,), None)  # publishes the first batch
    monitor.observe("acme", np.array([0.1, 0.1, 0.1]), np.array([0.1, 0.1, 0.1]), (0.9,), None)
    assert value(metrics, "museflow_alert_rate", tenant="acme", threshold="0.9", kind="mapped") == 1.0
    clock.now += 5
    generate_latest(metrics.registry)  # the scrape that publishes
    assert value(metrics, "museflow_alert_rate", tenant="acme", threshold="0.9", kind="mapped") == 0.25


def test_empty_raw_batch_keeps_raw_rate_unset(setup) -> None:  # type: ignore[no-untyped-def]
    metrics, monitor, _clock = setup
    monitor.observe("acme", np.array([0.95, 0.1]), np.empty(0), (0.9,), None)
    monitor.publish()
    assert value(metrics, "museflow_alert_rate", tenant="acme", threshold="0.9", kind="mapped") == 0.5
    assert value(metrics, "museflow_alert_rate", tenant="acme", threshold="0.9", kind="raw") is None
    stats = monitor.stats("acme")
    assert stats is not None and math.isnan(stats.raw_alert_rates[0.9])


def test_observe_is_cheap() -> None:
    """Not a benchmark: a generous bound that catches an accidental per-event Python loop."""
    monitor = ScoreMonitor(PipelineMetrics(), 600.0, publish_interval_seconds=3600.0)
    reference = ReferenceDistribution.uniform()
    rng = np.random.default_rng(1)
    mapped, raw = rng.uniform(size=500), rng.uniform(size=500)
    taus = (0.9, 0.99, 0.999)
    monitor.observe("acme", mapped, raw, taus, reference)
    start = time.perf_counter()
    for _ in range(2000):
        monitor.observe("acme", mapped, raw, taus, reference)
    per_batch = (time.perf_counter() - start) / 2000
    assert per_batch < 500e-6, f"{per_batch * 1e6:.1f} µs per batch of 500"


def test_two_intents_on_different_references_keep_their_own_windows(setup) -> None:  # type: ignore[no-untyped-def]
    metrics, monitor, _clock = setup
    frozen = ReferenceDistribution.from_samples("acme-cnp", 1, np.linspace(0.0, 0.5, 1001))
    for _ in range(3):  # alternating batches, as the scorer sends them per (tenant, intent)
        monitor.observe("acme", np.array([0.45, 0.1]), np.array([0.45, 0.1]), (0.4,), frozen, intent="cnp")
        monitor.observe("acme", np.array([0.95]), np.array([0.95]), (0.9,), ReferenceDistribution.uniform(),
                        intent="ato")
    monitor.publish()
    assert value(metrics, "museflow_alert_rate", tenant="acme", threshold="0.4", kind="mapped") == 0.5
    assert value(metrics, "museflow_alert_rate", tenant="acme", threshold="0.9", kind="mapped") == 1.0


def test_corrected_probabilities_publish_cbpe_and_base_rate_per_tenant_and_threshold(setup) -> None:  # type: ignore[no-untyped-def]
    from museflow.observe.estimate import expected_confusion

    metrics, monitor, _clock = setup
    p = np.array([0.9, 0.6, 0.2, 0.1, 0.05])
    mapped = np.array([0.995, 0.95, 0.95, 0.5, 0.2])
    taus = (0.9, 0.99)
    monitor.observe("acme", mapped, p, taus, None, "cnp", corrected=p)
    monitor.publish()
    expected = expected_confusion(p, mapped, taus)
    for tau in taus:
        labels = {"tenant": "acme", "threshold": threshold_label(tau)}
        assert value(metrics, "museflow_estimated_precision", **labels) == pytest.approx(expected[tau].precision)
        assert value(metrics, "museflow_estimated_recall", **labels) == pytest.approx(expected[tau].recall)
        assert value(metrics, "museflow_estimated_f1", **labels) == pytest.approx(expected[tau].f1)
        assert value(metrics, "museflow_estimated_alert_rate", **labels) == pytest.approx(expected[tau].alert_rate)
    assert value(metrics, "museflow_estimated_frauds", tenant="acme") == pytest.approx(p.sum())
    assert value(metrics, "museflow_estimated_base_rate", tenant="acme", method="mean") == pytest.approx(p.mean())
    assert value(metrics, "museflow_estimated_base_rate", tenant="acme", method="em") is None  # too few samples


def test_without_corrected_probabilities_no_estimate_is_published(setup) -> None:  # type: ignore[no-untyped-def]
    metrics, monitor, _clock = setup
    monitor.observe("acme", np.array([0.95, 0.1]), np.array([0.95, 0.1]), (0.9,), None)
    monitor.publish()
    assert value(metrics, "museflow_alert_rate", tenant="acme", threshold="0.9", kind="mapped") == 0.5
    assert value(metrics, "museflow_estimated_recall", tenant="acme", threshold="0.9") is None
    assert monitor.estimate("acme") is None


def test_intents_add_expected_counts_and_undefined_precision_has_no_series(setup) -> None:  # type: ignore[no-untyped-def]
    metrics, monitor, _clock = setup
    monitor.observe("acme", np.array([0.95, 0.1]), np.array([0.0, 0.0]), (0.9,), None, "cnp",
                    corrected=np.array([0.8, 0.1]))
    monitor.observe("acme", np.array([0.5]), np.array([0.0]), (0.9, 0.99), None, "ato", corrected=np.array([0.3]))
    monitor.publish()
    estimate = monitor.estimate("acme")
    assert estimate is not None and estimate.samples == 3
    assert value(metrics, "museflow_estimated_recall", tenant="acme", threshold="0.9") == pytest.approx(0.8 / 1.2)
    assert value(metrics, "museflow_estimated_recall", tenant="acme", threshold="0.99") == 0.0
    assert value(metrics, "museflow_estimated_precision", tenant="acme", threshold="0.99") is None  # no alerts


def test_em_base_rate_is_measured_against_the_day_before_the_window_and_series_retire() -> None:
    metrics = PipelineMetrics()
    metrics.set_known(["acme"], ["cnp"])
    clock = Clock()
    monitor = ScoreMonitor(metrics, 60.0, buckets=6, clock=clock, baseline_seconds=3600.0, min_drift_samples=100,
                           publish_on_scrape=False)
    rng = np.random.default_rng(3)

    def traffic(n: int, rate: float) -> np.ndarray:
        y = rng.random(n) < rate
        x = rng.standard_normal(n) + 2.5 * y
        return np.asarray(1 / (1 + np.exp(-(math.log(0.01 / 0.99) + 2.5 * x - 3.125))))

    for _ in range(30):  # 30 minutes at 1%, the model's prior
        p = traffic(4000, 0.01)
        monitor.observe("acme", p, p, (0.99,), None, "cnp", corrected=p)
        clock.now += 60
    for _ in range(6):  # then 3%: one full window
        p = traffic(20000, 0.03)
        monitor.observe("acme", p, p, (0.99,), None, "cnp", corrected=p)
        clock.now += 10
    clock.now -= 1
    monitor.publish()
    em = value(metrics, "museflow_estimated_base_rate", tenant="acme", method="em")
    baseline = value(metrics, "museflow_estimated_base_rate", tenant="acme", method="baseline")
    mean = value(metrics, "museflow_estimated_base_rate", tenant="acme", method="mean")
    assert em is not None and baseline is not None and mean is not None
    assert abs(baseline / 0.01 - 1) < 0.1 and abs(em / 0.03 - 1) < 0.1 and mean < 0.025
    clock.now += 7200
    monitor.publish()
    assert value(metrics, "museflow_estimated_base_rate", tenant="acme", method="em") is None
    assert value(metrics, "museflow_estimated_recall", tenant="acme", threshold="0.99") is None


def test_observe_with_corrected_probabilities_stays_cheap() -> None:
    """Not a benchmark: the CBPE sums and the EM histogram add a few numpy calls per batch, not a loop."""
    monitor = ScoreMonitor(PipelineMetrics(), 600.0, publish_interval_seconds=3600.0)
    rng = np.random.default_rng(1)
    mapped, raw, p = rng.uniform(size=500), rng.uniform(size=500), rng.beta(0.5, 20.0, size=500)
    taus = (0.9, 0.99, 0.999)
    monitor.observe("acme", mapped, raw, taus, None, corrected=p)
    start = time.perf_counter()
    for _ in range(1000):
        monitor.observe("acme", mapped, raw, taus, None, corrected=p)
    per_batch = (time.perf_counter() - start) / 1000
    assert per_batch < 1000e-6, f"{per_batch * 1e6:.1f} µs per batch of 500"


def test_a_candidate_gets_its_own_estimate_per_model_and_loses_it_when_it_stops_scoring(setup) -> None:  # type: ignore[no-untyped-def]
    from museflow.observe.estimate import expected_confusion

    metrics, monitor, clock = setup
    p = np.array([0.9, 0.6, 0.2, 0.1, 0.05])
    champion_mapped = np.array([0.995, 0.95, 0.95, 0.5, 0.2])
    candidate_mapped = np.array([0.5, 0.995, 0.2, 0.95, 0.1])
    monitor.observe("acme", champion_mapped, p, (0.9,), None, "cnp", corrected=p)
    monitor.observe_candidate("acme", "cnp", "fraud@2", candidate_mapped, p, (0.9,))
    monitor.publish()
    labels = {"tenant": "acme", "model": "fraud@2", "threshold": threshold_label(0.9)}
    expected = expected_confusion(p, candidate_mapped, (0.9,))[0.9]
    assert value(metrics, "museflow_candidate_estimated_recall", **labels) == pytest.approx(expected.recall)
    assert value(metrics, "museflow_candidate_estimated_precision", **labels) == pytest.approx(expected.precision)
    serving = value(metrics, "museflow_estimated_recall", tenant="acme", threshold=threshold_label(0.9))
    assert serving == pytest.approx(expected_confusion(p, champion_mapped, (0.9,))[0.9].recall)
    assert serving != pytest.approx(expected.recall)  # the candidate's figure is its own
    clock.now += 120  # the candidate stopped scoring (promoted or removed): its series go
    monitor.publish()
    assert value(metrics, "museflow_candidate_estimated_recall", **labels) is None
