"""The alert-rate contract against known truths: samples needed, credibility blending, the judge, the watch."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from museflow.control.contract import (
    AlertRateWatch,
    Contract,
    Credibility,
    _cusum,
    _cut,
    blend_map,
    credibility,
    judge,
)
from museflow.transform.qmap import QuantileMap
from museflow.transform.reference import ReferenceDistribution
from museflow.transform.refit import ExactSample, fit_map

UNIFORM = ReferenceDistribution.uniform("pct", 1)
CONTRACT = Contract()
A, B = 2.0, 30.0  # scores ~ Beta(2, 30): a fraud-like right tail
Population = tuple[list[tuple[float, float, int]], dict[str, ExactSample], ExactSample]


def _fit_sample(sample: ExactSample) -> QuantileMap:
    return fit_map(sample, UNIFORM, model="xgb", model_version="2", tenant="acme", intent="cnp", version=1)


def _blend(sample: ExactSample | None, cred: Credibility,
           reference: ReferenceDistribution = UNIFORM) -> QuantileMap:
    return blend_map(sample, cred, reference, model="xgb", model_version="2", tenant="acme", intent="cnp", version=1)


def _rate(qmap: QuantileMap, threshold: float, a: float = A, b: float = B) -> float:
    """Exact alert rate of ``qmap`` at ``threshold`` on Beta(a, b) scores."""
    return float(stats.beta.sf(_cut(qmap, threshold), a, b))


def _shifted(qmap: QuantileMap, factor: float) -> QuantileMap:
    """``qmap`` re-aimed (uniform reference) to alert ``factor`` times as often at every threshold."""
    ys = 1.0 - np.clip((1.0 - qmap.knots_y) / factor, 0.0, 1.0)
    return QuantileMap(model=qmap.model, model_version=qmap.model_version, tenant=qmap.tenant, intent=qmap.intent,
                       version=2, reference_name=qmap.reference_name, reference_version=qmap.reference_version,
                       knots_x=qmap.knots_x, knots_y=ys, sample_count=qmap.sample_count)


def _coverage(rate: float, n: int, repeats: int, rng: np.random.Generator) -> float:
    """Share of maps fitted on ``n`` scores whose alert rate at ``rate`` lands within the tolerance."""
    rates = [_rate(_fit_sample(ExactSample(rng.beta(A, B, n))), 1 - rate) for _ in range(repeats)]
    return float(np.mean(np.abs(np.array(rates) / rate - 1) <= CONTRACT.tolerance))


@pytest.mark.parametrize("rate, needed", [(0.05, 7_299), (0.01, 38_031), (0.005, 76_446), (0.001, 383_762)])
def test_samples_needed_is_the_closed_form(rate: float, needed: int) -> None:
    z = stats.norm.ppf(0.975)
    assert CONTRACT.samples_needed(rate) == needed == math.ceil(z ** 2 * (1 - rate) / (rate * 0.1 ** 2))
    loose = Contract(tolerance=0.2, confidence=0.9)
    assert loose.samples_needed(rate) == math.ceil(stats.norm.ppf(0.95) ** 2 * (1 - rate) / (rate * 0.04))
    with pytest.raises(ValueError):
        CONTRACT.samples_needed(0.0)


@pytest.mark.parametrize("rate", [0.05, 0.01])
def test_a_map_on_samples_needed_scores_keeps_its_rate_with_the_stated_confidence(rate: float) -> None:
    rng = np.random.default_rng(11)
    needed = CONTRACT.samples_needed(rate)
    full = _coverage(rate, needed, 400, rng)
    quarter = _coverage(rate, needed // 4, 400, rng)
    print(f"\n{rate:.0%}: within ±10% on {needed:,} scores {full:.1%}, on {needed // 4:,} {quarter:.1%}")
    assert abs(full - CONTRACT.confidence) <= 0.035
    assert quarter < 0.80  # theory: P(|Z| <= 0.98) = 67%


@pytest.fixture(scope="module")
def population() -> Population:
    """8 big tenants (200,000 scores) and 30 small ones (1,500), Beta scores whose tails differ by tenant."""
    rng = np.random.default_rng(7)
    tenants = [(A * math.exp(rng.normal(0, 0.04)), B * math.exp(rng.normal(0, 0.04)), 200_000) for _ in range(8)]
    tenants += [(A * math.exp(rng.normal(0, 0.04)), B * math.exp(rng.normal(0, 0.04)), 1_500) for _ in range(30)]
    data = [rng.beta(a, b, n) for a, b, n in tenants]
    samples = {f"t{i}": ExactSample(d) for i, d in enumerate(data)}
    return tenants, samples, ExactSample(np.concatenate(data))


def test_a_blended_map_lands_on_the_tenants_own_reference_and_is_monotone(population: Population) -> None:
    _, samples, pooled = population
    own_reference = ReferenceDistribution.beta("acme-frozen", 3, 0.7, 12.0)
    qmap = _blend(samples["t20"], credibility(samples, pooled), own_reference)
    assert (qmap.reference_name, qmap.reference_version) == ("acme-frozen", 3)
    assert own_reference.low <= qmap.knots_y.min() and qmap.knots_y.max() <= own_reference.high
    assert np.all(np.diff(qmap.knots_x) > 0) and np.all(np.diff(qmap.knots_y) >= 0)
    mapped = qmap.apply(np.sort(np.random.default_rng(1).beta(A, B, 10_000)))
    assert np.all(np.diff(mapped) >= 0)
    assert qmap.sample_count == samples["t20"].count and qmap.source == "blended"


def test_a_blend_that_trusts_the_tenant_is_its_own_map(population: Population) -> None:
    _, samples, pooled = population
    estimated = credibility(samples, pooled)
    huge = Credibility(estimated.xs, estimated.pooled_share, estimated.within, np.full_like(estimated.xs, 1e6),
                       estimated.pooled_count, estimated.tenants)
    small = samples["t20"]
    grid = np.linspace(0.0, 0.5, 20_001)
    assert np.allclose(_blend(small, huge).apply(grid), _fit_sample(small).apply(grid), atol=1e-9)
    big = samples["t0"]  # 200,000 scores: the estimated weight is ~1 where the thresholds are
    own_big, blended_big = _fit_sample(big), _blend(big, estimated)
    for rate in (0.05, 0.01, 0.005):
        assert _cut(blended_big, 1 - rate) == pytest.approx(_cut(own_big, 1 - rate), rel=2e-3)


def test_a_tenant_without_scores_gets_the_pooled_cdf_on_its_own_reference(population: Population) -> None:
    _, samples, pooled = population
    cred = credibility(samples, pooled)
    own_reference = ReferenceDistribution.beta("acme-frozen", 3, 0.7, 12.0)
    qmap = _blend(None, cred, own_reference)
    inner = cred.xs[1:-1]
    assert np.allclose(qmap.apply(inner), own_reference.quantile(pooled.cdf(inner)), atol=1e-12)
    assert qmap.sample_count == 0 and qmap.reference_name == "acme-frozen"


def test_blending_beats_both_the_tenant_only_and_the_pooled_map_for_small_tenants(population: Population) -> None:
    tenants, samples, pooled = population
    cred = credibility(samples, pooled)
    pooled_map = _blend(None, cred)
    errors: dict[str, list[float]] = {"tenant-only": [], "pooled": [], "blended": []}
    for i, (a, b, n) in enumerate(tenants):
        if n > 1_500:
            continue
        sample = samples[f"t{i}"]
        maps = {"tenant-only": _fit_sample(sample), "pooled": pooled_map, "blended": _blend(sample, cred)}
        for rate in (0.05, 0.01, 0.005):
            for name, qmap in maps.items():
                errors[name].append(abs(_rate(qmap, 1 - rate, a, b) / rate - 1))
    mae = {name: float(np.mean(v)) for name, v in errors.items()}
    print("\nsmall tenants' mean |alert-rate error|: " + ", ".join(f"{k} {v:.1%}" for k, v in mae.items()))
    assert mae["blended"] < 0.85 * mae["tenant-only"] and mae["blended"] < 0.85 * mae["pooled"]


def _mixture(rng: np.random.Generator, fraud: float, n: int) -> np.ndarray:
    return np.where(rng.random(n) < fraud, rng.beta(6.0, 4.0, n), rng.beta(A, B, n))


def test_small_tenants_unlike_the_big_ones_are_not_dragged_to_the_pool() -> None:
    """Big tenants at 0.3-0.8% fraud, small ones at 0.05-5%: their tails differ by factors from the pool's."""
    errors: dict[str, list[float]] = {"tenant-only": [], "pooled": [], "blended": []}
    for seed in range(3):
        rng = np.random.default_rng(seed)
        tenants = [(float(f), 200_000) for f in np.geomspace(0.003, 0.008, 6)]
        tenants += [(float(f), 5_000) for f in np.geomspace(0.0005, 0.05, 30)]
        data = [_mixture(rng, f, n) for f, n in tenants]
        samples = {f"t{i}": ExactSample(d) for i, d in enumerate(data)}
        cred = credibility(samples, ExactSample(np.concatenate(data)))
        pooled_map = _blend(None, cred)
        for i, (fraud, n) in enumerate(tenants):
            if n > 5_000:
                continue
            maps = {"tenant-only": _fit_sample(samples[f"t{i}"]), "pooled": pooled_map,
                    "blended": _blend(samples[f"t{i}"], cred)}
            for rate in (0.01, 0.005, 0.001):
                for name, qmap in maps.items():
                    cut = _cut(qmap, 1 - rate)
                    truth = (1 - fraud) * stats.beta.sf(cut, A, B) + fraud * stats.beta.sf(cut, 6.0, 4.0)
                    errors[name].append(abs(truth / rate - 1))
    mae = {name: float(np.mean(v)) for name, v in errors.items()}
    print("\nsmall tenants unlike the pool, mean |alert-rate error|: "
          + ", ".join(f"{k} {v:.1%}" for k, v in mae.items()))
    assert mae["blended"] < 0.95 * mae["tenant-only"] and mae["blended"] < 0.2 * mae["pooled"]


