"""Performance before the labels arrive: expected confusion (CBPE), calibration, base rate, a recall gate.

Numpy only. Inputs are *corrected* probabilities ``p`` (after the posterior correction of
:func:`museflow.model.scoring.posterior_correction`) and the *mapped* scores ``s`` of the same events;
an event alerts when ``s > tau``, strictly above, as in :mod:`museflow.observe.performance` and
:mod:`museflow.observe.monitoring`.

**CBPE** (confidence-based performance estimation, as in NannyML). If ``p`` is calibrated, the
label of an event is a Bernoulli(p) draw, so the expected confusion matrix at ``tau`` is
``E[TP] = sum p`` and ``E[FP] = sum (1-p)`` over alerted events, ``E[FN] = sum p`` and
``E[TN] = sum (1-p)`` over the rest; precision, recall and F1 follow from those. A ratio whose
denominator is zero is nan (undefined), never a guess. :class:`EstimateWindow` keeps the sums
per threshold per time bucket (:class:`museflow.observe.window.BucketRing`), so a sliding window is free.

**Calibration.** CBPE is only as good as ``p``. :func:`check_calibration` computes a reliability
curve and the expected calibration error (ECE) on labelled ``(p, y)`` pairs. Fraud rates span
0.1%-5%, so ECE is judged relative to the fraud rate: the estimate is *trustworthy* when
``ECE / mean(y) <= max_relative_ece`` (default :data:`MAX_RELATIVE_ECE`), judged only once the
pairs hold :data:`MIN_POSITIVES` frauds (``bench/cbpe_sim.py`` shows why these defaults).

**Base rate and prior shift.** The mean of ``p`` estimates a tenant's fraud rate only while
the traffic's class prior is the one ``p`` is calibrated for. Under a prior shift (fraud rate
changes, the score distribution of each class does not) Saerens, Latinne & Decaestecker (2002)
re-estimate the prior by EM: with ``pi0`` the prior ``p`` is calibrated for (the *baseline*:
mean ``p`` over earlier traffic), multiply every posterior's odds by
``w = odds(pi) / odds(pi0)``, take the mean adjusted posterior as the new ``pi``, and repeat
until it settles (:func:`em_prior`).

**How this relates to beta.** The posterior correction ``p = beta*q / (beta*q - q + 1)`` is the
same odds multiplication: ``odds(p) = beta * odds(q)``. Down-sampling negatives at rate beta
inflated the training sample's fraud odds by ``1/beta``, a prior shift of *known* size, and the
correction undoes it. EM measures the *unknown* remaining shift of live traffic:
``w = odds(EM prior) / odds(baseline)`` (:attr:`PriorEstimate.odds_ratio`), and the correction
with ``beta * w`` in place of beta would be calibrated for today's traffic (:func:`prior_adjusted`
of the corrected probabilities gives exactly that, also where ``beta * w`` exceeds 1). ``w`` near
1 means no shift; ``w = 2`` means fraud odds doubled, as if beta had been twice as large.

**Gate.** :func:`recall_gate` refuses a candidate whose estimated recall at a tenant's watch
threshold is below the champion's by more than a margin (default :data:`RECALL_MARGIN`);
:func:`scores_by_tenant` takes both models' scores from score-log rows
(:func:`museflow.contracts.scorelog.rows`), on the very same events where the candidate ran in shadow.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from museflow.errors import RefitRefused, ValidationError
from museflow.observe.window import BucketRing

__all__ = ["ECE_BINS", "MAX_RELATIVE_ECE", "MIN_EXPECTED_FRAUDS", "MIN_POSITIVES", "RECALL_MARGIN", "Calibration",
           "EstimateWindow", "Expected", "GateReport", "GateVerdict", "PriorEstimate", "ReliabilityBin",
           "TenantScores", "WindowEstimate", "check_calibration", "combine_estimates", "em_prior",
           "expected_calibration_error", "expected_confusion", "gate_scores", "prior_adjusted", "recall_gate",
           "recall_standard_error", "reliability_curve", "scores_by_tenant"]

FloatArray = npt.NDArray[np.float64]
Strategy = Literal["quantile", "uniform"]

ECE_BINS = 10
"""Reliability bins for ECE: ten equal-mass bins, as NannyML's calibration check uses."""
MAX_RELATIVE_ECE = 0.2
"""ECE bound as a share of the fraud rate: with 300 frauds, calibrated pairs reach 0.15 (p99), a doubled prior 0.30."""
MIN_POSITIVES = 300
"""Labelled frauds needed before a calibration verdict: with 100, noise alone takes calibrated pairs past the bound."""
RECALL_MARGIN = 0.03
"""How much lower (absolute) the candidate's estimated recall may be: 3 standard errors of a few hours of shadow."""
MIN_EXPECTED_FRAUDS = 50.0
"""Expected frauds (sum of p) the gate needs per tenant before it compares recalls."""

