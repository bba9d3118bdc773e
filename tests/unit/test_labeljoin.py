"""The label join: both arrival orders, the window, bounded memory, metric values on a hand example."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry

from museflow.observe.label_join import ALL_COHORTS, OTHER_COHORT, LabelJoin, LabelMetrics
from museflow.observe.performance import auc

DAY = 86400.0


def test_label_after_score_and_label_before_score_both_join() -> None:
    join = LabelJoin(window_seconds=7 * DAY)
    assert join.add_score("e1", "acme", 0.9, ts=0.0, cohort="cnp") is None
    joined = join.add_label("e1", True, ts=3 * DAY)
    assert joined is not None and (joined.tenant, joined.cohort, joined.score, joined.is_fraud) == \
        ("acme", "cnp", 0.9, True)

    assert join.add_label("e2", False, ts=3 * DAY, tenant="acme") is None
    joined = join.add_score("e2", "acme", 0.2, ts=3 * DAY + 5, cohort="cnp")
    assert joined is not None and (joined.event_id, joined.is_fraud, joined.score) == ("e2", False, 0.2)
    assert join.joined == {"acme": 2}
    assert join.labels_waiting == 0 and join.scores_waiting == {"acme": 0}


def test_the_label_cohort_wins_over_the_intent() -> None:
    join = LabelJoin()
    join.add_score("e1", "acme", 0.5, ts=0.0, cohort="cnp")
    joined = join.add_label("e1", False, ts=1.0, cohort="ecommerce")
    assert joined is not None and joined.cohort == "ecommerce"


def test_duplicates_from_at_least_once_delivery_are_not_counted_twice() -> None:
    join = LabelJoin()
    join.add_score("e1", "acme", 0.5, ts=0.0)
    join.add_score("e1", "acme", 0.5, ts=1.0)
    assert join.add_label("e1", True, ts=2.0) is not None
    assert join.add_label("e1", True, ts=3.0) is None
    assert join.joined == {"acme": 1} and join.duplicates == 2
    assert join.unlabelled_fraction("acme") == 0.0


def test_window_eviction_counts_unlabelled_scores_and_orphan_labels() -> None:
    join = LabelJoin(window_seconds=2 * DAY)
    join.add_score("old", "acme", 0.7, ts=0.0)
    join.add_label("orphan", True, ts=0.5 * DAY, tenant="acme")
    join.add_score("new", "acme", 0.1, ts=1.5 * DAY)
    assert join.unlabelled_fraction("acme") == 1.0
    join.expire(now=2.2 * DAY)
    assert join.evicted_unlabelled == {"acme": 1} and join.evicted_labels == {}
    assert join.add_label("old", True, ts=2.3 * DAY, tenant="acme") is None  # too late: its score is gone
    join.expire(now=2.6 * DAY)
    assert join.evicted_labels == {"acme": 1}
    assert len(join) == 2  # "new" and the late label for "old"
    assert join.joined == {}


def test_memory_is_bounded_by_max_entries_oldest_out_first() -> None:
    join = LabelJoin(window_seconds=30 * DAY, max_entries=100)
    for i in range(1000):
        join.add_score(f"e{i}", "acme", 0.5, ts=float(i))
    assert len(join) == 100
    assert join.evicted_unlabelled == {"acme": 900}
    assert join.add_label("e0", True, ts=1000.0) is None
    assert join.add_label("e999", True, ts=1000.0) is not None
    assert join.unlabelled_fraction("acme") == pytest.approx(98 / 99)


def test_history_keeps_only_the_latest_pairs_and_cohorts_are_bounded() -> None:
    join = LabelJoin(history=3000, max_cohorts=2)
    for i in range(5000):
        cohort = ("a", "b", "c")[i % 3]
        join.add_score(f"e{i}", "acme", (i % 100) / 100, ts=float(i), cohort=cohort)
        join.add_label(f"e{i}", i % 100 >= 90, ts=float(i))
    performance = join.performance("acme", ALL_COHORTS, [0.5])
    assert performance is not None and performance.samples == 3000
    assert {c for _, c in join.cohorts()} == {"a", "b", OTHER_COHORT, ALL_COHORTS}


def test_metrics_on_a_hand_example() -> None:
    """Eight labelled scores, threshold 0.5: TP = 3 (0.9, 0.8, 0.7), FP = 1 (0.6), FN = 1 (0.3), TN = 3."""
    scores = [0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1]
    frauds = [True, True, True, False, False, True, False, False]
    join = LabelJoin()
    for i, (s, y) in enumerate(zip(scores, frauds, strict=True)):
        if i % 2:
            join.add_score(f"e{i}", "acme", s, ts=float(i), cohort="cnp")
            join.add_label(f"e{i}", y, ts=float(i) + 1)
        else:
            join.add_label(f"e{i}", y, ts=float(i), tenant="acme")
            join.add_score(f"e{i}", "acme", s, ts=float(i) + 1, cohort="cnp")
    join.add_score("waiting", "acme", 0.5, ts=10.0, cohort="cnp")

    registry = CollectorRegistry()
    metrics = LabelMetrics(registry)
    metrics.publish(join, lambda tenant: (0.5,))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    for cohort in ("cnp", ALL_COHORTS):
        assert value("museflow_labelled_precision", tenant="acme", cohort=cohort, threshold="0.5") == 0.75
        assert value("museflow_labelled_recall", tenant="acme", cohort=cohort, threshold="0.5") == 0.75
        assert value("museflow_labelled_f1", tenant="acme", cohort=cohort, threshold="0.5") == 0.75
        # positives 0.9 0.8 0.7 0.3 vs negatives 0.6 0.4 0.2 0.1: 3*4 + (0.3 beats 0.2, 0.1) = 14 of 16
        assert value("museflow_labelled_auc", tenant="acme", cohort=cohort) == pytest.approx(14 / 16)
        assert value("museflow_labelled_samples", tenant="acme", cohort=cohort) == 8
    assert auc(scores, frauds) == pytest.approx(14 / 16)
    assert value("museflow_unlabelled_fraction", tenant="acme") == pytest.approx(1 / 9)
    assert value("museflow_label_join_entries") == 9
    for joined in [join.add_label("waiting", False, ts=11.0)]:
        assert joined is not None
        metrics.count_join(joined)
    assert value("museflow_labels_joined_total", tenant="acme") == 1


def test_single_class_leaves_auc_unset_and_evictions_are_exported() -> None:
    join = LabelJoin(window_seconds=10.0)
    join.add_score("e1", "acme", 0.9, ts=0.0)
    join.add_label("e1", True, ts=1.0)
    join.add_score("e2", "acme", 0.9, ts=1.0)
    join.add_label("x", True, ts=1.0, tenant="acme")
    join.expire(now=100.0)
    registry = CollectorRegistry()
    metrics = LabelMetrics(registry)
    metrics.publish(join, lambda tenant: (0.5, 0.99))
    metrics.publish(join, lambda tenant: (0.5, 0.99))
    assert registry.get_sample_value("museflow_labelled_auc", {"tenant": "acme", "cohort": ALL_COHORTS}) is None
    assert registry.get_sample_value("museflow_labelled_recall",
                                     {"tenant": "acme", "cohort": ALL_COHORTS, "threshold": "0.99"}) == 0.0
    assert registry.get_sample_value("museflow_label_join_evicted_total",
                                     {"tenant": "acme", "kind": "unlabelled_score"}) == 1
    assert registry.get_sample_value("museflow_label_join_evicted_total",
                                     {"tenant": "acme", "kind": "orphan_label"}) == 1
    assert math.isnan(join.unlabelled_fraction("acme"))


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        LabelJoin(max_entries=0)


def test_corrected_probabilities_give_calibration_and_the_realised_fraud_rate() -> None:
    import numpy as np

    rng = np.random.default_rng(11)
    join = LabelJoin(history=50_000)
    p = rng.beta(0.5, 12.0, size=40_000)
    y = rng.random(p.size) < p
    for i, (prob, fraud) in enumerate(zip(p, y, strict=True)):
        join.add_score(f"e{i}", "acme", float(prob), ts=float(i), cohort="cnp", corrected=float(prob))
        joined = join.add_label(f"e{i}", bool(fraud), ts=float(i))
        assert joined is not None and joined.corrected == float(prob)
    join.add_score("plain", "globex", 0.9, ts=1.0)
    join.add_label("plain", True, ts=2.0)
    performance = join.performance("acme", ALL_COHORTS, (0.5,))
    assert performance is not None and performance.calibration is not None
    assert performance.calibration.trustworthy is True and performance.fraud_rate == pytest.approx(y.mean())
    plain = join.performance("globex", ALL_COHORTS, (0.5,))
    assert plain is not None and plain.calibration is None

    registry = CollectorRegistry()
    LabelMetrics(registry).publish(join, lambda tenant: (0.5,))
    labels = {"tenant": "acme", "cohort": ALL_COHORTS}
    assert registry.get_sample_value("museflow_calibration_ece", labels) == pytest.approx(performance.calibration.ece)
    assert registry.get_sample_value("museflow_calibration_trustworthy", labels) == 1.0
    assert registry.get_sample_value("museflow_labelled_base_rate", labels) == pytest.approx(y.mean())
    assert registry.get_sample_value("museflow_calibration_ece", {"tenant": "globex", "cohort": ALL_COHORTS}) is None
    assert registry.get_sample_value("museflow_labelled_base_rate", {"tenant": "globex", "cohort": ALL_COHORTS}) == 1.0
