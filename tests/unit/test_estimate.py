"""Label-free estimates: CBPE against NannyML's golden values, calibration, the EM base rate, the recall gate."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from museflow.errors import RefitRefused, ValidationError
from museflow.model.scoring import posterior_correction
from museflow.observe.estimate import (
    EstimateWindow,
    Expected,
    TenantScores,
    check_calibration,
    combine_estimates,
    em_prior,
    expected_calibration_error,
    expected_confusion,
    gate_scores,
    prior_adjusted,
    recall_gate,
    reliability_curve,
    scores_by_tenant,
)
from museflow.observe.performance import confusion_at
from museflow.observe.window import BucketRing
from tests.bench_scripts import load_bench_script

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "unit" / "golden" / "cbpe_nannyml.json"


def golden_script() -> ModuleType:
    """bench/nannyml_golden.py, whose ``golden_data`` generated the data NannyML estimated on."""
    return load_bench_script("nannyml_golden")


def binormal(rng: np.random.Generator, n: int, fraud_rate: float, mu: float = 2.5,
             calibrated_for: float | None = None) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Exact posteriors of x ~ N(mu*y, 1) for the prior ``calibrated_for`` (default: the true rate), and labels."""
    prior = fraud_rate if calibrated_for is None else calibrated_for
    y = rng.random(n) < fraud_rate
    x = rng.standard_normal(n) + mu * y
    p = 1.0 / (1.0 + np.exp(-(math.log(prior / (1 - prior)) + mu * x - mu * mu / 2)))
    return p, y


# --- CBPE ----------------------------------------------------------------------------------------------------------


def test_cbpe_agrees_with_nannyml_within_0_01_on_the_same_seeded_data() -> None:
    golden: dict[str, Any] = json.loads(GOLDEN.read_text())
    data = golden_script().golden_data(**golden["parameters"]["data"])
    assert golden_script().data_sha256(data) == golden["data_sha256"], (
        "the seeded data changed (numpy streams?): run `python bench/nannyml_golden.py` to regenerate")
    checked = 0
    for run in golden["runs"]:
        if run["calibration"] != "none":
            continue
        tau = float(run["threshold"])
        for chunk in run["chunks"]:
            rows = slice(chunk["start_index"], chunk["end_index"] + 1)
            p, s, y = data["p"][rows], data["s"][rows], data["y"][rows]
            mine = expected_confusion(p, s, (tau,))[tau]
            assert abs(mine.precision - chunk["estimated_precision"]) <= 0.01, (tau, chunk["key"])
            assert abs(mine.recall - chunk["estimated_recall"]) <= 0.01, (tau, chunk["key"])
            assert abs(mine.f1 - chunk["estimated_f1"]) <= 0.01, (tau, chunk["key"])
            realised = confusion_at(s, y, tau)
            assert realised.precision == pytest.approx(chunk["realized_precision"], abs=1e-12)
            assert realised.recall == pytest.approx(chunk["realized_recall"], abs=1e-12)
            checked += 1
    assert checked >= 8


def test_the_streaming_window_gives_the_golden_values_too() -> None:
    golden: dict[str, Any] = json.loads(GOLDEN.read_text())
    data = golden_script().golden_data(**golden["parameters"]["data"])
    run = next(r for r in golden["runs"] if r["calibration"] == "none")
    tau, chunk = float(run["threshold"]), run["chunks"][-1]
    rows = slice(chunk["start_index"], chunk["end_index"] + 1)
    window = EstimateWindow((tau,), 4, 10.0, baseline=BucketRing(2, 10, 10.0))
    for k, (p, s) in enumerate(zip(np.array_split(data["p"][rows], 7), np.array_split(data["s"][rows], 7),
                                   strict=True)):
        window.add(p, s, now=k * 3.0)
    estimate = window.estimate(now=20.0)
    assert estimate.samples == chunk["end_index"] - chunk["start_index"] + 1
    assert estimate.expected[tau].precision == pytest.approx(chunk["estimated_precision"], abs=1e-9)
    assert estimate.expected[tau].recall == pytest.approx(chunk["estimated_recall"], abs=1e-9)


