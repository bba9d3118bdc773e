"""The alert-rate contract: what a (tenant, threshold) needs, what it borrows from the pool, whether it holds.

A map fitted on ``n`` of a tenant's scores puts the threshold whose target alert rate is ``p`` at
an empirical quantile; on the tenant's future traffic it alerts on a share ``r`` with
``sd(r) = sqrt(p (1 - p) / n)`` (the coverage of an empirical quantile). The contract
``(tolerance t, confidence c)`` holds when ``z_c * sd(r) <= t * p``, so a (tenant, threshold)
needs ``samples_needed(p) = z_c^2 (1 - p) / (p t^2)`` scores: 7,300 at 5%, 38,000 at 1% and
384,000 at 0.1% for the defaults (±10%, 95%).

Small tenants borrow strength (Bühlmann-Straub credibility, per score level): at a corrected
score ``x`` the tenant's tail share ``a_t(x)`` is blended with the pooled one ``a_P(x)`` of the
(model version, intent) with weight ``w = n_t / (n_t + k(x))``, ``k = sigma^2 / tau^2`` the
within-tenant (Bernoulli) variance over the between-tenant variance of the tail shares,
estimated from all tenants by moments. The blended CDF is then composed with *the tenant's own*
reference quantile function. Its alert-rate error has mean square
``w^2 p(1-p)/n_t + (1-w)^2 (tau^2 + p(1-p)/N)``, which gives its effective samples and so its
verdict, with the same formula as a tenant-only map (``w = 1``) or a pooled one (``w = 0``).

After promotion :class:`AlertRateWatch` runs a two-sided Bernoulli CUSUM per (tenant, threshold)
against the tolerance band; its threshold ``h = ln(horizon * pairs / alpha)`` bounds the chance
of any false alarm over ``horizon`` observations across ``pairs`` watched pairs by ``alpha``
(each CUSUM restart is a one-sided SPRT whose crossing probability under the null is at most
``e^-h``; a union bound does the rest).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from museflow.errors import MapError
from museflow.qmap import QuantileMap
from museflow.reference import ReferenceDistribution, collapse_ties, probability_grid

__all__ = [
    "AlertRateWatch",
    "Breach",
    "Contract",
    "ContractReport",
    "Credibility",
    "Judgement",
    "ScoreSample",
    "blend_map",
    "credibility",
    "judge",
    "judge_fit",
    "tail_shares",
]

FloatArray = npt.NDArray[np.float64]
VERDICTS = ("holds", "insufficient", "breach")


class ScoreSample(Protocol):
    """What both :class:`museflow.sketch.WindowedSketch` and :class:`museflow.refit.ExactSample` offer."""

    @property
    def count(self) -> int: ...

    @property
    def min(self) -> float: ...

    @property
    def max(self) -> float: ...

    def quantile(self, q: npt.ArrayLike) -> FloatArray: ...

    def cdf(self, xs: npt.ArrayLike) -> FloatArray: ...


@dataclass(frozen=True)
class Contract:
    """Relative tolerance on each threshold's alert rate and the confidence it is stated with."""

    tolerance: float = 0.10
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if not (0 < self.tolerance < 1 and 0.5 < self.confidence < 1):
            raise ValueError(f"Contract(tolerance={self.tolerance}, confidence={self.confidence}): tolerance must be "
                             "in (0, 1) and confidence in (0.5, 1)")

    @property
    def z(self) -> float:
        """Two-sided normal quantile of the confidence (1.96 at 95%)."""
        return NormalDist().inv_cdf(0.5 + self.confidence / 2)

    def samples_needed(self, rate: float) -> int:
        """Scores a tenant-only map needs so its alert rate at ``rate`` is within the tolerance."""
        if not 0 < rate < 1:
            raise ValueError(f"samples_needed: alert rate {rate!r} must be in (0, 1)")
        return math.ceil(self.z ** 2 * (1 - rate) / (rate * self.tolerance ** 2))

    def band(self, rate: float) -> tuple[float, float]:
        """The alert rates the contract accepts around the target ``rate``."""
        return rate * (1 - self.tolerance), rate * (1 + self.tolerance)

    def can_compare(self, rate: float, fitted: int, observed: int) -> bool:
        """True when a prediction from a map fitted on ``fitted`` scores can be checked against a rate measured
        on ``observed`` scores: the sampling error of both, combined, stays within the tolerance."""
        if fitted <= 0 or observed <= 0 or not 0 < rate < 1:
            return False
        return self.z * math.sqrt((1 - rate) / rate * (1 / fitted + 1 / observed)) <= self.tolerance

    def describe(self) -> str:
        return f"±{self.tolerance:.0%} of each threshold's target alert rate at {self.confidence:.0%} confidence"


