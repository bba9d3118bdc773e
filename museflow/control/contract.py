"""The alert-rate contract: what a (tenant, threshold) needs, what it borrows from the pool, whether it holds.

A map fitted on ``n`` of a tenant's scores puts the threshold whose target alert rate is ``p`` at
an empirical quantile; on the tenant's future traffic it alerts on a share ``r`` with
``sd(r) = sqrt(p (1 - p) / n)`` (the coverage of an empirical quantile). The contract
``(tolerance t, confidence c)`` holds when ``z_c * sd(r) <= t * p``, so a (tenant, threshold)
needs ``samples_needed(p) = z_c^2 (1 - p) / (p t^2)`` scores: 7,300 at 5%, 38,000 at 1% and
384,000 at 0.1% for the defaults (±10%, 95%).

Small tenants borrow strength (credibility per score level). Tenants' tail shares differ by
factors (fraud prevalence multiplies the tail), so the model is on the log scale: at a corrected
score ``x`` the tenant's log tail share is the pooled one's plus ``theta ~ (0, tau^2(x))``, and its
own share seen on ``n_t`` scores has relative sampling variance ``v = (1 - a) / (n_t a)``.
``tau^2`` is estimated from every tenant (Paule-Mandel moments, :func:`credibility`). Predicting
the tenant's share by the pooled one has mean square relative error ``rho^2 = E[(e^-theta - 1)^2]``;
the blend ``w F_t + (1 - w) F_P`` with ``w = rho^2 / (rho^2 + v)`` (Bühlmann's ``c / (c + k)`` in
counts ``c`` above ``x``) is composed with *the tenant's own* reference quantile function. Its
relative mean square error ``w^2 v + (1 - w)^2 rho^2`` gives its interval, effective samples and
verdict, with the same formula for a tenant-only map (``w = 1``) or a pooled one (``w = 0``).

After promotion :class:`AlertRateWatch` runs, per (tenant, threshold) and side of the tolerance
band, a Bernoulli log-likelihood ratio of ``p (1 ± shift)`` against the band's edge, both
unreflected from the promotion (an SPRT, ``h_start = ln(4 pairs / alpha)`` by Ville's inequality)
and reflected at 0 (a CUSUM for later changes, by a union bound over its restarts): a false alarm
on a pair within its band has probability <= ``alpha`` over ``pairs`` pairs, however long they are
watched. The CUSUM's bound is spent in doubling epochs: epoch ``k`` (observations
``E (2^k - 1)`` to ``E (2^(k+1) - 1)``, ``E`` the first epoch's length) has at most
``E 2^(k+1)`` restarts and ``alpha / 2^(k+1)`` of the budget, so its threshold is
``h_k = ln(4 E pairs / alpha) + 2 (k + 1) ln 2``: it grows with the log of the time watched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from museflow.config import Settings
from museflow.errors import MapError
from museflow.transform.qmap import QuantileMap
from museflow.transform.reference import ReferenceDistribution, collapse_ties, probability_grid

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
    """What both :class:`~museflow.transform.sketch.WindowedSketch` and
    :class:`~museflow.transform.refit.ExactSample` offer."""

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

    @classmethod
    def from_settings(cls, settings: Settings) -> Contract:
        """The contract the deployment states (``MUSEFLOW_CONTRACT_TOLERANCE`` / ``_CONFIDENCE``)."""
        return cls(tolerance=settings.contract_tolerance, confidence=settings.contract_confidence)

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

    def verdict(self, rate: float, low: float, high: float) -> str:
        """``holds`` when the interval ``[low, high]`` lies inside the band, ``breach`` when wholly outside it,
        else ``insufficient``."""
        lo_band, hi_band = self.band(rate)
        if lo_band <= low and high <= hi_band:
            return "holds"
        if low > hi_band or high < lo_band:
            return "breach"
        return "insufficient"

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
    """Per score level ``xs``: the pooled tail share and the spread of the tenants' log tail shares around it.

    ``within`` is the tenants' mean sampling variance of their log share, ``between`` the
    between-tenant variance ``tau^2`` of the log shares beyond it (inf with fewer than two tenants)
    and ``between_upper`` its upper confidence bound (the judge's, so a verdict does not rest on
    a lucky low estimate of how much tenants differ).
    """

    xs: FloatArray
    pooled_share: FloatArray
    within: FloatArray
    between: FloatArray
    pooled_count: int
    tenants: int
    between_upper: FloatArray | None = None

    def spread(self, upper: bool = False) -> FloatArray:
        """Mean square relative error of the pooled share taken as a tenant's: ``E[(e^-theta - 1)^2]``."""
        between = self.between_upper if upper and self.between_upper is not None else self.between
        tau2 = np.minimum(between, 25.0)
        return np.where(np.isfinite(between), np.exp(2 * tau2) - 2 * np.exp(tau2 / 2) + 1, np.inf)

    def k(self) -> FloatArray:
        """Bühlmann's ``k`` in scores above the level: the tenant's own count there that earns weight 1/2."""
        with np.errstate(divide="ignore"):
            return 1.0 / self.spread()

    def weight(self, n: int, own_share: npt.ArrayLike | None = None) -> FloatArray:
        """The tenant's own weight at each level, ``rho^2 / (rho^2 + v)`` (see :func:`_weight`).

        ``own_share`` is the tenant's tail share at each level (default: the pooled one).
        """
        share = self.pooled_share if own_share is None else np.asarray(own_share, dtype=np.float64)
        return _weight(self.spread(), _relative_variance(n, share))

    def at(self, x: float) -> tuple[float, float]:
        """``(pooled share, between-tenant variance of log shares)`` at corrected score ``x`` (interpolated)."""
        tau2 = float(np.interp(x, self.xs, self.between)) if np.isfinite(self.between).all() else math.inf
        return float(np.interp(x, self.xs, self.pooled_share, left=1.0, right=0.0)), tau2

    def prior(self, xs: npt.ArrayLike, upper: bool = False) -> tuple[FloatArray, FloatArray, FloatArray]:
        """At ``xs`` (linear between levels): pooled share, its relative sampling variance, and :meth:`spread`."""
        points = np.asarray(xs, dtype=np.float64)
        share = np.interp(points, self.xs, self.pooled_share, left=1.0, right=0.0)
        spread = (np.interp(points, self.xs, self.spread(upper)) if np.isfinite(self.between).all()
                  else np.full(points.shape, np.inf))
        return share, _relative_variance(self.pooled_count, share), spread


