"""Label-free performance against a known truth: CBPE accuracy, prior-shift detection, calibration, the recall gate.

Run: ``python bench/cbpe_sim.py [--seed N]`` (about a minute on two cores).

Scores are calibrated by construction: a model sees ``x ~ N(mu * y, 1)`` and outputs the exact
posterior ``p = sigmoid(logit(pi) + mu * x - mu^2 / 2)`` for the prior ``pi`` it was calibrated
on (AUC = Phi(mu / sqrt 2)). Mapped scores are the empirical CDF of ``p`` on a separate
reference sample, a monotone map as the quantile maps are. Labels are drawn, then hidden from
the estimates. A *prior shift* changes ``P(y)`` while ``x | y`` stays put, so ``p`` (still
computed with the old prior) is miscalibrated exactly the way Saerens' EM corrects.

1. Streaming: three tenants through :class:`museflow.observe.monitoring.ScoreMonitor` (window 1 h, 12
   buckets, baseline 1 day) for 30 hours; one tenant's fraud rate doubles at hour 24. Each
   (tenant, hour, threshold) chunk compares the monitor's CBPE estimate with the realised value.
2. Calibration: relative ECE of calibrated and miscalibrated labelled pairs, which is where the
   defaults ``MAX_RELATIVE_ECE`` and ``MIN_POSITIVES`` of :mod:`museflow.observe.estimate` come from.
3. Gate: a champion against a same-quality and a lower-AUC candidate on shadow traffic (score-log
   rows), ten seeded runs each, through :func:`museflow.observe.estimate.gate_scores`.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from museflow.observe.alerts import Thresholds
from museflow.observe.estimate import (
    MAX_RELATIVE_ECE,
    MIN_POSITIVES,
    RECALL_MARGIN,
    check_calibration,
    expected_confusion,
    gate_scores,
    scores_by_tenant,
)
from museflow.observe.metrics import PipelineMetrics
from museflow.observe.monitoring import ScoreMonitor
from museflow.observe.performance import auc, confusion_at

FloatArray = npt.NDArray[np.float64]
HOUR = 3600.0
BATCHES_PER_HOUR = 12
MU = 2.5  # AUC 0.961
MU_DEGRADED = 2.1  # AUC 0.932
SHIFT_HOUR = 24
HOURS = 30


@dataclass(frozen=True)
class Tenant:
    name: str
    events_per_hour: int
    fraud_rate: float
    thresholds: tuple[float, ...]


TENANTS = (
    Tenant("acme-bank", 150_000, 0.02, (0.99, 0.995)),
    Tenant("globex-pay", 60_000, 0.01, (0.95, 0.99)),
    Tenant("initech-fin", 20_000, 0.005, (0.98,)),
)
SHIFTED = "globex-pay"


def posterior(x: FloatArray, mu: float, prior: float) -> FloatArray:
    """The exact posterior of the binormal model for ``prior``: calibrated whenever the traffic's prior is ``prior``."""
    out: FloatArray = 1.0 / (1.0 + np.exp(-(math.log(prior / (1.0 - prior)) + mu * x - mu * mu / 2.0)))
    return out


def draw(rng: np.random.Generator, n: int, fraud_rate: float, mu: float) -> tuple[npt.NDArray[np.bool_], FloatArray]:
    y = rng.random(n) < fraud_rate
    return y, rng.standard_normal(n) + mu * y


def ecdf(reference: FloatArray) -> Any:
    ordered = np.sort(reference)
    return lambda p: np.searchsorted(ordered, p, side="right") / ordered.size


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


# --- 1. streaming CBPE and prior shift ------------------------------------------------------------------------------


@dataclass
class Chunk:
    tenant: str
    hour: int
    threshold: float
    frauds: int
    est_precision: float
    real_precision: float
    est_recall: float
    real_recall: float
    shifted: bool
    sd_precision: float  # what drawing the labels alone spreads realised values by, given p
    sd_recall: float