_LOGIT_EDGES = 1.0 / (1.0 + np.exp(-np.linspace(-16.0, 16.0, 257)))
"""Histogram edges of p for the streaming EM: even in log-odds, so the tails where fraud lives keep detail."""


def _probabilities(values: npt.ArrayLike, what: str) -> FloatArray:
    p = np.asarray(values, dtype=np.float64).ravel()
    if p.size and not (p.min() >= 0.0 and p.max() <= 1.0):  # NaN fails both comparisons
        raise ValidationError(f"estimate: {what} must be probabilities in [0, 1] without NaN; pass corrected "
                              "scores (after posterior correction), not raw or mapped ones", reason="invalid-score")
    return p


def _paired(corrected: npt.ArrayLike, other: npt.ArrayLike, what: str) -> tuple[FloatArray, FloatArray]:
    p = _probabilities(corrected, "corrected scores")
    o = np.asarray(other, dtype=np.float64).ravel()
    if p.shape != o.shape:
        raise ValidationError(f"estimate: {p.size} corrected scores but {o.size} {what}; they must describe the "
                              "same events in the same order", reason="label-mismatch")
    if o.size and np.isnan(o.sum()) and np.isnan(o).any():  # one cheap sum on the hot path
        raise ValidationError(f"estimate: {what} contain NaN; drop unscored events first", reason="nan-score")
    return p, o


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