@dataclass(frozen=True)
class Credibility:
    """Per score level ``xs``: pooled tail share, within and between-tenant variance of the shares."""

    xs: FloatArray
    pooled_share: FloatArray
    within: FloatArray
    between: FloatArray
    pooled_count: int
    tenants: int

    def k(self) -> FloatArray:
        """Bühlmann's ``sigma^2 / tau^2`` (inf where the tenants do not differ measurably)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.between > 0, self.within / np.maximum(self.between, 1e-300), np.inf)

    def weight(self, n: int) -> FloatArray:
        """The tenant's own weight at each level: ``n / (n + k)``."""
        if n <= 0:
            return np.zeros_like(self.xs)
        k = self.k()
        return np.where(np.isfinite(k), n / (n + np.where(np.isfinite(k), k, 0.0)), 0.0)

    def at(self, x: float) -> tuple[float, float]:
        """``(pooled share, between-tenant variance)`` at corrected score ``x`` (interpolated)."""
        return (float(np.interp(x, self.xs, self.pooled_share)), float(np.interp(x, self.xs, self.between)))


def tail_shares(sample: ScoreSample, xs: npt.ArrayLike) -> FloatArray:
    """Share of the sample strictly above each ``x``."""
    return np.clip(1.0 - np.asarray(sample.cdf(xs), dtype=np.float64), 0.0, 1.0)


def credibility(samples: Mapping[str, ScoreSample], pooled: ScoreSample,
                levels: npt.ArrayLike | None = None) -> Credibility:
    """Estimate the credibility components on the pooled quantiles at ``levels`` from every tenant's sample."""
    grid = probability_grid() if levels is None else np.asarray(levels, dtype=np.float64)
    xs = np.maximum.accumulate(np.asarray(pooled.quantile(grid), dtype=np.float64))
    xs[0], xs[-1] = pooled.min, pooled.max
    counts = np.array([s.count for s in samples.values()], dtype=np.float64)
    used = [s for s in samples.values() if s.count > 0]
    counts = counts[counts > 0]
    total = float(counts.sum())
    pooled_share = tail_shares(pooled, xs)
    if len(used) < 2 or total <= 0:
        zero = np.zeros_like(xs)
        return Credibility(xs, pooled_share, pooled_share * (1 - pooled_share), zero, int(pooled.count), len(used))
    shares = np.vstack([tail_shares(s, xs) for s in used])
    mean = (counts[:, None] * shares).sum(axis=0) / total
    within = (counts[:, None] * shares * (1 - shares)).sum(axis=0) / total
    spread = (counts[:, None] * (shares - mean) ** 2).sum(axis=0)
    denominator = total - float((counts ** 2).sum()) / total
    if denominator <= 0:
        return Credibility(xs, pooled_share, within, np.zeros_like(xs), int(pooled.count), len(used))
    between = np.maximum(0.0, (spread - (len(used) - 1) * within) / denominator)
    return Credibility(xs, pooled_share, within, between, int(pooled.count), len(used))


