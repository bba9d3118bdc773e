"""QuantileMap and MapStore: monotone (so rankings survive), tail alert rates match the reference, fallback."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from museflow.errors import MapError
from museflow.observe.performance import auc, recall_at_alert_rate
from museflow.transform.qmap import MapStore, QuantileMap
from museflow.transform.reference import ReferenceDistribution
from museflow.transform.refit import fit_map
from museflow.transform.sketch import WindowedSketch

RATES = (0.05, 0.01, 0.005, 0.001)
# Relative tolerance on the alert rate after fitting on 1e6 scores and measuring on 2e6 fresh ones:
# sampling noise alone is ~1.4% at 0.5% and ~3% at 0.1%; sketch + interpolation add ~2%.
TOLERANCE = {0.05: 0.10, 0.01: 0.10, 0.005: 0.10, 0.001: 0.20}


def _map(xs: list[float] | np.ndarray, ys: list[float] | np.ndarray, version: int = 1,
         tenant: str | None = "acme", intent: str = "cnp") -> QuantileMap:
    return QuantileMap(model="xgb-cnp", model_version="7", tenant=tenant, intent=intent, version=version,
                       reference_name="ref", reference_version=1, knots_x=xs, knots_y=ys)


knots = st.integers(2, 40).flatmap(
    lambda n: st.tuples(
        hnp.arrays(np.float64, n, elements=st.floats(-10, 10, allow_subnormal=False), unique=True),
        hnp.arrays(np.float64, n, elements=st.floats(-10, 10, allow_subnormal=False)),
    )
)


@given(knots, hnp.arrays(np.float64, st.integers(1, 200), elements=st.floats(-20, 20)))
def test_map_is_monotone(knot_arrays: tuple[np.ndarray, np.ndarray], p: np.ndarray) -> None:
    qmap = _map(np.sort(knot_arrays[0]), np.sort(knot_arrays[1]))
    out = qmap.apply(np.sort(p))
    # np.interp rounds y0 + slope * (x - x0); across a knot that can overshoot by an ulp of the y scale
    ulps = 4 * np.spacing(np.max(np.abs(qmap.knots_y)))
    assert np.all(np.diff(out) >= -ulps)
    assert np.all((out >= qmap.knots_y[0]) & (out <= qmap.knots_y[-1]))


@given(knots)
def test_non_monotone_knots_are_refused(knot_arrays: tuple[np.ndarray, np.ndarray]) -> None:
    xs, ys = np.sort(knot_arrays[0]), knot_arrays[1]
    if np.all(np.diff(ys) >= 0):
        ys = ys[::-1].copy() if ys[0] != ys[-1] else np.r_[ys[:-1], ys[-1] - 1.0]
    with pytest.raises(MapError, match="must not fall"):
        _map(xs, ys)


def test_unsorted_x_knots_are_refused_with_where() -> None:
    with pytest.raises(MapError, match=r"xgb-cnp/7 tenant=acme .*knots_x must rise"):
        _map([0.0, 0.5, 0.5, 1.0], [0.0, 0.2, 0.3, 1.0])


def test_identity_is_version_zero_and_identity_on_probabilities() -> None:
    ident = QuantileMap.identity("xgb-cnp", "7", "acme", "cnp")
    p = np.random.default_rng(0).random(500)
    np.testing.assert_array_equal(ident.apply(p), p)
    assert ident.version == 0 and ident.is_identity


def test_record_round_trip_and_fields() -> None:
    qmap = _map([0.0, 0.1, 1.0], [0.0, 0.5, 1.0], tenant=None)
    record = qmap.to_record()
    assert set(record) == {
        "model", "model_version", "tenant", "intent", "version", "reference_name", "reference_version",
        "sample_count", "tail_sample_count", "window_start_ms", "window_end_ms", "created_at_ms", "source", "evidence",
        "knots_x", "knots_y",
    }
    assert record["tenant"] is None
    assert QuantileMap.from_record(record) == qmap
    with pytest.raises(MapError, match="knots_y"):
        QuantileMap.from_record({k: v for k, v in record.items() if k != "knots_y"})


@pytest.fixture(scope="module")
def swap_setup() -> tuple[QuantileMap, ReferenceDistribution, np.random.Generator]:
    rng = np.random.default_rng(11)
    reference = ReferenceDistribution.from_samples("acme-incumbent", 1, rng.lognormal(-4.0, 1.2, 400_000))
    sketch = WindowedSketch(window_seconds=3600.0)
    raw = rng.beta(0.4, 6.0, size=1_000_000)
    for i in range(0, raw.size, 500):
        sketch.update(raw[i : i + 500], now=1.0 + i / 1000)
    qmap = fit_map(sketch, reference, model="xgb-cnp", model_version="8", tenant="acme", intent="cnp",
                   version=1)
    return qmap, reference, rng


def test_alert_rate_matches_the_reference_in_the_upper_tail(
    swap_setup: tuple[QuantileMap, ReferenceDistribution, np.random.Generator],
) -> None:
    qmap, reference, rng = swap_setup
    fresh = rng.beta(0.4, 6.0, size=2_000_000)
    mapped = qmap.apply(fresh)
    for rate in RATES:
        tau = float(reference.threshold_for(rate))
        observed = float(np.mean(mapped > tau))
        assert float(reference.alert_rate(tau)) == pytest.approx(rate, rel=1e-6)
        assert observed == pytest.approx(rate, rel=TOLERANCE[rate]), (rate, observed)
        raw_rate = float(np.mean(fresh > tau))
        assert abs(raw_rate / rate - 1) > 0.5  # without the map the thresholds would mean something else


def test_fitted_map_keeps_ranking_auc_and_recall(
    swap_setup: tuple[QuantileMap, ReferenceDistribution, np.random.Generator],
) -> None:
    qmap, _, rng = swap_setup
    scores = rng.beta(0.4, 6.0, size=20_000)
    labels = rng.random(scores.size) < scores  # fraud more likely at high scores
    mapped = qmap.apply(scores)
    inside = (scores > qmap.knots_x[0]) & (scores < qmap.knots_x[-1])
    assert np.array_equal(np.argsort(scores[inside], kind="stable"), np.argsort(mapped[inside], kind="stable"))
    assert auc(mapped[inside], labels[inside]) == pytest.approx(auc(scores[inside], labels[inside]), abs=1e-12)
    for rate in RATES:
        assert recall_at_alert_rate(mapped, labels, rate) == recall_at_alert_rate(scores, labels, rate)


@settings(max_examples=50)
@given(hnp.arrays(np.float64, st.integers(20, 300), elements=st.integers(0, 10**6).map(lambda i: i / 10**6)),
       st.integers(0, 2**32 - 1))
def test_auc_is_invariant_under_a_strictly_monotone_map(scores: np.ndarray, seed: int) -> None:
    """Scores on a 1e-6 grid: a map compressing by <1 may tie inputs one ulp apart, never these."""
    labels = np.random.default_rng(seed).random(scores.size) < 0.3
    qmap = _map([0.0, 0.001, 0.01, 0.1, 1.0], [0.0, 0.3, 0.5, 0.9, 1.0])
    assert np.all(np.diff(qmap.knots_y) > 0)  # no flat segment: distinct inputs keep distinct outputs
    before, after = auc(scores, labels), auc(qmap.apply(scores), labels)
    assert (np.isnan(before) and np.isnan(after)) or after == pytest.approx(before, abs=1e-12)


def test_store_resolves_tenant_then_pooled_then_identity() -> None:
    store = MapStore()
    ident = store.resolve("xgb-cnp", "7", "acme", "cnp")
    assert ident.is_identity and ident.tenant == "acme"
    pooled = _map([0.0, 1.0], [0.0, 0.5], tenant=None)
    assert store.put(pooled)
    assert store.resolve("xgb-cnp", "7", "acme", "cnp") is pooled
    assert store.resolve("xgb-cnp", "7", "acme", "ato").is_identity
    own = _map([0.0, 1.0], [0.0, 0.8], tenant="acme")
    assert store.put(own)
    assert store.resolve("xgb-cnp", "7", "acme", "cnp") is own
    assert store.resolve("xgb-cnp", "7", "globex", "cnp") is pooled
    assert store.resolve("xgb-cnp", "8", "acme", "cnp").is_identity
    assert len(store) == 2


def test_store_ignores_replays_and_older_versions() -> None:
    store = MapStore()
    v2 = _map([0.0, 1.0], [0.0, 0.2], version=2)
    assert store.put(v2)
    assert not store.put(_map([0.0, 1.0], [0.0, 0.2], version=2))
    assert not store.put(_map([0.0, 1.0], [0.0, 0.1], version=1))
    assert store.get("xgb-cnp", "7", "acme") is v2
    assert store.put(_map([0.0, 1.0], [0.0, 0.3], version=3))
    assert store.forget("xgb-cnp", "7") == 1
    assert store.get("xgb-cnp", "7", "acme") is None