def test_expected_confusion_by_hand_strictly_above_and_nan_where_undefined() -> None:
    p = [0.9, 0.6, 0.2, 0.1]
    s = [0.99, 0.95, 0.95, 0.5]
    found = expected_confusion(p, s, (0.95, 0.999))
    e = found[0.95]  # only 0.99 is strictly above 0.95
    assert (e.tp, e.fp, e.fn, e.tn) == pytest.approx((0.9, 0.1, 0.9, 2.1))
    assert e.precision == pytest.approx(0.9) and e.recall == pytest.approx(0.5)
    assert e.f1 == pytest.approx(2 * 0.9 / (1.8 + 0.1 + 0.9)) and e.alert_rate == 0.25
    none = found[0.999]
    assert math.isnan(none.precision) and none.recall == 0.0 and none.alert_rate == 0.0
    empty = expected_confusion([], [], (0.5,))[0.5]
    assert all(math.isnan(v) for v in (empty.precision, empty.recall, empty.f1, empty.alert_rate))
    assert Expected(1, 2, 3, 4) + Expected(1, 1, 1, 1) == Expected(2, 3, 4, 5)


@pytest.mark.parametrize(("p", "s", "reason"), [
    ([0.1, float("nan")], [0.1, 0.2], "invalid-score"),
    ([0.1, 1.5], [0.1, 0.2], "invalid-score"),
    ([0.1, 0.2], [0.1], "label-mismatch"),
    ([0.1, 0.2], [0.1, float("nan")], "nan-score"),
])
def test_bad_inputs_say_what_is_wrong(p: list[float], s: list[float], reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        expected_confusion(p, s, (0.5,))
    assert info.value.reason == reason


def test_a_calibrated_model_is_estimated_within_sampling_noise() -> None:
    rng = np.random.default_rng(4)
    p, y = binormal(rng, 200_000, 0.01)
    for tau in (float(np.quantile(p, 0.95)), float(np.quantile(p, 0.99))):
        e, c = expected_confusion(p, p, (tau,))[tau], confusion_at(p, y, tau)
        assert abs(e.precision - c.precision) < 0.03 and abs(e.recall - c.recall) < 0.03


def test_the_window_slides_and_combines_routes_by_adding_expected_counts() -> None:
    window = EstimateWindow((0.5,), 3, 10.0, baseline=BucketRing(2, 10, 30.0))
    window.add([0.8, 0.2], [0.9, 0.1], now=0.0)
    window.add([0.6], [0.7], now=15.0)
    e = window.estimate(now=25.0).expected[0.5]
    assert (e.tp, e.fp, e.fn, e.tn) == pytest.approx((1.4, 0.6, 0.2, 0.8))
    later = window.estimate(now=35.0)  # the first bucket left the 30 s window
    assert later.samples == 1 and later.expected[0.5].tp == pytest.approx(0.6)
    other = EstimateWindow((0.5, 0.9), 3, 10.0, baseline=BucketRing(2, 10, 30.0))
    other.add([0.3], [0.95], now=30.0)
    both = combine_estimates([later, other.estimate(now=35.0)])
    assert both.samples == 2 and both.mean_probability == pytest.approx(0.45)
    assert both.expected[0.5].tp == pytest.approx(0.9) and both.expected[0.9].tp == pytest.approx(0.3)


# --- calibration ---------------------------------------------------------------------------------------------------


def test_reliability_curve_and_ece_by_hand() -> None:
    p = np.array([0.1] * 10 + [0.5] * 10)
    y = np.array([1] + [0] * 9 + [1] * 8 + [0] * 2)
    curve = reliability_curve(p, y, bins=2)
    assert [(b.count, b.mean_probability, b.fraud_rate) for b in curve] == [(10, 0.1, 0.1), (10, 0.5, 0.8)]
    assert expected_calibration_error(p, y, bins=2) == pytest.approx(0.15)
    uniform = reliability_curve(p, y, bins=10, strategy="uniform")
    assert [b.count for b in uniform] == [10, 10]  # empty bins are left out
    with pytest.raises(ValueError, match="strategy"):
        reliability_curve(p, y, strategy="kmeans")  # type: ignore[arg-type]


def test_calibrated_scores_are_trusted_a_prior_shift_is_not_and_few_frauds_stay_undecided() -> None:
    rng = np.random.default_rng(5)
    p, y = binormal(rng, 100_000, 0.01)
    calibrated = check_calibration(p, y)
    assert calibrated.trustworthy is True and calibrated.relative_ece < 0.2 and calibrated.positives > 300
    p, y = binormal(rng, 100_000, 0.02, calibrated_for=0.01)  # fraud doubled, p still for 1%
    shifted = check_calibration(p, y)
    assert shifted.trustworthy is False and shifted.relative_ece > 0.25
    p, y = binormal(rng, 5_000, 0.01)
    few = check_calibration(p, y)
    assert few.trustworthy is None and few.positives < 300 and not math.isnan(few.ece)


# --- base rate -----------------------------------------------------------------------------------------------------


def test_em_recovers_a_tripled_fraud_rate_that_the_mean_of_p_misses() -> None:
    rng = np.random.default_rng(6)
    p, _ = binormal(rng, 200_000, 0.03, calibrated_for=0.01)
    found = em_prior(p, baseline=0.01)
    assert found.converged and abs(found.prior / 0.03 - 1) < 0.05
    assert abs(found.mean / 0.03 - 1) > 0.3  # the mean of miscalibrated p is far off
    assert found.odds_ratio == pytest.approx((found.prior / (1 - found.prior)) / (0.01 / 0.99))
    adjusted = prior_adjusted(p, 0.01, found.prior)
    assert adjusted.mean() == pytest.approx(found.prior, rel=1e-5)  # the EM fixed point


def test_em_without_a_shift_stays_at_the_baseline() -> None:
    rng = np.random.default_rng(7)
    p, _ = binormal(rng, 100_000, 0.01)
    found = em_prior(p, baseline=0.01)
    assert abs(found.prior / 0.01 - 1) < 0.1 and abs(found.prior / found.mean - 1) < 0.05


def test_em_on_the_windows_histogram_matches_em_on_the_events() -> None:
    rng = np.random.default_rng(8)
    base, _ = binormal(rng, 100_000, 0.01)
    p, _ = binormal(rng, 100_000, 0.02, calibrated_for=0.01)
    baseline = BucketRing(2, 24, 60.0)
    window = EstimateWindow((0.5,), 6, 10.0, baseline=baseline)
    window.add(base, base, now=0.0)
    window.add(p, p, now=600.0)
    found = window.estimate(now=600.0, min_samples=100).prior
    assert found is not None and found.baseline == pytest.approx(base.mean())  # the window itself left out
    exact = em_prior(p, baseline=float(base.mean()))
    assert found.prior == pytest.approx(exact.prior, rel=0.01)


def test_a_prior_shift_is_the_posterior_correction_with_beta_times_the_odds_ratio() -> None:
    q = np.linspace(0.0, 0.99, 100)
    beta, before, after = 0.1, 0.01, 0.025
    w = (after / (1 - after)) / (before / (1 - before))
    assert np.allclose(prior_adjusted(posterior_correction(q, beta), before, after), posterior_correction(q, beta * w))


# --- gate ----------------------------------------------------------------------------------------------------------


def rows_of(tenant: str, model: tuple[str, str], ids: list[str], p: npt.NDArray[np.float64],
            s: npt.NDArray[np.float64]) -> list[dict[str, Any]]:
    return [{"event_id": i, "tenant": tenant, "model": model[0], "model_version": model[1],
             "corrected_score": float(a), "score": float(b)} for i, a, b in zip(ids, p, s, strict=True)]


def ecdf_map(p: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = np.searchsorted(np.sort(p), p, side="right") / p.size
    return out


def test_the_gate_refuses_a_worse_candidate_and_passes_an_equal_one_on_shadow_rows() -> None:
    rng = np.random.default_rng(9)
    n = 60_000
    y = rng.random(n) < 0.02
    noise = rng.standard_normal(n)
    prior_logit = math.log(0.02 / 0.98)
    models = {("fraud", "1"): 2.5, ("fraud", "2"): 2.5, ("fraud", "3"): 1.8}
    rows: list[dict[str, Any]] = []
    ids = [f"e{i}" for i in range(n)]
    for key, mu in models.items():
        own = noise if key == ("fraud", "1") else 0.6 * noise + 0.8 * rng.standard_normal(n)
        x = mu * y + own
        p = 1 / (1 + np.exp(-(prior_logit + mu * x - mu * mu / 2)))
        rows.extend(rows_of("acme", key, ids, p, ecdf_map(p)))
    rows.extend(rows_of("acme", ("other", "9"), ["x"], np.array([0.5]), np.array([0.5])))
    thresholds = {"acme": (0.95, 0.99)}

    champion, good = scores_by_tenant(rows, ("fraud", "1"), ("fraud", "2"))
    assert len(champion["acme"]) == len(good["acme"]) == n and champion["acme"].event_ids == good["acme"].event_ids
    passed = gate_scores(champion, good, thresholds)
    assert passed.passed, passed.table()
    assert all(v.reason == "ok" and 0 < v.standard_error < 0.03 for v in passed.verdicts)
    passed.raise_if_refused()

    champion, bad = scores_by_tenant(rows, ("fraud", "1"), ("fraud", "3"))
    refused = gate_scores(champion, bad, thresholds)
    assert not refused.passed and {v.reason for v in refused.refused} == {"recall-drop"}
    with pytest.raises(RefitRefused, match=r"acme > 0\.95: recall-drop"):
        refused.raise_if_refused()


def test_a_canary_is_compared_on_its_own_events_and_missing_or_thin_data_is_refused() -> None:
    rows = [{"event_id": f"a{i}", "tenant": "acme", "model": "m", "model_version": "1", "corrected_score": 0.5,
             "score": 0.5 + i / 1000} for i in range(200)]
    rows += [{"event_id": f"b{i}", "tenant": "acme", "model": "m", "model_version": "2", "corrected_score": 0.5,
              "score": 0.5 + i / 750} for i in range(150)]
    champion, candidate = scores_by_tenant(rows, ("m", "1"), ("m", "2"))
    assert len(champion["acme"]) == 200 and len(candidate["acme"]) == 150
    report = gate_scores(champion, candidate, {"acme": (0.6,), "globex": (0.9,)}, min_expected_frauds=50, margin=0.1)
    assert {(v.tenant, v.reason) for v in report.verdicts} == {("acme", "ok"), ("globex", "missing-candidate")}
    assert report.verdicts[0].delta == pytest.approx(74 / 150 - 99 / 200)
    noisy = gate_scores(champion, candidate, {"acme": (0.6,)}, min_expected_frauds=50)
    assert noisy.verdicts[0].reason == "insufficient-data" and noisy.verdicts[0].standard_error > 0.03
    thin = gate_scores(champion, candidate, {"acme": (0.6,)}, min_expected_frauds=100, margin=0.1)
    assert thin.verdicts[0].reason == "insufficient-data"


def test_recall_gate_on_estimates_with_the_margin_and_a_noisy_comparison() -> None:
    champion = {("acme", 0.9): Expected(60, 40, 40, 860), ("acme", 0.99): Expected(30, 5, 70, 895)}
    candidate = {("acme", 0.9): Expected(58, 42, 42, 858), ("acme", 0.99): Expected(25, 10, 75, 890)}
    report = recall_gate(champion, candidate, margin=0.03)
    assert [(v.threshold, v.passed, v.reason) for v in report.verdicts] == [
        (0.9, True, "ok"), (0.99, False, "recall-drop")]
    assert report.verdicts[1].delta == pytest.approx(-0.05)
    noisy = recall_gate(champion, candidate, margin=0.03, standard_errors={("acme", 0.9): 0.05})
    assert noisy.verdicts[0].reason == "insufficient-data"
    assert not recall_gate({}, {}).passed


def test_tenant_scores_keep_the_rows_alignment() -> None:
    scores = TenantScores(np.array([0.1, 0.2]), np.array([0.3, 0.4]), ("a", "b"))
    assert len(scores) == 2