@dataclass(frozen=True)
class Expected:
    """Expected confusion counts at one threshold; ratios are nan where their denominator is zero."""

    tp: float
    fp: float
    fn: float
    tn: float

    @classmethod
    def from_sums(cls, n: float, sum_p: float, alerted: float, sum_p_alerted: float) -> Expected:
        """From the four sums a window keeps: events, sum of p, alerted events, sum of p over alerted events."""
        return cls(sum_p_alerted, alerted - sum_p_alerted, sum_p - sum_p_alerted,
                   (n - alerted) - (sum_p - sum_p_alerted))

    def __add__(self, other: Expected) -> Expected:
        return Expected(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @property
    def samples(self) -> float:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def frauds(self) -> float:
        """Expected frauds, ``sum p``."""
        return self.tp + self.fn

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def alert_rate(self) -> float:
        return _ratio(self.tp + self.fp, self.samples)


def expected_confusion(corrected: npt.ArrayLike, mapped: npt.ArrayLike,
                       thresholds: Sequence[float]) -> dict[float, Expected]:
    """CBPE: the expected confusion at each threshold when alerting on ``mapped > tau``."""
    p, s = _paired(corrected, mapped, "mapped scores")
    taus = np.asarray(thresholds, dtype=np.float64)
    alerted = (s[:, None] > taus[None, :]).astype(np.float64)
    n_alerted = alerted.sum(axis=0)
    p_alerted = p @ alerted
    n, sum_p = float(p.size), float(p.sum())
    return {float(tau): Expected.from_sums(n, sum_p, float(n_alerted[k]), float(p_alerted[k]))
            for k, tau in enumerate(taus)}


# --- calibration -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReliabilityBin:
    """One point of a reliability curve: events in the bin, their mean p and their realised fraud rate."""

    count: int
    mean_probability: float
    fraud_rate: float


@dataclass(frozen=True)
class Calibration:
    """Calibration of labelled pairs: ECE, ECE relative to the fraud rate, the curve and the verdict.

    ``trustworthy`` is ``None`` while there are fewer than ``min_positives`` frauds to judge by.
    """

    samples: int
    positives: int
    ece: float
    relative_ece: float
    curve: tuple[ReliabilityBin, ...]
    trustworthy: bool | None

    @property
    def fraud_rate(self) -> float:
        return _ratio(self.positives, self.samples)


def reliability_curve(corrected: npt.ArrayLike, labels: npt.ArrayLike, bins: int = ECE_BINS,
                      strategy: Strategy = "quantile") -> tuple[ReliabilityBin, ...]:
    """Reliability curve: ``quantile`` bins hold equal numbers of events, ``uniform`` bins split [0, 1] evenly.

    Empty bins are left out. Equal-mass bins follow the data into the low scores where most
    events are; for fraud the top bin holds most frauds.
    """
    if bins < 1:
        raise ValueError(f"reliability_curve: bins={bins} must be >= 1")
    p, y = _paired(corrected, labels, "labels")
    if p.size == 0:
        return ()
    order = np.argsort(p, kind="mergesort")
    p, y = p[order], y[order]
    if strategy == "quantile":
        bounds = np.linspace(0, p.size, min(bins, p.size) + 1).round().astype(np.int64)
    elif strategy == "uniform":
        bounds = np.searchsorted(p, np.linspace(0.0, 1.0, bins + 1)[1:-1], side="left")
        bounds = np.concatenate([[0], bounds, [p.size]]).astype(np.int64)
    else:
        raise ValueError(f"reliability_curve: strategy={strategy!r} must be 'quantile' or 'uniform'")
    out = []
    for lo, hi in itertools.pairwise(bounds):
        if hi > lo:
            out.append(ReliabilityBin(int(hi - lo), float(p[lo:hi].mean()), float(y[lo:hi].mean())))
    return tuple(out)


def _ece(curve: Sequence[ReliabilityBin]) -> float:
    n = sum(b.count for b in curve)
    return sum(b.count * abs(b.mean_probability - b.fraud_rate) for b in curve) / n if n else math.nan


def expected_calibration_error(corrected: npt.ArrayLike, labels: npt.ArrayLike, bins: int = ECE_BINS,
                               strategy: Strategy = "quantile") -> float:
    """ECE: the count-weighted mean of ``|mean p - fraud rate|`` over the reliability bins (nan with no pairs)."""
    return _ece(reliability_curve(corrected, labels, bins, strategy))


def check_calibration(corrected: npt.ArrayLike, labels: npt.ArrayLike, *, bins: int = ECE_BINS,
                      strategy: Strategy = "quantile", max_relative_ece: float = MAX_RELATIVE_ECE,
                      min_positives: int = MIN_POSITIVES) -> Calibration:
    """Reliability curve, ECE and the trust verdict ``ECE / fraud rate <= max_relative_ece`` on labelled pairs."""
    curve = reliability_curve(corrected, labels, bins, strategy)
    samples = sum(b.count for b in curve)
    positives = round(sum(b.count * b.fraud_rate for b in curve))
    ece = _ece(curve)
    relative = ece * samples / positives if positives else math.nan
    verdict = None if positives < min_positives else bool(relative <= max_relative_ece)
    return Calibration(samples, positives, ece, relative, curve, verdict)


# --- base rate ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PriorEstimate:
    """A base-rate estimate: EM ``prior``, the plain ``mean`` of p, and the ``baseline`` prior p is calibrated for."""

    prior: float
    mean: float
    baseline: float
    samples: float
    iterations: int
    converged: bool

    @property
    def odds_ratio(self) -> float:
        """``odds(prior) / odds(baseline)``: the prior shift; ``posterior_correction(q, beta * w)`` absorbs it."""
        if not 0.0 < self.baseline < 1.0 or not 0.0 <= self.prior < 1.0:
            return math.nan
        return (self.prior / (1.0 - self.prior)) / (self.baseline / (1.0 - self.baseline))


def prior_adjusted(corrected: npt.ArrayLike, prior_from: float, prior_to: float) -> FloatArray:
    """Posteriors calibrated for prior ``prior_from`` re-expressed for ``prior_to`` (Saerens et al. 2002, eq. 2.4)."""
    if not 0.0 < prior_from < 1.0 or not 0.0 <= prior_to <= 1.0:
        raise ValueError(f"prior_adjusted: prior_from={prior_from} must be in (0, 1), prior_to={prior_to} in [0, 1]")
    p = _probabilities(corrected, "corrected scores")
    a = prior_to / prior_from
    b = (1.0 - prior_to) / (1.0 - prior_from)
    den = a * p + b * (1.0 - p)
    out: FloatArray = np.divide(a * p, den, out=np.zeros_like(p), where=den > 0)
    return out


def em_prior(corrected: npt.ArrayLike, baseline: float, *, weights: npt.ArrayLike | None = None,
             tol: float = 1e-7, max_iter: int = 1000) -> PriorEstimate:
    """Saerens-Latinne-Decaestecker EM: the class prior of traffic whose posteriors are calibrated for ``baseline``.

    ``weights`` lets a histogram stand for its events (bin mean p, weighted by bin count). Stops
    when the prior moves by less than ``tol`` relative to itself, or after ``max_iter`` steps.
    """
    if not 0.0 < baseline < 1.0:
        raise ValueError(f"em_prior: baseline={baseline} must be a prior in (0, 1): the mean p of earlier traffic")
    p = _probabilities(corrected, "corrected scores")
    w = np.ones_like(p) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != p.shape:
        raise ValueError(f"em_prior: {w.size} weights for {p.size} probabilities")
    total = float(w.sum())
    if total <= 0:
        return PriorEstimate(math.nan, math.nan, baseline, 0.0, 0, False)
    mean = float(w @ p) / total
    prior, converged, iterations = baseline, False, 0
    odds0 = baseline / (1.0 - baseline)
    while not converged and iterations < max_iter and 0.0 < prior < 1.0:
        iterations += 1
        ratio = (prior / (1.0 - prior)) / odds0
        new = float(w @ (ratio * p / (ratio * p + (1.0 - p)))) / total
        converged = abs(new - prior) <= tol * max(new, 1e-12)
        prior = new
    return PriorEstimate(prior, mean, baseline, total, iterations, converged)


# --- streaming ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowEstimate:
    """What a window says now: events, expected confusion per threshold, mean p and the EM base rate."""

    samples: int
    expected: dict[float, Expected]
    mean_probability: float
    prior: PriorEstimate | None


def combine_estimates(estimates: Sequence[WindowEstimate]) -> WindowEstimate:
    """One tenant's figures from its routes' windows: expected counts add up, base rates are event-weighted."""
    if not estimates:
        raise ValueError("combine_estimates: nothing to combine")
    expected: dict[float, Expected] = {}
    for estimate in estimates:
        for tau, e in estimate.expected.items():
            expected[tau] = expected[tau] + e if tau in expected else e
    samples = sum(e.samples for e in estimates)
    sum_p = sum(e.samples * e.mean_probability for e in estimates if e.samples)
    priors = [(e.samples, e.prior) for e in estimates if e.prior is not None and e.samples]
    prior = None
    if priors:
        n = float(sum(k for k, _ in priors))
        prior = PriorEstimate(sum(k * q.prior for k, q in priors) / n, sum(k * q.mean for k, q in priors) / n,
                              sum(k * q.baseline for k, q in priors) / n, n,
                              max(q.iterations for _, q in priors), all(q.converged for _, q in priors))
    return WindowEstimate(samples, dict(sorted(expected.items())), _ratio(sum_p, samples), prior)


class EstimateWindow:
    """CBPE sums and a histogram of p per time bucket, plus a longer ring of (events, sum p) for the EM baseline.

    Per bucket: events, sum of p, and per threshold the alerted events and their sum of p, then
    a histogram of p (counts and sums, bins even in log-odds) for EM. The baseline prior is the
    mean p over the ``baseline`` ring *before* the window (all of it while that part holds fewer
    than ``min_samples``), so a shift inside the window is measured against the traffic before it.
    The baseline ring is passed in so it can outlive the window (a new watch threshold rebuilds
    the window, not a day of history); give it ``span`` >= the window's bucket span.
    """

    __slots__ = ("_order", "_sorted", "baseline", "ring", "thresholds")

    def __init__(self, thresholds: Sequence[float], buckets: int, span: float, *, baseline: BucketRing) -> None:
        if baseline.sums.shape[1] != 2:
            raise ValueError("EstimateWindow: the baseline ring holds (events, sum of p): width 2")
        self.thresholds = tuple(float(t) for t in thresholds)
        cuts = np.asarray(self.thresholds, dtype=np.float64)
        self._order = np.argsort(cuts, kind="stable")
        self._sorted = cuts[self._order]
        k, b = len(self.thresholds), _LOGIT_EDGES.size + 1
        self.ring = BucketRing(2 + 2 * k + 2 * b, buckets, span)
        self.baseline = baseline

    def add(self, corrected: npt.ArrayLike, mapped: npt.ArrayLike, now: float) -> None:
        """Add one batch (corrected probabilities and mapped scores of the same events)."""
        p, s = _paired(corrected, mapped, "mapped scores")
        if p.size == 0:
            return
        k, b = len(self.thresholds), _LOGIT_EDGES.size + 1
        below = np.searchsorted(self._sorted, s, side="left")  # thresholds strictly below each score
        count_at = np.bincount(below, minlength=k + 1)
        p_at = np.bincount(below, weights=p, minlength=k + 1)
        bins = np.searchsorted(_LOGIT_EDGES, p, side="right")
        row = np.empty(2 + 2 * k + 2 * b, dtype=np.float64)
        row[0], row[1] = p.size, p_at.sum()
        row[2 + self._order] = np.cumsum(count_at[::-1])[::-1][1:]  # alerted at sorted threshold j: below > j
        row[2 + k + self._order] = np.cumsum(p_at[::-1])[::-1][1:]
        h = 2 + 2 * k
        row[h:h + b] = np.bincount(bins, minlength=b)
        row[h + b:] = np.bincount(bins, weights=p, minlength=b)
        self.ring.add(row, now)
        self.baseline.add(row[:2], now)

    def estimate(self, now: float, min_samples: int = 1) -> WindowEstimate:
        """The window's figures; the EM prior needs ``min_samples`` events in the window and in the baseline."""
        k, b = len(self.thresholds), _LOGIT_EDGES.size + 1
        tot = self.ring.total(now)
        n, sum_p = float(tot[0]), float(tot[1])
        expected = {tau: Expected.from_sums(n, sum_p, float(tot[2 + i]), float(tot[2 + k + i]))
                    for i, tau in enumerate(self.thresholds)}
        prior = None
        base = self.baseline.total(now)
        older = base - tot[:2]
        if older[0] >= min_samples:
            base = older
        if n >= max(min_samples, 1) and base[0] >= min_samples and 0.0 < base[1] < base[0]:
            h = 2 + 2 * k
            counts, sums = tot[h:h + b], tot[h + b:]
            live = counts > 0
            prior = em_prior(np.clip(sums[live] / counts[live], 0.0, 1.0), float(base[1] / base[0]),
                             weights=counts[live])
        return WindowEstimate(int(n), expected, _ratio(sum_p, n), prior)


# --- gate ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TenantScores:
    """One model's scores of one tenant's events: corrected probabilities and mapped scores, aligned.

    ``event_ids`` names the events when known; two sides with the same ids are compared event by event.
    """

    corrected: FloatArray
    mapped: FloatArray
    event_ids: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.corrected.size)