def _relative_variance(n: int, share: npt.ArrayLike) -> FloatArray:
    """Sampling variance of the log of a tail share seen on ``n`` scores (``(1-a)/(n a)``, Haldane-corrected)."""
    a = np.clip(np.asarray(share, dtype=np.float64), 0.0, 1.0)
    if n <= 0:
        return np.full(a.shape, np.inf)
    return np.maximum(1.0 / (n * a + 0.5) - 1.0 / (n + 0.5), 0.0)


def _weight(spread: FloatArray, variance: FloatArray) -> FloatArray:
    """``rho^2 / (rho^2 + v)``: 1 without a measurable pool (``rho^2`` inf), 0 without own scores (``v`` inf)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        w = spread / (spread + variance)
    w = np.where(np.isinf(spread) & np.isfinite(variance), 1.0, w)
    w = np.where(np.isinf(variance), 0.0, w)
    return np.clip(np.nan_to_num(w, nan=0.0), 0.0, 1.0)


def tail_shares(sample: ScoreSample, xs: npt.ArrayLike) -> FloatArray:
    """Share of the sample strictly above each ``x``."""
    return np.clip(1.0 - np.asarray(sample.cdf(xs), dtype=np.float64), 0.0, 1.0)


def credibility(samples: Mapping[str, ScoreSample], pooled: ScoreSample,
                levels: npt.ArrayLike | None = None, upper: float = 0.95) -> Credibility:
    """Estimate the credibility components on the pooled quantiles at ``levels`` from every tenant's sample.

    At each level the tenants' log tail shares ``y_i`` (Haldane-corrected, sampling variance
    ``v_i = 1/(c_i + 1/2) - 1/(n_i + 1/2)`` for ``c_i`` of ``n_i`` scores above it) scatter around the
    pooled one ``m``; ``tau^2`` solves ``Q(tau^2) = sum (y_i - m)^2 / (v_i + tau^2) = I - 1``
    (Paule-Mandel), so every tenant counts, not mostly the largest; its ``upper`` confidence bound
    solves ``Q = chi^2_{I-1}(1 - upper)`` (Q-profile).
    """
    grid = probability_grid() if levels is None else np.asarray(levels, dtype=np.float64)
    xs = np.maximum.accumulate(np.asarray(pooled.quantile(grid), dtype=np.float64))
    xs[0], xs[-1] = pooled.min, pooled.max
    xs = np.unique(xs)
    pooled_share = tail_shares(pooled, xs)
    used = [s for s in samples.values() if s.count > 0]
    if len(used) < 2:
        inf = np.full_like(xs, np.inf)
        return Credibility(xs, pooled_share, inf, inf, int(pooled.count), len(used))
    counts = np.array([s.count for s in used], dtype=np.float64)[:, None]
    above = counts * np.vstack([tail_shares(s, xs) for s in used])
    y = np.log((above + 0.5) / (counts + 0.5))
    v = np.maximum(1.0 / (above + 0.5) - 1.0 / (counts + 0.5), 1e-12)
    m = np.log((pooled.count * pooled_share + 0.5) / (pooled.count + 0.5))
    d2 = (y - m) ** 2
    dof = len(used) - 1
    between = _q_root(d2, v, float(dof))
    low_q = dof * (1 - 2 / (9 * dof) + NormalDist().inv_cdf(1 - upper) * math.sqrt(2 / (9 * dof))) ** 3
    return Credibility(xs, pooled_share, v.mean(axis=0), between, int(pooled.count), len(used),
                       _q_root(d2, v, max(low_q, 1e-3)))


def _q_root(d2: FloatArray, v: FloatArray, target: float) -> FloatArray:
    """Per level, the ``tau^2 >= 0`` with ``sum_i d2_i / (v_i + tau^2) = target`` (0 when none), by bisection."""

    def excess(tau2: FloatArray) -> FloatArray:
        return np.asarray((d2 / (v + tau2)).sum(axis=0) - target, dtype=np.float64)

    lo, hi = np.zeros(d2.shape[1]), d2.sum(axis=0) / target + 1e-12
    for _ in range(60):
        mid = (lo + hi) / 2
        above_root = excess(mid) > 0
        lo, hi = np.where(above_root, mid, lo), np.where(above_root, hi, mid)
    return np.where(excess(np.zeros(d2.shape[1])) > 0, (lo + hi) / 2, 0.0)


def _own_cdf(sample: ScoreSample, levels: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The tenant-only map's knots ``(u_i, x_i)`` (as :func:`museflow.transform.refit.fit_map` places them)."""
    xs = np.asarray(sample.quantile(levels), dtype=np.float64)
    xs[0], xs[-1] = sample.min, sample.max
    return collapse_ties(levels, np.maximum.accumulate(xs))


