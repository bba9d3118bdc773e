"""WindowedSketch: tail accuracy within REQ's own bound, window rotation, vectorized queries, state size."""

from __future__ import annotations

import numpy as np
import pytest

from museflow.transform.sketch import WindowedSketch

TAIL_QS = np.array([0.95, 0.99, 0.995, 0.999])


@pytest.fixture(scope="module")
def fraud_scores() -> np.ndarray:
    return np.random.default_rng(7).beta(0.6, 12.0, size=200_000)


def _feed(sketch: WindowedSketch, data: np.ndarray, start: float, seconds: float, batch: int = 500) -> None:
    batches = max(1, data.size // batch)
    for i in range(batches):
        sketch.update(data[i * batch : (i + 1) * batch], now=start + seconds * i / batches)


def test_tail_rank_error_within_the_sketch_bound(fraud_scores: np.ndarray) -> None:
    sketch = WindowedSketch(window_seconds=1200.0, buckets=12)
    _feed(sketch, fraud_scores, 0.0, 1199.0)
    assert sketch.count == fraud_scores.size
    ordered = np.sort(fraud_scores)
    estimates = sketch.quantile(TAIL_QS)
    true_rank = np.searchsorted(ordered, estimates, side="right") / ordered.size
    relative = np.abs(true_rank - TAIL_QS) / (1 - TAIL_QS)
    bounds = np.array([sketch.relative_rank_error(q, 3) for q in TAIL_QS])
    assert np.all(bounds < 0.05)  # REQ k=12: ~3.3% of the tail mass at 3 standard deviations
    assert np.all(relative <= bounds), (relative, bounds)
    exact_quantiles = np.quantile(fraud_scores, TAIL_QS)
    cdf_error = np.abs(sketch.cdf(exact_quantiles) - TAIL_QS) / (1 - TAIL_QS)
    assert np.all(cdf_error <= bounds), (cdf_error, bounds)


def test_count_above_tracks_the_tail(fraud_scores: np.ndarray) -> None:
    sketch = WindowedSketch()
    _feed(sketch, fraud_scores, 0.0, 10.0)
    for q in TAIL_QS:
        x = float(np.quantile(fraud_scores, q))
        exact = np.count_nonzero(fraud_scores > x)
        assert sketch.count_above(x) == pytest.approx(exact, rel=0.05)


def test_min_and_max_are_exact(fraud_scores: np.ndarray) -> None:
    sketch = WindowedSketch()
    _feed(sketch, fraud_scores, 0.0, 10.0)
    assert sketch.min == pytest.approx(fraud_scores.min(), rel=1e-6)
    assert sketch.max == pytest.approx(fraud_scores.max(), rel=1e-6)


def test_window_rotation_forgets_old_buckets() -> None:
    sketch = WindowedSketch(window_seconds=60.0, buckets=6)
    sketch.update(np.zeros(1000), now=0.0)
    sketch.update(np.ones(500), now=30.0)
    assert sketch.count == 1500
    sketch.advance(65.0)
    assert sketch.count == 500
    assert sketch.quantile(0.5) == pytest.approx(1.0)
    sketch.update(np.full(10, 0.5), now=200.0)
    assert sketch.count == 10
    sketch.update(np.full(10, 0.5), now=10.0)
    assert sketch.count == 10 and sketch.late == 10


def test_out_of_order_batch_within_window_is_kept() -> None:
    sketch = WindowedSketch(window_seconds=60.0, buckets=6)
    sketch.update(np.ones(10), now=50.0)
    sketch.update(np.zeros(10), now=20.0)
    assert sketch.count == 20


def test_cdf_is_vectorized_in_any_order() -> None:
    sketch = WindowedSketch()
    sketch.update(np.linspace(0, 1, 1001), now=0.0)
    xs = np.array([[0.9, 0.1], [0.5, 0.1]])
    got = sketch.cdf(xs)
    assert got.shape == xs.shape
    np.testing.assert_allclose(got, [[0.9, 0.1], [0.5, 0.1]], atol=1e-2)


def test_non_finite_values_are_rejected_and_counted() -> None:
    sketch = WindowedSketch()
    sketch.update(np.array([0.1, np.nan, np.inf, 0.2]), now=0.0)
    assert sketch.count == 2 and sketch.rejected == 2


def test_empty_sketch_answers_nan() -> None:
    sketch = WindowedSketch()
    assert sketch.count == 0
    assert np.isnan(sketch.quantile(0.5))
    assert np.all(np.isnan(sketch.cdf([0.1, 0.2])))
    assert sketch.count_above(0.5) == 0.0


def test_serialized_state_stays_small(fraud_scores: np.ndarray) -> None:
    sketch = WindowedSketch(window_seconds=120.0, buckets=4)
    _feed(sketch, fraud_scores[:50_000], 0.0, 100.0)
    data = sketch.to_bytes()
    assert isinstance(data, bytes) and len(data) < 200_000
    assert sketch.to_bytes() == data


def test_merge_combines_partitions() -> None:
    rng = np.random.default_rng(1)
    a, b = WindowedSketch(), WindowedSketch()
    a.update(rng.random(1000), now=5.0)
    b.update(rng.random(3000), now=6.0)
    a.merge([b])
    assert a.count == 4000
    with pytest.raises(ValueError, match="same settings"):
        a.merge([WindowedSketch(k=24)])


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        WindowedSketch(k=3)
    with pytest.raises(ValueError):
        WindowedSketch(window_seconds=0)
    with pytest.raises(ValueError):
        WindowedSketch().quantile(1.5)