def scores_by_tenant(rows: Iterable[Mapping[str, Any]], champion: tuple[str, str],
                     candidate: tuple[str, str]) -> tuple[dict[str, TenantScores], dict[str, TenantScores]]:
    """Per tenant, the champion's and the candidate's scores from score-log rows (``museflow.contracts.scorelog.rows``).

    Models are ``(model, model_version)``. Where both scored some of a tenant's events (a shadow
    candidate), only those events are kept, so both are judged on the same traffic; where they
    share none (a canary serves its own random share), each keeps its own events.
    """
    found: dict[tuple[str, str], dict[str, dict[str, tuple[float, float]]]] = {champion: {}, candidate: {}}
    for row in rows:
        key = (str(row["model"]), str(row["model_version"]))
        by_tenant = found.get(key)
        if by_tenant is not None:
            by_tenant.setdefault(str(row["tenant"]), {})[str(row["event_id"])] = (
                float(row["corrected_score"]), float(row["score"]))
    out: tuple[dict[str, TenantScores], dict[str, TenantScores]] = ({}, {})
    for tenant in sorted(set(found[champion]) | set(found[candidate])):
        a, b = found[champion].get(tenant, {}), found[candidate].get(tenant, {})
        shared = sorted(a.keys() & b.keys())
        for side, events in zip(out, (a, b), strict=True):
            ids = tuple(shared or sorted(events))
            if ids:
                values = np.array([events[i] for i in ids], dtype=np.float64)
                side[tenant] = TenantScores(values[:, 0].copy(), values[:, 1].copy(), ids)
    return out