def blend_map(tenant_sample: ScoreSample | None, cred: Credibility, reference: ReferenceDistribution, *,
              model: str, model_version: str, tenant: str, intent: str, version: int,
              now_ms: int = 0, source: str = "blended", levels: npt.ArrayLike | None = None) -> QuantileMap:
    """``Q_ref_t(w F_t + (1 - w) F_P)`` on the tenant's own reference (pooled alone when it has no scores).

    Knots sit at the pooled levels and at the tenant's own quantiles at ``levels``; ``F_t`` is the
    tenant-only map's piecewise-linear CDF, so ``w = 1`` gives that map and ``w = 0`` the pooled one.
    """
    where = f"blend_map {model}/{model_version} tenant={tenant} intent={intent}"
    n = 0 if tenant_sample is None else tenant_sample.count
    grid = probability_grid() if levels is None else np.asarray(levels, dtype=np.float64)
    pooled_share = cred.pooled_share
    xs = cred.xs
    if tenant_sample is not None and n > 0:
        own_u, own_x = _own_cdf(tenant_sample, grid)
        xs = np.unique(np.concatenate([cred.xs, own_x]))
        pooled_share, _, spread = cred.prior(xs)
        weight = _weight(spread, _relative_variance(n, tail_shares(tenant_sample, xs)))
        own_fit = 1.0 - np.interp(xs, own_x, own_u, left=0.0, right=1.0)
        share = weight * own_fit + (1.0 - weight) * pooled_share
    else:
        share = pooled_share
    if not xs[-1] > xs[0]:
        raise MapError(f"{where}: every score equals {xs[0]!r}; a constant model cannot be mapped")
    us = np.clip(np.maximum.accumulate(1.0 - share), 0.0, 1.0)
    us[0], us[-1] = 0.0, 1.0
    ys = reference.quantile(us)
    return QuantileMap(model=model, model_version=model_version, tenant=tenant, intent=intent, version=version,
                       reference_name=reference.name, reference_version=reference.version, knots_x=xs,
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

    The estimate of the map's alert rate on the tenant's traffic is ``w r + (1 - w) a_P``: ``r`` the
    evidence's share above the map's cut, ``a_P`` the pooled one, ``w = rho^2 / (rho^2 + v)`` with
    ``v = (1 - s) / (n s)`` the relative variance of ``r`` (``s`` the larger of target and estimate).
    Its relative mean square error ``w^2 v + (1 - w)^2 (rho_up^2 + v_P)``, at the upper bound of the
    tenants' spread, gives the interval and the effective samples. ``holds``: the interval lies
    inside the contract's band; ``breach``: wholly outside; otherwise ``insufficient``. Without
    ``cred`` the evidence stands alone (``w = 1``).
    """
    n = 0 if evidence is None else evidence.count
    needed = contract.samples_needed(target)
    cut = _cut(qmap, threshold)
    own = math.nan
    if evidence is not None and n > 0:
        own = 1.0 if cut == -math.inf else 0.0 if cut == math.inf else float(tail_shares(evidence, [cut])[0])
    if cred is None:
        pooled, pooled_noise, spread, spread_upper = math.nan, math.inf, math.inf, math.inf
    else:
        pooled, pooled_noise, spread = (float(a[0]) for a in cred.prior([cut]))
        spread_upper = float(cred.prior([cut], upper=True)[2][0])
    if n == 0 and cred is None:
        return Judgement(qmap.tenant or "", qmap.intent, threshold, target, math.nan, (math.nan, math.nan), 0, 0.0,
                         needed, 0.0, "insufficient")
    scale = target
    for _ in range(2):
        variance = (1 - scale) / (n * scale) if n > 0 else math.inf
        weight = float(_weight(np.array([spread]), np.array([variance]))[0])
        estimate = own if weight >= 1 else pooled if weight <= 0 else weight * own + (1 - weight) * pooled
        scale = min(max(target, estimate), 1.0 - 1e-12)
    mse = (weight ** 2 * variance if weight > 0 else 0.0) + \
        ((1 - weight) ** 2 * (spread_upper + pooled_noise) if weight < 1 else 0.0)
    half = contract.z * scale * math.sqrt(mse)
    low, high = estimate - half, estimate + half
    verdict = contract.verdict(target, low, high)
    effective = (1 - target) / (target * mse) if mse > 0 else math.inf
    return Judgement(qmap.tenant or "", qmap.intent, threshold, target, estimate, (low, high), n, effective,
                     needed, weight, verdict)


def _cut(qmap: QuantileMap, threshold: float) -> float:
    """The corrected score above which ``qmap`` sends scores strictly above ``threshold`` (±inf: all or none)."""
    xs, ys = qmap.knots_x, qmap.knots_y
    if threshold >= ys[-1]:
        return math.inf
    if threshold < ys[0]:
        return -math.inf
    i = int(np.searchsorted(ys, threshold, side="right"))
    return float(xs[i - 1] + (threshold - ys[i - 1]) / (ys[i] - ys[i - 1]) * (xs[i] - xs[i - 1]))


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
    epoch: int
    upper: float = 0.0
    lower: float = 0.0
    upper_start: float = 0.0
    lower_start: float = 0.0
    seen: int = 0
    alerts: int = 0


@dataclass
class AlertRateWatch:
    """Two-sided Bernoulli CUSUM per (tenant, intent, threshold) on the served (mapped) scores.

    The null is the edge of the contract's band (``p (1 ± tolerance)``), the alternative
    ``p (1 ± shift)``. Each side runs the log-likelihood ratio twice: unreflected from the start
    of the watch (an SPRT: a map that is wrong from promotion is caught after ``h_start``) and
    reflected at 0 (a CUSUM: a later change is caught after :meth:`h_at`). Half of ``alpha`` goes
    to each, split over both sides of ``pairs`` pairs; ``epoch`` is the observations of the CUSUM's
    first epoch (per pair with :meth:`watch`), after which each epoch doubles and spends half of
    what is left, so the level holds for a watch of any length.
    """

    contract: Contract = field(default_factory=Contract)
    shift: float = 0.30
    alpha: float = 0.05
    epoch: int = 1_000_000
    pairs: int = 100
    _state: dict[tuple[str, str, float], _Cusum] = field(default_factory=dict)

    def h_at(self, seen: npt.ArrayLike, epoch: int | None = None) -> FloatArray:
        """The CUSUM threshold for the observation after ``seen`` earlier ones:
        ``ln(4 E pairs / alpha) + 2 (k + 1) ln 2`` in epoch ``k = floor(log2(seen / E + 1))``."""
        e = max(int(self.epoch if epoch is None else epoch), 1)
        k = np.floor(np.log2(np.asarray(seen, dtype=np.float64) / e + 1.0))
        return np.asarray(math.log(4.0 * e * self.pairs / self.alpha) + 2.0 * (k + 1.0) * math.log(2.0),
                          dtype=np.float64)

    @property
    def h_start(self) -> float:
        """``ln(4 pairs / alpha)``: Ville's bound on the SPRT from the start of the watch."""
        return math.log(4.0 * self.pairs / self.alpha)

    def watch(self, tenant: str, intent: str, threshold: float, target: float, epoch: int | None = None) -> None:
        """Start (or restart) watching one pair, e.g. after a promotion; ``epoch``: its CUSUM's first epoch."""
        self._state[(tenant, intent, float(threshold))] = _Cusum(target, self.epoch if epoch is None else epoch)

    def forget(self, tenant: str, intent: str) -> None:
        for key in [k for k in self._state if k[:2] == (tenant, intent)]:
            del self._state[key]

    def watched(self) -> list[tuple[str, str, float]]:
        return sorted(self._state)

    def observe(self, tenant: str, intent: str, mapped: npt.ArrayLike) -> list[Breach]:
        """Feed served scores of one route in arrival order; return the pairs that crossed.

        ``Breach.samples`` counts the observations from the start of the watch to the crossing one;
        the pair's watch restarts after it, with the next batch.
        """
        scores = np.asarray(mapped, dtype=np.float64).ravel()
        out: list[Breach] = []
        if scores.size == 0:
            return out
        for (t, i, tau), state in list(self._state.items()):
            if (t, i) != (tenant, intent):
                continue
            direction = self._update(state, scores > tau)
            if direction is not None:
                out.append(Breach(t, i, tau, state.target, direction, state.alerts / max(state.seen, 1), state.seen))
                self._state[(t, i, tau)] = _Cusum(state.target, state.epoch)
        return out

    def _update(self, state: _Cusum, hits: npt.NDArray[np.bool_]) -> str | None:
        """Advance ``state`` over ``hits`` up to the first crossing, if any, and return its direction."""
        p = state.target
        tol, shift = self.contract.tolerance, max(self.shift, self.contract.tolerance * 1.5)
        up = _llr(min(p * (1 + shift), 0.999), min(p * (1 + tol), 0.999))
        lo = _llr(p * (1 - shift), p * (1 - tol)) if p * (1 - shift) > 0 else (0.0, 0.0)
        inc_up = np.where(hits, up[0], up[1])
        inc_lo = np.where(hits, lo[0], lo[1])
        upper, lower = _cusum(state.upper, inc_up), _cusum(state.lower, inc_lo)
        upper_start, lower_start = state.upper_start + np.cumsum(inc_up), state.lower_start + np.cumsum(inc_lo)
        h, h_start = self.h_at(state.seen + np.arange(hits.size), state.epoch), self.h_start
        above = (upper > h) | (upper_start > h_start)
        below = (lower > h) | (lower_start > h_start)
        crossed = above | below
        end = int(np.argmax(crossed)) + 1 if crossed.any() else hits.size
        state.seen += end
        state.alerts += int(np.count_nonzero(hits[:end]))
        state.upper, state.lower = float(upper[end - 1]), float(lower[end - 1])
        state.upper_start, state.lower_start = float(upper_start[end - 1]), float(lower_start[end - 1])
        if not crossed[end - 1]:
            return None
        return "above" if above[end - 1] else "below"


def _cusum(start: float, increments: FloatArray) -> FloatArray:
    """``S_n = max(0, S_{n-1} + x_n)`` for every ``n`` of a batch at once (``S_n = C_n - min(0, min_j<=n C_j)``)."""
    c = start + np.cumsum(increments)
    return np.asarray(c - np.minimum(0.0, np.minimum.accumulate(c)), dtype=np.float64)


def _llr(p1: float, p0: float) -> tuple[float, float]:
    """Log-likelihood-ratio increments of one Bernoulli observation (alert, no alert)."""
    return math.log(p1 / p0), math.log((1 - p1) / (1 - p0))


def judge_fit(qmap: QuantileMap, threshold: float, target: float, contract: Contract,
              evidence: npt.ArrayLike | None = None) -> Judgement:
    """Judge a map by what it was fitted on, and by later scores of the tenant when there are some.

    A map fitted on ``n`` scores alerts at ``target`` on them by construction; its rate on the
    tenant's traffic has sd ``sqrt(p(1-p)/n)`` (``n``: a blended map's effective samples there).
    Independent ``evidence`` (corrected scores of the tenant seen after the fit, ``m`` of them,
    alerting on a share ``r``) is pooled with it:
    estimate ``(n p + m r) / (n + m)`` on ``n + m`` effective samples.
    """
    n = max(round(qmap.effective_samples(threshold)), 0)
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
    verdict = contract.verdict(target, low, high)
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