def blend_map(tenant_sample: ScoreSample | None, cred: Credibility, reference: ReferenceDistribution, *,
              model: str, model_version: str, tenant: str, intent: str, version: int,
              now_ms: int = 0, source: str = "blended") -> QuantileMap:
    """``Q_ref_t(w F_t + (1 - w) F_P)`` on the tenant's own reference (pooled alone when it has no scores)."""
    where = f"blend_map {model}/{model_version} tenant={tenant} intent={intent}"
    n = 0 if tenant_sample is None else tenant_sample.count
    xs = cred.xs.copy()
    if n > 0 and tenant_sample is not None:
        xs[0], xs[-1] = min(xs[0], tenant_sample.min), max(xs[-1], tenant_sample.max)
    if not xs[-1] > xs[0]:
        raise MapError(f"{where}: every score equals {xs[0]!r}; a constant model cannot be mapped")
    pooled_cdf = 1.0 - cred.pooled_share
    weight = cred.weight(n)
    own = np.asarray(tenant_sample.cdf(xs), dtype=np.float64) if n > 0 and tenant_sample is not None else pooled_cdf
    us = np.clip(np.maximum.accumulate(weight * own + (1 - weight) * pooled_cdf), 0.0, 1.0)
    us[0], us[-1] = 0.0, 1.0
    # Strictly rising x with non-decreasing u: drop repeated x, keep the highest u seen for it.
    xs, first = np.unique(xs, return_index=True)
    us = np.maximum.accumulate(us[first])
    us[-1] = 1.0
    levels, knots = collapse_ties(us, xs)
    ys = reference.quantile(levels)
    return QuantileMap(model=model, model_version=model_version, tenant=tenant, intent=intent, version=version,
                       reference_name=reference.name, reference_version=reference.version, knots_x=knots,
                       knots_y=ys, sample_count=n, tail_sample_count=0, window_end_ms=now_ms, created_at_ms=now_ms,
                       source=source)


@dataclass(frozen=True)
class Judgement:
    """One (tenant, threshold): the map's expected alert rate on the tenant's traffic, and the verdict."""

    tenant: str
    intent: str
    threshold: float
    target: float
    estimate: float
    interval: tuple[float, float]
    samples: int
    effective_samples: float
    samples_needed: int
    weight: float
    verdict: str

    @property
    def holds(self) -> bool:
        return self.verdict == "holds"

    def to_json(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "intent": self.intent, "threshold": self.threshold, "target": self.target,
                "estimate": self.estimate, "interval": list(self.interval), "samples": self.samples,
                "effective_samples": self.effective_samples, "samples_needed": self.samples_needed,
                "weight": self.weight, "verdict": self.verdict}


def judge(qmap: QuantileMap, threshold: float, target: float, evidence: ScoreSample | None,
          contract: Contract, cred: Credibility | None = None) -> Judgement:
    """Judge ``qmap`` at ``threshold`` on the tenant's ``evidence`` (its candidate scores), borrowing from ``cred``.

    The estimate is the credibility-weighted share above the map's cut; its interval uses the
    blend's mean square error. ``holds``: the interval lies inside the contract's band;
    ``breach``: it lies wholly outside; otherwise ``insufficient`` (more samples needed).
    """
    n = 0 if evidence is None else evidence.count
    cut = float(qmap.inverse([threshold])[0])
    own = float(tail_shares(evidence, [cut])[0]) if evidence is not None and n > 0 else math.nan
    variance = target * (1 - target)
    if cred is not None and cred.tenants >= 1:
        pooled_share, between = cred.at(cut)
        k = variance / between if between > 0 else math.inf
        weight = n / (n + k) if n > 0 and math.isfinite(k) else (1.0 if n > 0 and cred.tenants < 2 else 0.0)
        if n > 0 and not math.isfinite(k):
            weight = 0.0 if cred.tenants >= 2 else 1.0
        pooled_noise = between + variance / max(cred.pooled_count, 1)
    else:
        pooled_share, weight, pooled_noise = math.nan, 1.0, math.inf
    if n == 0 and weight > 0:
        weight = 0.0
    estimate = weight * (own if n > 0 else 0.0) + (1 - weight) * (pooled_share if weight < 1 else 0.0)
    mse = (weight ** 2 * variance / n if n > 0 else 0.0) + ((1 - weight) ** 2 * pooled_noise if weight < 1 else 0.0)
    if not math.isfinite(mse) or (n == 0 and cred is None):
        return Judgement(qmap.tenant or "", qmap.intent, threshold, target, math.nan, (math.nan, math.nan), n, 0.0,
                         contract.samples_needed(target), weight, "insufficient")
    half = contract.z * math.sqrt(mse)
    low, high = estimate - half, estimate + half
    lo_band, hi_band = contract.band(target)
    if lo_band <= low and high <= hi_band:
        verdict = "holds"
    elif low > hi_band or high < lo_band:
        verdict = "breach"
    else:
        verdict = "insufficient"
    effective = variance / mse if mse > 0 else math.inf
    return Judgement(qmap.tenant or "", qmap.intent, threshold, target, estimate, (low, high), n, effective,
                     contract.samples_needed(target), weight, verdict)