def label_noise(p: FloatArray, alerted: npt.NDArray[np.bool_]) -> tuple[float, float]:
    """Standard deviations of realised precision and recall around CBPE when labels are Bernoulli(p) draws.

    Delta method: precision = TP / alerts; recall = TP / (TP + FN) with TP and FN independent sums.
    """
    v = p * (1 - p)
    frauds, tp = float(p.sum()), float(p[alerted].sum())
    r = tp / frauds
    sd_recall = math.sqrt(float(v[alerted].sum()) * (1 - r) ** 2 + float(v[~alerted].sum()) * r * r) / frauds
    return math.sqrt(float(v[alerted].sum())) / max(int(alerted.sum()), 1), sd_recall


def within(sd: float, bound: float = 0.05) -> float:
    """P(|N(0, sd)| <= bound)."""
    return math.erf(bound / (sd * math.sqrt(2))) if sd > 0 else 1.0


def streaming(seed: int) -> tuple[list[Chunk], dict[str, Any]]:
    rng = np.random.default_rng(seed)
    metrics = PipelineMetrics()
    metrics.set_known([t.name for t in TENANTS], ["cnp"])
    clock = [0.0]
    monitor = ScoreMonitor(metrics, HOUR, buckets=BATCHES_PER_HOUR, publish_interval_seconds=1e12,
                           clock=lambda: clock[0], publish_on_scrape=False, baseline_seconds=24 * HOUR)
    maps = {}
    for t in TENANTS:
        y, x = draw(rng, 200_000, t.fraud_rate, MU)
        maps[t.name] = ecdf(posterior(x, MU, t.fraud_rate))
    chunks: list[Chunk] = []
    shift: dict[str, Any] = {"rows": [], "false_alarms": 0, "windows_checked": 0, "worst_pure_gap": 0.0}
    ratio_bound, min_frauds = Thresholds().prior_shift_ratio, Thresholds().prior_shift_min_frauds
    for hour in range(HOURS):
        hourly: dict[str, list[tuple[FloatArray, FloatArray, npt.NDArray[np.bool_]]]] = {t.name: [] for t in TENANTS}
        for b in range(BATCHES_PER_HOUR):
            clock[0] = hour * HOUR + (b + 0.5) * HOUR / BATCHES_PER_HOUR
            for t in TENANTS:
                rate = t.fraud_rate * (2 if t.name == SHIFTED and hour >= SHIFT_HOUR else 1)
                y, x = draw(rng, t.events_per_hour // BATCHES_PER_HOUR, rate, MU)
                p = posterior(x, MU, t.fraud_rate)
                s = maps[t.name](p)
                monitor.observe(t.name, s, p, t.thresholds, None, "cnp", corrected=p)
                hourly[t.name].append((p, s, y))
        clock[0] = (hour + 1) * HOUR - 1e-6
        monitor.publish()
        for t in TENANTS:
            p = np.concatenate([c[0] for c in hourly[t.name]])
            s = np.concatenate([c[1] for c in hourly[t.name]])
            y = np.concatenate([c[2] for c in hourly[t.name]])
            est = monitor.estimate(t.name)
            assert est is not None
            pure = expected_confusion(p, s, t.thresholds)
            shifted = t.name == SHIFTED and hour >= SHIFT_HOUR
            for tau in t.thresholds:
                e, c = est.expected[tau], confusion_at(s, y, tau)
                shift["worst_pure_gap"] = max(shift["worst_pure_gap"], abs(e.recall - pure[tau].recall),
                                              abs(e.precision - pure[tau].precision))
                chunks.append(Chunk(t.name, hour, tau, int(y.sum()), e.precision, c.precision, e.recall, c.recall,
                                    shifted, *label_noise(p, s > tau)))
            prior = est.prior
            if prior is None:
                continue
            ratio = prior.prior / prior.baseline
            enough = est.samples * est.mean_probability >= min_frauds
            fires = (ratio > ratio_bound or ratio < 1 / ratio_bound) and enough
            if t.name == SHIFTED and hour >= SHIFT_HOUR - 1:
                truth = t.fraud_rate * (2 if hour >= SHIFT_HOUR else 1)
                shift["rows"].append((hour, truth, float(y.mean()), prior.mean, prior.prior, prior.baseline, ratio,
                                      fires))
            elif hour >= 1:
                shift["windows_checked"] += 1
                shift["false_alarms"] += int(fires)
                shift.setdefault("ratios", {}).setdefault(t.name, []).append(ratio)
    return chunks, shift


# --- 2. calibration bound --------------------------------------------------------------------------------------------


CAL_CASES = (
    ("calibrated", 0.01, 1.0),
    ("prior x2", 0.02, 1.0),
    ("prior x0.5", 0.005, 1.0),
    ("overconfident", 0.01, 1.4),
)


def calibration(seed: int, draws: int = 50) -> list[tuple[str, int, float, float, float, float]]:
    """(case, frauds, p1, p50, p99 relative ECE, mean |CBPE precision error| at 1% alert rate) per case and size."""
    rng = np.random.default_rng(seed + 7)
    rows = []
    for positives in (100, MIN_POSITIVES, 1000, 3000):
        for case, truth, temperature in CAL_CASES:
            rel, err = [], []
            for _ in range(draws):
                y, x = draw(rng, int(positives / truth), truth, MU)
                logit = math.log(0.01 / 0.99) + MU * x - MU * MU / 2.0
                p = 1.0 / (1.0 + np.exp(-(temperature * (logit - math.log(0.01 / 0.99)) + math.log(0.01 / 0.99))))
                rel.append(check_calibration(p, y).relative_ece)
                tau = float(np.quantile(p, 0.99))
                err.append(abs(expected_confusion(p, p, (tau,))[tau].precision - confusion_at(p, y, tau).precision))
            rows.append((case, positives, pct(rel, 1), pct(rel, 50), pct(rel, 99), float(np.mean(err))))
    return rows


# --- 3. gate ---------------------------------------------------------------------------------------------------------


MAP_SAMPLES = 200_000  # what the refit fitted each model's map on
GATE_EVENTS = {"acme-bank": 100_000, "globex-pay": 60_000, "initech-fin": 60_000}  # a few hours of shadow


def score_log_rows(tenant: str, model: tuple[str, str], role: str, ids: list[str], p: FloatArray,
                   s: FloatArray) -> Iterator[dict[str, Any]]:
    for event_id, corrected, mapped in zip(ids, p.tolist(), s.tolist(), strict=True):
        yield {"event_id": event_id, "tenant": tenant, "model": model[0], "model_version": model[1], "role": role,
               "corrected_score": corrected, "score": mapped}


def gate_run(seed: int) -> dict[str, Any]:
    """One shadow period: champion and candidates score the same events; maps fitted on each model's own scores."""
    rng = np.random.default_rng(10_000 + seed)
    champion, good, bad = ("fraud", "1"), ("fraud", "2"), ("fraud", "3")
    rows: list[dict[str, Any]] = []
    aucs: dict[str, list[float]] = {"champion": [], "good": [], "degraded": []}
    thresholds = {t.name: t.thresholds for t in TENANTS}
    for t in TENANTS:
        n = GATE_EVENTS[t.name]
        y, x1 = draw(rng, n + MAP_SAMPLES, t.fraud_rate, MU)
        noise = 0.6 * (x1 - MU * y) + 0.8 * rng.standard_normal(y.size)  # correlated errors, unit variance
        x2 = MU * y + noise
        x3 = MU_DEGRADED * y + noise
        ids = [f"{t.name}-{seed}-{i}" for i in range(n)]
        for model, mu, x, name in ((champion, MU, x1, "champion"), (good, MU, x2, "good"),
                                   (bad, MU_DEGRADED, x3, "degraded")):
            p = posterior(x, mu, t.fraud_rate)
            mapped = ecdf(p[n:])(p[:n])  # the refit's map: this model's scores on other traffic of the tenant
            rows.extend(score_log_rows(t.name, model, "champion" if name == "champion" else "shadow", ids, p[:n],
                                       mapped))
            aucs[name].append(auc(p[:n], y[:n]))
    out: dict[str, Any] = {"auc": {k: float(np.mean(v)) for k, v in aucs.items()}}
    for name, candidate in (("good", good), ("degraded", bad)):
        mine, theirs = scores_by_tenant(rows, champion, candidate)
        out[name] = gate_scores(mine, theirs, thresholds)
    return out


# --- report ---------------------------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=21)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()

    chunks, shift = streaming(args.seed)
    print(f"1. CBPE vs realised per (tenant, 1 h window, threshold), labels hidden; seed {args.seed}")
    print(f"   {'tenant':<12} {'tau':>6} {'chunks':>6} {'frauds':>11} {'|dP| p50':>9} {'|dP| p90':>9} "
          f"{'|dR| p50':>9} {'|dR| p90':>9} {'P ok':>6} {'R ok':>6} {'floor P':>8} {'floor R':>8}")
    scored = [c for c in chunks if not c.shifted and c.frauds >= 50]
    for t in TENANTS:
        for tau in t.thresholds:
            mine = [c for c in scored if c.tenant == t.name and c.threshold == tau]
            dp = [abs(c.est_precision - c.real_precision) for c in mine]
            dr = [abs(c.est_recall - c.real_recall) for c in mine]
            frauds = [c.frauds for c in mine]
            print(f"   {t.name:<12} {tau:>6} {len(mine):>6} {min(frauds):>5}-{max(frauds):<5} {pct(dp, 50):>9.4f} "
                  f"{pct(dp, 90):>9.4f} {pct(dr, 50):>9.4f} {pct(dr, 90):>9.4f} "
                  f"{np.mean([d <= 0.05 for d in dp]):>6.1%} {np.mean([d <= 0.05 for d in dr]):>6.1%} "
                  f"{np.mean([within(c.sd_precision) for c in mine]):>8.1%} "
                  f"{np.mean([within(c.sd_recall) for c in mine]):>8.1%}")
    small = [c for c in scored if c.frauds < 200]
    share_p = float(np.mean([abs(c.est_precision - c.real_precision) <= 0.05 for c in scored]))
    share_r = float(np.mean([abs(c.est_recall - c.real_recall) <= 0.05 for c in scored]))
    share_small = float(np.mean([abs(c.est_recall - c.real_recall) <= 0.05 for c in small])) if small else math.nan
    floor_p = float(np.mean([within(c.sd_precision) for c in scored]))
    floor_r = float(np.mean([within(c.sd_recall) for c in scored]))
    print(f"   all {len(scored)} chunks with >= 50 frauds: precision within 0.05 in {share_p:.1%}, recall in "
          f"{share_r:.1%}; recall in chunks with 50-199 frauds: {share_small:.1%} of {len(small)}")
    print(f"   floor = the share expected within 0.05 if the only error were drawing labels from calibrated p "
          f"(no estimator does better): precision {floor_p:.1%}, recall {floor_r:.1%}")
    print(f"   monitor's sliding-window sums vs expected_confusion on the same events: max gap "
          f"{shift['worst_pure_gap']:.1e}")
    after = [c for c in chunks if c.shifted]
    print(f"   {SHIFTED} after its prior doubled (p miscalibrated): |dP| p50 "
          f"{pct([abs(c.est_precision - c.real_precision) for c in after], 50):.3f}, |dR| p50 "
          f"{pct([abs(c.est_recall - c.real_recall) for c in after], 50):.3f} (not counted above)")

    bound = Thresholds().prior_shift_ratio
    print(f"\n2. Base rate of {SHIFTED}: fraud rate doubles at hour {SHIFT_HOUR} "
          "(window 1 h, baseline: the day before the window)")
    print(f"   {'hour':>4} {'truth':>7} {'realised':>8} {'mean p':>7} {'EM':>7} {'baseline':>8} {'EM/base':>7}  alert")
    for hour, truth, real, mean, em, base, ratio, fired in shift["rows"]:
        print(f"   {hour:>4} {truth:>7.4f} {real:>8.4f} {mean:>7.4f} {em:>7.4f} {base:>8.4f} {ratio:>7.2f}  "
              f"{'FIRES' if fired else '-'}")
    first = next(r for r in shift["rows"] if r[0] == SHIFT_HOUR)
    em_error = first[4] / first[1] - 1
    print(f"   false alarms (EM/baseline outside [1/{bound}, {bound}], >= {Thresholds().prior_shift_min_frauds} "
          "expected frauds) on unshifted windows: "
          f"{shift['false_alarms']} of {shift['windows_checked']}; EM/baseline p1-p99 per tenant: " + ", ".join(
              f"{name} {pct(r, 1):.2f}-{pct(r, 99):.2f}" for name, r in sorted(shift["ratios"].items())))

    cal = calibration(args.seed)
    print(f"\n3. Calibration: relative ECE (ECE / fraud rate, 10 equal-mass bins), 50 draws per row; "
          f"bound {MAX_RELATIVE_ECE}, verdict from {MIN_POSITIVES} frauds")
    print(f"   {'case':<14} {'frauds':>6} {'p1':>6} {'p50':>6} {'p99':>6} {'trusted':>8} {'|dP| CBPE':>9}")
    for case, positives, p1, p50, p99, err in cal:
        trusted = "yes" if p99 <= MAX_RELATIVE_ECE else ("no" if p1 > MAX_RELATIVE_ECE else "mixed")
        print(f"   {case:<14} {positives:>6} {p1:>6.3f} {p50:>6.3f} {p99:>6.3f} {trusted:>8} {err:>9.3f}")

    runs = [gate_run(args.seed + k) for k in range(10)]
    good_pass = sum(r["good"].passed for r in runs)
    bad_refused = sum(not r["degraded"].passed for r in runs)
    a = {k: np.mean([r["auc"][k] for r in runs]) for k in ("champion", "good", "degraded")}
    print(f"\n4. Recall gate (margin {RECALL_MARGIN}) over 10 seeded shadow runs; AUC champion {a['champion']:.3f}, "
          f"good {a['good']:.3f}, degraded {a['degraded']:.3f}")
    print("   first run, degraded candidate:")
    print("\n".join("     " + line for line in runs[0]["degraded"].table().splitlines()))
    deltas_good = [v.delta for r in runs for v in r["good"].verdicts]
    deltas_bad = [v.delta for r in runs for v in r["degraded"].verdicts]
    se_good = [v.standard_error for r in runs for v in r["good"].verdicts]
    print(f"   recall delta, good: min {min(deltas_good):+.3f} max {max(deltas_good):+.3f} "
          f"sd {np.std(deltas_good):.4f} (mean se {np.mean(se_good):.4f}); "
          f"degraded: min {min(deltas_bad):+.3f} max {max(deltas_bad):+.3f}")
    for name in ("good", "degraded"):
        reasons = sorted({f"{v.tenant}>{v.threshold:g}: {v.reason}" for r in runs for v in r[name].refused})
        print(f"   {name} refusals: {'; '.join(reasons) or 'none'}")

    ok1 = share_p >= 0.9 and share_r >= 0.9
    ok2 = abs(em_error) <= 0.2 and bool(first[7])
    ok3 = bad_refused == 10 and good_pass >= 9
    print("\nTargets")
    print(f"  {verdict(ok1)}  CBPE within 0.05 of realised in >= 90% of chunks with >= 50 frauds: precision "
          f"{share_p:.1%}, recall {share_r:.1%} ({len(scored)} chunks; label noise alone allows {floor_p:.1%} "
          f"and {floor_r:.1%})")
    print(f"  {verdict(ok2)}  doubled fraud rate: EM base rate {first[4]:.4f} vs truth {first[1]:.4f} "
          f"({em_error:+.1%}, bound +-20%) one window after the shift; alert fires: {bool(first[7])} "
          f"(EM/baseline {first[6]:.2f} > {bound}); mean p alone {first[3]:.4f} ({first[3] / first[1] - 1:+.1%})")
    print(f"  {verdict(ok3)}  gate: degraded candidate refused {bad_refused}/10, good candidate passes {good_pass}/10")
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    return 0 if ok1 and ok2 and ok3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
