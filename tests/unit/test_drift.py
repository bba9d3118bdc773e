"""PSI / Jensen-Shannon against reference-quantile bins, the sliding DriftWindow, alert rates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from museflow.observe.drift import DriftBins, DriftWindow, alert_rates, jensen_shannon, psi
from museflow.transform.reference import ReferenceDistribution

REF = ReferenceDistribution.beta("cnp", 1, 2.0, 30.0)


@pytest.fixture(scope="module")
def bins() -> DriftBins:
    return DriftBins.from_reference(REF)


def test_bins_have_equal_body_mass_and_tail_bins(bins: DriftBins) -> None:
    assert bins.size == 14
    np.testing.assert_allclose(bins.expected[:9], 0.1)
    np.testing.assert_allclose(bins.expected[9:], [0.05, 0.04, 0.005, 0.004, 0.001])
    assert bins.expected.sum() == pytest.approx(1.0)


def test_same_distribution_scores_near_zero(bins: DriftBins) -> None:
    sample = np.random.default_rng(1).beta(2.0, 30.0, 200_000)
    assert bins.psi(sample) < 0.005
    assert bins.jensen_shannon(sample) < 0.001


def test_shifted_distribution_scores_large(bins: DriftBins) -> None:
    shifted = np.random.default_rng(2).beta(2.0, 15.0, 200_000)
    assert bins.psi(shifted) > 0.25  # the usual "significant shift" line
    assert bins.jensen_shannon(shifted) > 0.05


def test_hand_computed_psi_and_js() -> None:
    a, e = [0.5, 0.5], [0.25, 0.75]
    expected_psi = 0.25 * math.log(2) + (-0.25) * math.log(0.5 / 0.75)
    assert psi(a, e, epsilon=0) == pytest.approx(expected_psi)
    assert jensen_shannon([1, 0], [0, 1], epsilon=0) == pytest.approx(1.0)
    assert jensen_shannon([3, 1], [3, 1]) == pytest.approx(0.0, abs=1e-12)
    assert math.isfinite(psi([10, 0], [5, 5]))  # an empty bin is floored, not infinite
    assert math.isnan(psi([0, 0], [1, 1]))
    with pytest.raises(ValueError, match="same bins"):
        psi([1, 2, 3], [1, 2])


def test_alert_rates_count_strictly_above() -> None:
    np.testing.assert_allclose(alert_rates([0.1, 0.5, 0.9, 0.99], [0.5, 0.95]), [0.5, 0.25])


def test_window_matches_one_shot_and_forgets(bins: DriftBins) -> None:
    rng = np.random.default_rng(3)
    window = DriftWindow(bins, watch_thresholds=REF.threshold_for([0.01, 0.05]).tolist(),
                         window_seconds=60.0, buckets=6)
    old = rng.beta(2.0, 15.0, 20_000)
    window.update(old, now=0.0)
    recent = rng.beta(2.0, 30.0, 100_000)
    for i in range(0, recent.size, 500):
        window.update(recent[i : i + 500], now=30.0 + i / 10_000)
    assert window.count == 120_000
    both = np.r_[old, recent]
    assert window.psi() == pytest.approx(bins.psi(both))
    window.advance(65.0)
    assert window.count == 100_000
    assert window.psi() == pytest.approx(bins.psi(recent))
    assert window.jensen_shannon() < 0.001
    rates = window.alert_rates()
    assert list(rates) == sorted(rates)
    for tau, rate in rates.items():
        assert rate == pytest.approx(float(np.mean(recent > tau)))
    assert list(rates.values()) == pytest.approx([0.05, 0.01], rel=0.1)


def test_empty_window_reports_nan(bins: DriftBins) -> None:
    window = DriftWindow(bins, watch_thresholds=[0.5])
    assert math.isnan(window.psi()) and math.isnan(window.alert_rates()[0.5])