@dataclass(frozen=True)
class Breach:
    """A watched pair whose served alert rate left the contract's band."""

    tenant: str
    intent: str
    threshold: float
    target: float
    direction: str
    observed: float
    samples: int


@dataclass
class _Cusum:
    target: float
    upper: float = 0.0
    lower: float = 0.0
    seen: int = 0
    alerts: int = 0


@dataclass
class AlertRateWatch:
    """Two-sided Bernoulli CUSUM per (tenant, intent, threshold) on the served (mapped) scores.

    The null is the edge of the contract's band (``p (1 ± tolerance)``), the alternative
    ``p (1 ± shift)``; ``h`` bounds the family-wise false-alarm chance by ``alpha`` over
    ``horizon`` observations per pair across ``pairs`` pairs.
    """

    contract: Contract = field(default_factory=Contract)
    shift: float = 0.30
    alpha: float = 0.05
    horizon: int = 10_000_000
    pairs: int = 100
    _state: dict[tuple[str, str, float], _Cusum] = field(default_factory=dict)

    @property
    def h(self) -> float:
        return math.log(self.horizon * self.pairs / self.alpha)

    def watch(self, tenant: str, intent: str, threshold: float, target: float) -> None:
        """Start (or restart) watching one pair, e.g. after a promotion."""
        self._state[(tenant, intent, float(threshold))] = _Cusum(target)

    def forget(self, tenant: str, intent: str) -> None:
        for key in [k for k in self._state if k[:2] == (tenant, intent)]:
            del self._state[key]

    def watched(self) -> list[tuple[str, str, float]]:
        return sorted(self._state)

    def observe(self, tenant: str, intent: str, mapped: npt.ArrayLike) -> list[Breach]:
        """Feed served scores of one route; return the pairs that crossed (their CUSUM restarts)."""
        scores = np.asarray(mapped, dtype=np.float64).ravel()
        out: list[Breach] = []
        for (t, i, tau), state in self._state.items():
            if (t, i) != (tenant, intent) or scores.size == 0:
                continue
            alerts = scores > tau
            breach = self._update(state, alerts)
            if breach is not None:
                out.append(Breach(t, i, tau, state.target, breach, state.alerts / max(state.seen, 1), state.seen))
                self._state[(t, i, tau)] = _Cusum(state.target)
        return out

    def _update(self, state: _Cusum, alerts: npt.NDArray[np.bool_]) -> str | None:
        p = state.target
        tol, shift = self.contract.tolerance, max(self.shift, self.contract.tolerance * 1.5)
        up0, up1 = p * (1 + tol), min(p * (1 + shift), 0.999)
        lo0, lo1 = p * (1 - tol), p * (1 - shift)
        inc_up = _llr(up1, up0)
        inc_lo = _llr(lo1, lo0) if lo1 > 0 else (0.0, 0.0)
        direction = None
        hits = alerts.astype(bool)
        state.upper, crossed_up = _cusum(state.upper, np.where(hits, inc_up[0], inc_up[1]), self.h)
        state.lower, crossed_lo = _cusum(state.lower, np.where(hits, inc_lo[0], inc_lo[1]), self.h)
        if crossed_up:
            direction = "above"
        elif crossed_lo:
            direction = "below"
        state.seen += int(hits.size)
        state.alerts += int(np.count_nonzero(hits))
        return direction


