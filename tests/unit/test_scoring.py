"""Batch scoring: posterior correction by hand, equality with XGBoost's own predict, one call per batch."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from museflow.demo.loadgen import TransactionGenerator
from museflow.errors import SpecError
from museflow.model.features import FeatureBuilder
from museflow.model.registry import load_model
from museflow.model.scoring import LoadedModel, posterior_correction
from museflow.model.spec import ModelSpec, spec_from_mapping

FEATURES: list[dict[str, Any]] = [
    {"name": "log_amount", "source": "amount", "type": "float", "default": 0.0, "transform": "log1p"},
    {"name": "velocity_1h", "source": "attributes.velocity_1h", "type": "int", "default": 0},
    {"name": "distance_km", "source": "attributes.distance_km", "type": "float", "default": None},
    {"name": "channel", "source": "channel", "type": "category", "default": None,
     "transform": {"one_hot": ["web", "app", "phone"]}},
]


def make_spec(beta: float, sha: str = "0" * 64) -> ModelSpec:
    return spec_from_mapping({
        "name": "tiny", "version": "1", "owners": ["tests"], "intents": ["card-not-present"],
        "framework": "xgboost", "artifact": {"uri": "tiny.ubj", "format": "ubj", "sha256": sha},
        "features": FEATURES, "training": {"negative_sampling_rate": beta},
    })


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return [g.event for g in TransactionGenerator(seed=11, start_ms=0).generate(400)]


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    generated = TransactionGenerator(seed=4, start_ms=0).generate(3000)
    draft = make_spec(0.2)
    x = FeatureBuilder(draft).build([g.event for g in generated]).values
    y = np.array([g.is_fraud for g in generated], dtype=np.float32)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1, "seed": 1},
                        xgb.DMatrix(x, label=y), 6)
    data = bytes(booster.save_raw(raw_format="ubj"))
    return load_model(make_spec(0.2, hashlib.sha256(data).hexdigest()), data, "tiny.ubj")


@pytest.mark.parametrize(
    ("s", "beta", "expected"),
    [
        (0.5, 0.1, 0.05 / 0.55),
        (0.9, 0.5, 0.45 / 0.55),
        (0.2, 0.25, 0.05 / 0.85),
        (0.3, 1.0, 0.3),
        (0.0, 0.1, 0.0),
        (1.0, 0.1, 1.0),
    ],
)
def test_posterior_correction_hand_values(s: float, beta: float, expected: float) -> None:
    assert posterior_correction(s, beta) == pytest.approx(expected, rel=1e-12)
    assert posterior_correction(np.array([s]), beta)[0] == pytest.approx(expected, rel=1e-12)


def test_posterior_correction_is_monotone_and_lowers_scores() -> None:
    s = np.linspace(0.0, 1.0, 101)
    p = posterior_correction(s, 0.1)
    assert np.all(np.diff(p) > 0) and np.all(p <= s)
    np.testing.assert_array_equal(posterior_correction(s, 1.0), s)


@pytest.mark.parametrize("beta", [0.0, -0.5, 1.5, math.nan])
def test_posterior_correction_refuses_a_beta_outside_0_1(beta: float) -> None:
    with pytest.raises(SpecError, match="negative_sampling_rate beta must be in"):
        posterior_correction(0.5, beta)


def test_scores_equal_xgboosts_own_predict_on_the_same_rows(model: LoadedModel, events: list[dict[str, Any]]) -> None:
    batch = model.score(events)
    x = np.array(
        [
            [
                math.log1p(e["amount"]),
                e["attributes"].get("velocity_1h", 0),
                e["attributes"].get("distance_km", math.nan),
                e["channel"] == "web",
                e["channel"] == "app",
                e["channel"] == "phone",
            ]
            for e in events
        ],
        dtype=np.float32,
    )
    expected = model.booster.predict(xgb.DMatrix(x, missing=math.nan))
    np.testing.assert_allclose(batch.raw, expected, rtol=1e-6)
    np.testing.assert_allclose(batch.probability, 0.2 * expected / (0.2 * expected - expected + 1.0), rtol=1e-6)
    assert len(batch) == len(events) and batch.model == "tiny" and batch.version == "1"
    assert batch.raw.dtype == np.float64 and batch.probability.dtype == np.float64
    assert batch.defaults_by_feature()["distance_km"] == sum("distance_km" not in e["attributes"] for e in events)


class CountingBooster:
    """Wraps a booster and counts inplace_predict calls."""

    def __init__(self, booster: xgb.Booster) -> None:
        self.booster = booster
        self.calls: list[int] = []

    def inplace_predict(self, data: Any, **kwargs: Any) -> Any:
        self.calls.append(len(data))
        return self.booster.inplace_predict(data, **kwargs)


def test_exactly_one_batched_predict_per_batch(model: LoadedModel, events: list[dict[str, Any]]) -> None:
    counting = CountingBooster(model.booster)
    spy = LoadedModel(spec=model.spec, booster=counting, artifact_sha256=model.artifact_sha256)  # type: ignore[arg-type]
    spy.score(events)
    spy.score(events[:1])
    empty = spy.score([])
    assert counting.calls == [len(events), 1]
    assert len(empty) == 0 and empty.probability.shape == (0,)


def test_score_handles_events_with_missing_fields(model: LoadedModel) -> None:
    batch = model.score([{}, {"amount": 10.0, "attributes": {}}])
    assert np.all(np.isfinite(batch.probability)) and batch.probability.shape == (2,)
    assert batch.defaults_by_feature() == {"log_amount": 1, "velocity_1h": 2, "distance_km": 2, "channel": 2}


def test_a_score_does_not_depend_on_the_batch_it_arrives_in(model: LoadedModel, events: list[dict[str, Any]]) -> None:
    whole = model.score(events[:60])
    singles = np.concatenate([model.score([e]).probability for e in events[:60]])
    halves = np.concatenate([model.score(events[:25]).probability, model.score(events[25:60]).probability])
    np.testing.assert_array_equal(whole.probability, singles)
    np.testing.assert_array_equal(whole.probability, halves)
