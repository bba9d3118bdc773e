"""ReferenceDistribution: Q_ref/F_ref consistency, frozen and parametric builds, records, validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from museflow.errors import MapError
from museflow.transform.reference import ReferenceDistribution, probability_grid


def test_grid_is_dense_in_the_upper_tail() -> None:
    grid = probability_grid()
    assert grid[0] == 0.0 and grid[-1] == 1.0 and np.all(np.diff(grid) > 0)
    tail = 1 - grid[(grid >= 0.9 - 1e-12) & (grid < 1)]
    for hi, lo in [(1e-1, 1e-2), (1e-2, 1e-3), (1e-3, 1e-4)]:
        assert np.count_nonzero((tail <= hi * 1.0001) & (tail >= lo * 0.9999)) >= 11
    assert tail.min() == pytest.approx(1e-4)


def test_uniform_is_percentile_scores() -> None:
    ref = ReferenceDistribution.uniform()
    u = np.array([0.0, 0.25, 0.99, 1.0])
    np.testing.assert_allclose(ref.quantile(u), u)
    np.testing.assert_allclose(ref.cdf(u), u)
    np.testing.assert_allclose(ref.threshold_for([0.05, 0.001]), [0.95, 0.999])
    np.testing.assert_allclose(ref.alert_rate([0.95]), [0.05])


def test_beta_matches_scipy_in_the_tail() -> None:
    from scipy import stats

    ref = ReferenceDistribution.beta("cnp-default", 3, 2.0, 30.0)
    for rate in (0.05, 0.01, 0.005, 0.001):
        tau = float(ref.threshold_for(rate))
        assert stats.beta(2.0, 30.0).sf(tau) == pytest.approx(rate, rel=0.02)
    assert ref.kind == "beta" and ref.params == {"a": 2.0, "b": 30.0}


def test_frozen_from_samples_matches_the_empirical_tail() -> None:
    data = np.random.default_rng(3).lognormal(-3.0, 1.0, size=200_000)
    ref = ReferenceDistribution.from_samples("acme-incumbent", 1, data)
    for rate in (0.05, 0.01, 0.005, 0.001):
        tau = float(ref.threshold_for(rate))
        assert np.mean(data > tau) == pytest.approx(rate, rel=0.03)


def test_frozen_reference_with_an_atom_keeps_a_right_continuous_cdf() -> None:
    data = np.r_[np.zeros(5000), np.random.default_rng(4).random(5000)]
    ref = ReferenceDistribution.from_samples("atom", 1, data)
    assert float(ref.cdf(0.0)) == pytest.approx(0.5, abs=0.03)
    assert float(ref.quantile(0.2)) == pytest.approx(0.0, abs=1e-9)


@given(st.lists(st.floats(0, 1), min_size=1, max_size=50))
def test_quantile_inverts_cdf(us: list[float]) -> None:
    ref = ReferenceDistribution.beta("b", 1, 2.0, 5.0)
    u = np.array(us)
    np.testing.assert_allclose(ref.cdf(ref.quantile(u)), u, atol=1e-9)


def test_record_round_trip() -> None:
    ref = ReferenceDistribution.from_samples("acme", 2, np.random.default_rng(5).random(1000))
    record = ref.to_record()
    assert set(record) == {"name", "version", "kind", "params", "knots_u", "knots_x"}
    assert ReferenceDistribution.from_record(record) == ref


@pytest.mark.parametrize(
    ("us", "xs", "match"),
    [
        ([0.0, 0.5], [0.0, 1.0], "from 0 to 1"),
        ([0.0, 0.5, 1.0], [0.0, 1.0, 1.0], "x knots must rise"),
        ([0.0, 1.0], [0.0], "knots"),
        ([0.0, 1.0], [0.0, float("nan")], "finite"),
    ],
)
def test_invalid_knots_raise_map_error(us: list[float], xs: list[float], match: str) -> None:
    with pytest.raises(MapError, match=match):
        ReferenceDistribution("bad", 1, us, xs)


def test_missing_record_field_names_it() -> None:
    with pytest.raises(MapError, match="knots_x"):
        ReferenceDistribution.from_record({"name": "r", "version": 1, "knots_u": [0, 1]})