def test_credibility_recovers_a_known_spread_of_tail_shares() -> None:
    """Each tenant sends a share s_i ~ LogNormal(log 2%, 0.3^2) of its scores above 0.9: tau = 0.3 there."""
    rng = np.random.default_rng(9)
    data = [np.where(rng.random(20_000) < share, rng.uniform(0.9, 1.0, 20_000), rng.uniform(0.0, 0.9, 20_000))
            for share in 0.02 * np.exp(rng.normal(0.0, 0.3, 40))]
    cred = credibility({f"t{i}": ExactSample(d) for i, d in enumerate(data)}, ExactSample(np.concatenate(data)))
    tail = (cred.xs > 0.91) & (cred.xs < 0.97)
    tau = np.sqrt(cred.between[tail])
    print(f"\nestimated tau above 0.9: {tau.min():.3f}..{tau.max():.3f} (truth 0.3)")
    assert np.all(np.abs(tau - 0.3) < 0.1)
    assert cred.between_upper is not None and np.all(cred.between_upper >= cred.between)
    assert np.all(cred.between_upper[tail] < 3 * cred.between[tail])


def test_judge_holds_with_enough_samples_and_is_insufficient_with_few() -> None:
    rng = np.random.default_rng(3)
    plenty = ExactSample(rng.beta(A, B, 3 * CONTRACT.samples_needed(0.05)))
    few = ExactSample(rng.beta(A, B, CONTRACT.samples_needed(0.05) // 3))
    good = judge(_fit_sample(plenty), 0.95, 0.05, plenty, CONTRACT)
    short = judge(_fit_sample(few), 0.95, 0.05, few, CONTRACT)
    assert good.verdict == "holds" and good.effective_samples == pytest.approx(plenty.count, rel=0.01)
    assert short.verdict == "insufficient" and short.samples_needed == 7_299
    none = judge(_fit_sample(few), 0.95, 0.05, None, CONTRACT)
    assert none.verdict == "insufficient" and math.isnan(none.estimate)


@pytest.mark.parametrize("rate", [0.05, 0.01])
def test_judge_finds_a_map_shifted_to_alert_30_percent_more_in_breach(rate: float, population: Population) -> None:
    rng = np.random.default_rng(4)
    evidence = ExactSample(rng.beta(A, B, CONTRACT.samples_needed(rate)))
    bad = _shifted(_fit_sample(evidence), 1.3)
    assert _rate(bad, 1 - rate) / rate == pytest.approx(1.3, abs=0.08)
    alone = judge(bad, 1 - rate, rate, evidence, CONTRACT)
    assert alone.verdict == "breach" and alone.interval[0] > rate * 1.1, alone
    _, samples, pooled = population
    borrowing = judge(bad, 1 - rate, rate, evidence, CONTRACT, credibility(samples, pooled))
    assert borrowing.verdict == "breach", borrowing


def test_judge_intervals_cover_the_true_rate_with_the_stated_confidence() -> None:
    rng = np.random.default_rng(5)
    in_sample, held_out = [], []
    for _ in range(400):
        fitted = ExactSample(rng.beta(A, B, 10_000))
        qmap = _fit_sample(fitted)
        truth = _rate(qmap, 0.95)
        low, high = judge(qmap, 0.95, 0.05, fitted, CONTRACT).interval
        in_sample.append(low <= truth <= high)
        low, high = judge(qmap, 0.95, 0.05, ExactSample(rng.beta(A, B, 20_000)), CONTRACT).interval
        held_out.append(low <= truth <= high)
    print(f"\ncoverage of the true rate: in-sample {np.mean(in_sample):.1%}, held-out evidence {np.mean(held_out):.1%}")
    assert abs(float(np.mean(in_sample)) - 0.95) <= 0.035
    assert abs(float(np.mean(held_out)) - 0.95) <= 0.035


def test_blended_judgements_cover_the_small_tenants_true_rates(population: Population) -> None:
    tenants, samples, pooled = population
    cred = credibility(samples, pooled)
    covered = []
    for i, (a, b, n) in enumerate(tenants):
        if n > 1_500:
            continue
        sample = samples[f"t{i}"]
        qmap = _blend(sample, cred)
        for rate in (0.05, 0.01, 0.005):
            low, high = judge(qmap, 1 - rate, rate, sample, CONTRACT, cred).interval
            covered.append(low <= _rate(qmap, 1 - rate, a, b) <= high)
    print(f"\nblended intervals cover {np.mean(covered):.1%} of small tenants' true rates")
    assert float(np.mean(covered)) >= CONTRACT.confidence - 0.02


def _stream(rng: np.random.Generator, rate: float, n: int) -> np.ndarray:
    """Served scores alerting at ``rate`` above threshold 0.95 (target 5%)."""
    return np.where(rng.random(n) < rate, 0.975, 0.5)


def _first_breach(watch: AlertRateWatch, scores: np.ndarray, chunk: int | None = None) -> tuple[str, int] | None:
    step = scores.size if chunk is None else chunk
    for start in range(0, scores.size, step):
        found = watch.observe("acme", "cnp", scores[start:start + step])
        if found:
            return found[0].direction, found[0].samples
    return None


def _watch(epoch: int) -> AlertRateWatch:
    watch = AlertRateWatch(CONTRACT, alpha=0.05, pairs=1)
    watch.watch("acme", "cnp", 0.95, 0.05, epoch=epoch)
    return watch


@pytest.mark.parametrize("edge", [1.1, 0.9])
def test_the_watch_false_alarms_at_most_alpha_at_the_bands_edge(edge: float) -> None:
    rng = np.random.default_rng(21 if edge > 1 else 22)
    runs, horizon = 1_000, 20_000
    alarms = sum(_first_breach(_watch(horizon), _stream(rng, 0.05 * edge, horizon)) is not None for _ in range(runs))
    print(f"\nfalse alarms at {edge:.0%} of target over {horizon:,} observations: {alarms}/{runs}")
    assert alarms / runs <= 0.05


def test_the_cusum_spends_its_false_alarm_budget_in_doubling_epochs() -> None:
    """Epoch k holds at most E 2^(k+1) restarts and alpha / 2^(k+1) of the budget; the budgets add up to alpha."""
    watch = AlertRateWatch(CONTRACT, alpha=0.05, pairs=10, epoch=1_000)
    base = math.log(4 * 1_000 * 10 / 0.05)
    seen = np.array([0, 999, 1_000, 2_999, 3_000, 7_000])
    assert watch.h_at(seen) == pytest.approx(base + np.array([2, 2, 4, 4, 6, 8]) * math.log(2))
    budget = sum(1_000 * 2 ** (k + 1) * math.exp(-float(watch.h_at(1_000 * (2**k - 1)))) for k in range(60))
    assert budget == pytest.approx(0.05 / (4 * 10))  # per pair side and half (CUSUM): the split of alpha


def test_a_watch_kept_far_past_its_first_epoch_still_false_alarms_at_most_alpha() -> None:
    rng = np.random.default_rng(23)
    runs, n = 400, 60_000  # epochs of 2,000, 4,000, 8,000 and 16,000, and most of the fifth
    alarms = sum(_first_breach(_watch(2_000), _stream(rng, 0.05 * 1.1, n)) is not None for _ in range(runs))
    print(f"\nfalse alarms at the band's edge over {n:,} observations, first epoch 2,000: {alarms}/{runs}")
    assert alarms / runs <= 0.05


@pytest.mark.parametrize("factor", [1.3, 1.5, 0.7])
def test_the_watch_detects_a_shifted_rate_from_promotion(factor: float) -> None:
    rng = np.random.default_rng(int(factor * 100))
    horizon = 200_000
    found = [_first_breach(_watch(horizon), _stream(rng, 0.05 * factor, horizon), chunk=5_000) for _ in range(100)]
    assert all(f is not None and f[0] == ("above" if factor > 1 else "below") for f in found)
    delays = np.array([f[1] for f in found if f is not None])
    watch = _watch(horizon)
    p1, p0 = 0.05 * factor, 0.05 * (1.1 if factor > 1 else 0.9)
    alt = 0.05 * (1.3 if factor > 1 else 0.7)
    drift = p1 * math.log(alt / p0) + (1 - p1) * math.log((1 - alt) / (1 - p0))
    expected = watch.h_start / drift
    print(f"\n{factor:.0%} of target: detected after median {np.median(delays):,.0f} observations "
          f"(p90 {np.percentile(delays, 90):,.0f}; Wald {expected:,.0f}; h_start {watch.h_start:.2f})")
    assert np.median(delays) <= 1.5 * expected


def test_the_watch_detects_a_change_long_after_promotion() -> None:
    rng = np.random.default_rng(31)
    before, after = 200_000, 100_000
    delays = []
    for _ in range(40):
        scores = np.concatenate([_stream(rng, 0.05, before), _stream(rng, 0.05 * 1.5, after)])
        found = _first_breach(_watch(before + after), scores, chunk=10_000)
        assert found is not None and found[0] == "above" and found[1] > before
        delays.append(found[1] - before)
    watch = _watch(before + after)
    p1, p0, alt = 0.075, 0.055, 0.065
    drift = p1 * math.log(alt / p0) + (1 - p1) * math.log((1 - alt) / (1 - p0))
    h = float(watch.h_at(before, before + after))  # the CUSUM's threshold when the rate changes
    print(f"\n+50% after {before:,} observations: CUSUM detects after median {np.median(delays):,.0f} more "
          f"(h {h:.1f}, Wald {h / drift:,.0f})")
    assert np.median(delays) <= 1.5 * h / drift


def test_a_breach_is_found_at_the_same_observation_whatever_the_batching() -> None:
    scores = _stream(np.random.default_rng(41), 0.075, 100_000)
    whole = _first_breach(_watch(100_000), scores)
    assert whole is not None
    assert _first_breach(_watch(100_000), scores, chunk=37) == whole
    watch = _watch(100_000)
    assert watch.observe("acme", "cnp", scores[: whole[1]])
    assert watch.watched() == [("acme", "cnp", 0.95)]


def test_the_vectorised_cusum_is_the_recursion() -> None:
    rng = np.random.default_rng(51)
    increments = rng.normal(-0.05, 1.0, 2_000)
    naive, s = [], 0.7
    for x in increments:
        s = max(0.0, s + x)
        naive.append(s)
    assert np.allclose(_cusum(0.7, increments), naive, atol=1e-9)