def _cusum(start: float, increments: FloatArray, h: float) -> tuple[float, bool]:
    """``S_n = max(0, S_{n-1} + x_n)`` over a batch at once (``S_n = C_n - min(0, min_j C_j)``)."""
    if increments.size == 0:
        return start, False
    c = start + np.cumsum(increments)
    s = c - np.minimum(0.0, np.minimum.accumulate(c))
    return float(s[-1]), bool(np.any(s > h))


def _llr(p1: float, p0: float) -> tuple[float, float]:
    """Log-likelihood-ratio increments of one Bernoulli observation (alert, no alert)."""
    return math.log(p1 / p0), math.log((1 - p1) / (1 - p0))


def needed_table(contract: Contract, rates: Sequence[float]) -> list[tuple[float, int]]:
    """``(rate, samples needed)`` for each target alert rate (README and CLI)."""
    return [(float(r), contract.samples_needed(float(r))) for r in rates]


def judge_fit(qmap: QuantileMap, threshold: float, target: float, contract: Contract,
              evidence: npt.ArrayLike | None = None) -> Judgement:
    """Judge a map by what it was fitted on, and by later scores of the tenant when there are some.

    A map fitted on ``n`` scores alerts at ``target`` on them by construction; its rate on the
    tenant's traffic has sd ``sqrt(p(1-p)/n)``. Independent ``evidence`` (corrected scores of the
    tenant seen after the fit, ``m`` of them, alerting on a share ``r``) is pooled with it:
    estimate ``(n p + m r) / (n + m)`` on ``n + m`` effective samples.
    """
    n = max(int(qmap.sample_count), 0)
    scores = np.asarray(evidence if evidence is not None else (), dtype=np.float64).ravel()
    m = int(scores.size)
    cut = float(qmap.inverse([threshold])[0])
    observed = float(np.count_nonzero(scores > cut)) / m if m else target
    total = n + m
    needed = contract.samples_needed(target)
    if total == 0 or qmap.is_identity:
        return Judgement(qmap.tenant or "", qmap.intent, threshold, target, math.nan, (math.nan, math.nan), 0, 0.0,
                         needed, 1.0, "insufficient")
    estimate = (n * target + m * observed) / total
    half = contract.z * math.sqrt(target * (1 - target) / total)
    low, high = estimate - half, estimate + half
    lo_band, hi_band = contract.band(target)
    if lo_band <= low and high <= hi_band:
        verdict = "holds"
    elif low > hi_band or high < lo_band:
        verdict = "breach"
    else:
        verdict = "insufficient"
    return Judgement(qmap.tenant or "", qmap.intent, threshold, target, estimate, (low, high), total, float(total),
                     needed, 1.0, verdict)


@dataclass(frozen=True)
class ContractReport:
    """Every (tenant, threshold) judgement of a promotion; it passes when every one holds."""

    contract: Contract
    rows: tuple[Judgement, ...]

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(r.holds for r in self.rows)

    def table(self) -> str:
        """Threshold, target, estimate, interval, samples, samples needed and verdict, one line per pair."""
        lines = [f"alert-rate contract: {self.contract.describe()}",
                 f"{'tenant':<16} {'threshold':>9} {'target':>7} {'estimate':>8} {'interval':>17} {'samples':>9} "
                 f"{'needed':>9}  verdict"]
        for r in self.rows:
            interval = (f"{r.interval[0]:.3%}..{r.interval[1]:.3%}" if math.isfinite(r.interval[0]) else "-")
            estimate = f"{r.estimate:.3%}" if math.isfinite(r.estimate) else "-"
            lines.append(f"{r.tenant:<16} {r.threshold:>9.4g} {r.target:>7.2%} {estimate:>8} {interval:>17} "
                         f"{r.effective_samples:>9,.0f} {r.samples_needed:>9,}  {r.verdict}")
        return "\n".join(lines)

    def problems(self) -> list[str]:
        return [f"{r.tenant} > {r.threshold:g} ({r.target:.2%}): {r.verdict}, {r.effective_samples:,.0f} samples of "
                f"{r.samples_needed:,} needed" for r in self.rows if not r.holds]