def recall_standard_error(champion: TenantScores, candidate: TenantScores, threshold: float) -> float:
    """Standard error of ``candidate recall - champion recall`` (delta method for a ratio of sums over events).

    Event by event when both sides scored the same events (shadow), as independent samples otherwise (canary).
    """
    def influence(scores: TenantScores) -> FloatArray:
        p, s = _paired(scores.corrected, scores.mapped, "mapped scores")
        total = float(p.sum())
        if total <= 0:
            return np.full_like(p, math.nan)
        alerted = (s > threshold).astype(np.float64)
        out: FloatArray = p * (alerted - float(p @ alerted) / total) / total
        return out

    a, b = influence(champion), influence(candidate)
    if champion.event_ids and champion.event_ids == candidate.event_ids:
        return float(np.sqrt(np.sum((b - a) ** 2)))
    return float(np.sqrt(np.sum(a**2) + np.sum(b**2)))


@dataclass(frozen=True)
class GateVerdict:
    """One (tenant, threshold): both estimated recalls, expected frauds, the verdict and why."""

    tenant: str
    threshold: float
    champion_recall: float
    candidate_recall: float
    expected_frauds: float
    standard_error: float
    passed: bool
    reason: str

    @property
    def delta(self) -> float:
        return self.candidate_recall - self.champion_recall


@dataclass(frozen=True)
class GateReport:
    """Every verdict of a promotion gate; the gate passes only when every verdict does."""

    margin: float
    verdicts: tuple[GateVerdict, ...]

    @property
    def passed(self) -> bool:
        return bool(self.verdicts) and all(v.passed for v in self.verdicts)

    @property
    def refused(self) -> tuple[GateVerdict, ...]:
        return tuple(v for v in self.verdicts if not v.passed)

    def table(self) -> str:
        """A plain-text table, one line per (tenant, threshold)."""
        lines = [f"{'tenant':<16} {'threshold':>9} {'champion':>8} {'candidate':>9} {'delta':>7} {'se':>6} "
                 f"{'E[frauds]':>9}  verdict"]
        for v in self.verdicts:
            lines.append(f"{v.tenant:<16} {v.threshold:>9.4g} {v.champion_recall:>8.3f} {v.candidate_recall:>9.3f} "
                         f"{v.delta:>+7.3f} {v.standard_error:>6.3f} {v.expected_frauds:>9.1f}  "
                         f"{'pass' if v.passed else 'REFUSE'} ({v.reason})")
        return "\n".join(lines)

    def raise_if_refused(self) -> None:
        """Raise :class:`museflow.errors.RefitRefused` naming every refused (tenant, threshold)."""
        if not self.passed:
            detail = "; ".join(f"{v.tenant} > {v.threshold:g}: {v.reason}" for v in self.refused) or "no tenants"
            raise RefitRefused(f"promotion refused on estimated recall (margin {self.margin:g}): {detail}")


def recall_gate(champion: Mapping[tuple[str, float], Expected], candidate: Mapping[tuple[str, float], Expected], *,
                margin: float = RECALL_MARGIN, min_expected_frauds: float = MIN_EXPECTED_FRAUDS,
                standard_errors: Mapping[tuple[str, float], float] | None = None) -> GateReport:
    """Refuse a (tenant, threshold) where the candidate's estimated recall < champion's - ``margin``.

    Keys are the champion's (tenant, threshold) pairs. Reasons: ``recall-drop``; ``missing-candidate``
    (no estimate for the pair); ``insufficient-data`` (fewer than ``min_expected_frauds`` expected
    frauds on either side, or a standard error of the difference above ``margin``: the comparison
    cannot resolve the margin, so shadow longer); ``undefined`` (a recall is nan); ``ok``.
    """
    errors = standard_errors or {}
    verdicts = []
    for tenant, tau in sorted(champion):
        mine = champion[(tenant, tau)]
        theirs = candidate.get((tenant, tau))
        se = errors.get((tenant, tau), math.nan)
        if theirs is None:
            verdicts.append(GateVerdict(tenant, tau, mine.recall, math.nan, 0.0, se, False, "missing-candidate"))
            continue
        a, b = mine.recall, theirs.recall
        if min(mine.frauds, theirs.frauds) < min_expected_frauds:
            passed, reason = False, "insufficient-data"
        elif math.isnan(a) or math.isnan(b):
            passed, reason = False, "undefined"
        elif b < a - margin:
            passed, reason = False, "recall-drop"
        elif se > margin:
            passed, reason = False, "insufficient-data"
        else:
            passed, reason = True, "ok"
        verdicts.append(GateVerdict(tenant, tau, a, b, theirs.frauds, se, passed, reason))
    return GateReport(float(margin), tuple(verdicts))


def gate_scores(champion: Mapping[str, TenantScores], candidate: Mapping[str, TenantScores],
                thresholds: Mapping[str, Sequence[float]], *, margin: float = RECALL_MARGIN,
                min_expected_frauds: float = MIN_EXPECTED_FRAUDS) -> GateReport:
    """:func:`recall_gate` on scores per tenant (see :func:`scores_by_tenant`) at each tenant's watch thresholds.

    ``thresholds`` maps each tenant to gate to its watch thresholds; a tenant the champion has no
    scores for is refused as ``insufficient-data``, one the candidate lacks as ``missing-candidate``.
    """
    mine: dict[tuple[str, float], Expected] = {}
    theirs: dict[tuple[str, float], Expected] = {}
    errors: dict[tuple[str, float], float] = {}
    empty = Expected(0.0, 0.0, 0.0, 0.0)
    for tenant, taus in thresholds.items():
        a, b = champion.get(tenant), candidate.get(tenant)
        found = expected_confusion(a.corrected, a.mapped, taus) if a is not None else {}
        for tau in taus:
            mine[(tenant, float(tau))] = found.get(float(tau), empty)
        if b is None:
            continue
        theirs.update({(tenant, tau): e for tau, e in expected_confusion(b.corrected, b.mapped, taus).items()})
        if a is not None:
            errors.update({(tenant, float(tau)): recall_standard_error(a, b, float(tau)) for tau in taus})
    return recall_gate(mine, theirs, margin=margin, min_expected_frauds=min_expected_frauds, standard_errors=errors)
