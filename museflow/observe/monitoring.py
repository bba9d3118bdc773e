"""Per-tenant score monitoring on the scorer's hot path: alert rates at watch thresholds and drift.

The scorer calls :meth:`ScoreMonitor.observe` once per batch. Each tenant keeps a ring of time
buckets of *fine* bin counts: the fine edges are the union of the reference's drift bin edges
(:class:`museflow.observe.drift.DriftBins`) and the watch thresholds, so one ``searchsorted`` and one
``bincount`` per batch feed both the drift histogram and the counts above every threshold
(mapped and raw). The gauges ``museflow_alert_rate``, ``museflow_score_drift_psi`` and
``museflow_score_drift_js`` are recomputed from the window at most every
``publish_interval_seconds``, with :func:`museflow.observe.drift.psi` and :func:`museflow.observe.drift.jensen_shannon`.

When the caller also passes the events' corrected probabilities (``observe(..., corrected=p)``),
an :class:`museflow.observe.estimate.EstimateWindow` beside the bin counts keeps the CBPE sums, so the
same publication sets ``museflow_estimated_{precision,recall,f1,alert_rate}`` per tenant and
threshold (expected counts of the tenant's routes added up), ``museflow_estimated_frauds`` and
``museflow_estimated_base_rate`` (mean p, Saerens EM, and the baseline EM is measured against:
the mean p over ``baseline_seconds`` before the window, kept per route across window rebuilds).
An undefined estimate (precision with no alerts) removes its series instead of exporting NaN.
Shadow and canary candidates get their own estimate (``observe_candidate``: the events each
scored, mapped with its own map), exported as ``museflow_candidate_estimated_{precision,recall}``
per tenant, model and threshold.

A score counts as an alert when strictly above a threshold (thresholds are placed at
``nextafter(tau, +inf)``, and a score equal to an edge falls in the bin above), the same
convention as :mod:`museflow.observe.performance` and :func:`museflow.observe.drift.alert_rates`.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from museflow.observe.drift import DEFAULT_EPSILON, DriftBins, jensen_shannon, psi
from museflow.observe.estimate import EstimateWindow, WindowEstimate, combine_estimates
from museflow.observe.metrics import PipelineMetrics
from museflow.observe.window import BucketRing
from museflow.transform.reference import ReferenceDistribution

__all__ = ["ScoreMonitor", "TenantScoreStats", "threshold_label"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def threshold_label(threshold: float) -> str:
    """The ``threshold`` label value of a watch threshold: shortest round-tripping form (``0.995``)."""
    return repr(float(threshold))


@dataclass(frozen=True)
class TenantScoreStats:
    """What the window of one tenant says right now (rates are nan when the window is empty).

    ``estimate`` holds the label-free estimates when the route's batches came with corrected probabilities.
    """

    count: int
    mapped_alert_rates: dict[float, float]
    raw_alert_rates: dict[float, float]
    psi: float
    js: float
    estimate: WindowEstimate | None = None


class _TenantWindow:
    """Sliding-window state of one tenant for one (thresholds, reference) configuration."""

    __slots__ = ("bins", "drift_index", "estimates", "fine_edges", "key", "mapped", "mapped_above", "raw",
                 "raw_edges", "seen", "thresholds")

    def __init__(self, key: tuple[str, int] | None, thresholds: tuple[float, ...], bins: DriftBins | None,
                 buckets: int, span: float) -> None:
        self.key = key
        self.thresholds = thresholds
        self.seen: set[tuple[float, ...]] = set()
        self.bins = bins
        cuts = np.nextafter(np.asarray(thresholds, dtype=np.float64), np.inf)
        drift_edges = bins.edges if bins is not None else np.empty(0)
        self.fine_edges: FloatArray = np.unique(np.concatenate([drift_edges, cuts]))
        self.raw_edges: FloatArray = np.unique(cuts)
        lower = np.concatenate([[-np.inf], self.fine_edges])  # lower bound of fine bin i
        self.drift_index: IntArray = np.searchsorted(drift_edges, lower, side="right").astype(np.int64)
        self.mapped_above = lower[None, :] >= cuts[:, None]  # threshold k x fine bin i
        self.mapped = BucketRing(self.fine_edges.size + 1, buckets, span, np.int64)
        self.raw = BucketRing(self.raw_edges.size + 1, buckets, span, np.int64)
        self.estimates: EstimateWindow | None = None

    def add(self, mapped: FloatArray, raw: FloatArray, now: float) -> None:
        fine = np.searchsorted(self.fine_edges, mapped, side="right")
        self.mapped.add(np.bincount(fine, minlength=self.fine_edges.size + 1), now)
        if raw.size:
            bins = np.searchsorted(self.raw_edges, raw, side="right")
            self.raw.add(np.bincount(bins, minlength=self.raw_edges.size + 1), now)

    def stats(self, now: float, epsilon: float, min_samples: int = 1) -> TenantScoreStats:
        fine = self.mapped.total(now)
        n = int(fine.sum())
        raw = self.raw.total(now)
        n_raw = int(raw.sum())
        mapped_rates: dict[float, float] = {}
        raw_rates: dict[float, float] = {}
        raw_lower = np.concatenate([[-np.inf], self.raw_edges])
        for k, tau in enumerate(self.thresholds):
            above = int(fine[self.mapped_above[k]].sum())
            mapped_rates[tau] = above / n if n else math.nan
            cut = np.nextafter(tau, np.inf)
            raw_above = int(raw[raw_lower >= cut].sum())
            raw_rates[tau] = raw_above / n_raw if n_raw else math.nan
        drift_psi = drift_js = math.nan
        if self.bins is not None and n:
            counts = np.bincount(self.drift_index, weights=fine, minlength=self.bins.size)
            drift_psi = psi(counts, self.bins.expected, epsilon)
            drift_js = jensen_shannon(counts, self.bins.expected, epsilon)
        estimate = self.estimates.estimate(now, min_samples) if self.estimates is not None else None
        return TenantScoreStats(n, mapped_rates, raw_rates, drift_psi, drift_js, estimate)


class ScoreMonitor:
    """Sliding-window alert rates (mapped and raw) and drift of mapped scores, per tenant.

    ``observe`` is the hot path (a few numpy calls per batch); gauges are refreshed at most every
    ``publish_interval_seconds`` from inside ``observe`` or by calling :meth:`publish`. Drift is
    published once the window holds ``min_drift_samples`` scores; below that PSI is mostly noise.
    The EM base rate needs as many in the window and in the ``baseline_seconds`` before it.
    """

    def __init__(self, metrics: PipelineMetrics, window_seconds: float = 600.0, *, buckets: int = 10,
                 publish_interval_seconds: float = 5.0, min_drift_samples: int = 100,
                 epsilon: float = DEFAULT_EPSILON, clock: Callable[[], float] = time.monotonic,
                 publish_on_scrape: bool = True, baseline_seconds: float = 86400.0) -> None:
        if not window_seconds > 0 or buckets < 1:
            raise ValueError(f"ScoreMonitor(window_seconds={window_seconds}, buckets={buckets}) needs both > 0")
        if not baseline_seconds >= window_seconds:
            raise ValueError(f"ScoreMonitor(baseline_seconds={baseline_seconds}) must cover at least the window "
                             f"({window_seconds} s)")
        self.metrics = metrics
        self.window_seconds = float(window_seconds)
        self.publish_interval_seconds = float(publish_interval_seconds)
        self.min_drift_samples = int(min_drift_samples)
        self._buckets = int(buckets)
        self._span = self.window_seconds / self._buckets
        self._epsilon = epsilon
        self._clock = clock
        self._tenants: dict[tuple[str, str], _TenantWindow] = {}
        self._bins: dict[tuple[str, int], DriftBins] = {}
        self._published: dict[str, tuple[str, ...]] = {}
        self._estimated: dict[str, tuple[str, ...]] = {}
        self._baseline_buckets = max(1, math.ceil(baseline_seconds / self.window_seconds))
        self._baselines: dict[tuple[str, str], BucketRing] = {}
        self._candidates: dict[tuple[str, str, str], EstimateWindow] = {}
        self._candidates_shown: dict[tuple[str, str], tuple[str, ...]] = {}
        self._next_publish = clock() + self.publish_interval_seconds
        self._lock = threading.Lock()
        if publish_on_scrape:
            metrics.registry.register(_PublishWhenDue(self))  # type: ignore[arg-type]

    def observe(self, tenant: str, mapped_scores: npt.ArrayLike, raw_scores: npt.ArrayLike,
                watch_thresholds: Sequence[float], reference: ReferenceDistribution | None,
                intent: str = "", *, corrected: npt.ArrayLike | None = None) -> None:
        """Add one batch of a tenant's served scores (mapped onto its reference, and raw model output).

        ``corrected``: the same events' probabilities after posterior correction, aligned with
        ``mapped_scores``; when given, they feed the label-free estimates (CBPE and base rate).
        """
        now = self._clock()
        mapped = np.asarray(mapped_scores, dtype=np.float64).ravel()
        with self._lock:
            window = self._window(tenant, watch_thresholds, reference, intent)
            window.add(mapped, np.asarray(raw_scores, dtype=np.float64).ravel(), now)
            if corrected is not None:
                if window.estimates is None:
                    window.estimates = EstimateWindow(window.thresholds, self._buckets, self._span,
                                                      baseline=self._baseline(tenant, intent))
                window.estimates.add(corrected, mapped, now)
        if now >= self._next_publish:
            self.publish(now)

    def observe_candidate(self, tenant: str, intent: str, model: str, mapped_scores: npt.ArrayLike,
                          corrected: npt.ArrayLike, watch_thresholds: Sequence[float]) -> None:
        """Add one batch of a shadow or canary candidate's scores (its own map) for its CBPE estimate."""
        if not watch_thresholds:
            return
        now = self._clock()
        taus = tuple(sorted(float(t) for t in watch_thresholds))
        with self._lock:
            window = self._candidates.get((tenant, intent, model))
            if window is None or window.thresholds != taus:
                window = self._candidates[(tenant, intent, model)] = EstimateWindow(
                    taus, self._buckets, self._span, baseline=BucketRing(2, 1, self.window_seconds))
            window.add(corrected, mapped_scores, now)

    def candidate_estimate(self, tenant: str, model: str, now: float | None = None) -> WindowEstimate | None:
        """A candidate's estimate over the tenant's routes it scores on, or None without scores in the window."""
        now = self._clock() if now is None else now
        found = [w.estimate(now) for (t, _, m), w in self._candidates.items() if (t, m) == (tenant, model)]
        found = [e for e in found if e.samples > 0]
        return combine_estimates(found) if found else None

    def _publish_candidates(self, now: float) -> None:
        m = self.metrics
        shown: dict[tuple[str, str], tuple[str, ...]] = {}
        for tenant, model in sorted({(t, mo) for t, _, mo in self._candidates}):
            estimate = self.candidate_estimate(tenant, model, now)
            label = m.tenant_label(tenant)
            if estimate is None:
                for key in [k for k in self._candidates if (k[0], k[2]) == (tenant, model)]:
                    del self._candidates[key]  # no scores left in the window: the candidate is gone
                continue
            texts = []
            for tau, expected in estimate.expected.items():
                text = threshold_label(tau)
                texts.append(text)
                _set(m.candidate_estimated_precision, (label, model, text), expected.precision)
                _set(m.candidate_estimated_recall, (label, model, text), expected.recall)
            shown[(label, model)] = tuple(texts)
        for (label, model), gone in self._candidates_shown.items():
            for text in gone:
                if text not in shown.get((label, model), ()):
                    for gauge in (m.candidate_estimated_precision, m.candidate_estimated_recall):
                        _set(gauge, (label, model, text), math.nan)
        self._candidates_shown = shown

    def _baseline(self, tenant: str, intent: str) -> BucketRing:
        """The route's (events, sum of p) over ``baseline_seconds``, in buckets of one window."""
        ring = self._baselines.get((tenant, intent))
        if ring is None:
            ring = self._baselines[(tenant, intent)] = BucketRing(2, self._baseline_buckets, self.window_seconds)
        return ring

    def publish_if_due(self) -> None:
        """Publish when the interval has passed (scrapes call it, so gauges age out without traffic)."""
        now = self._clock()
        if now >= self._next_publish:
            self.publish(now)

    def _window(self, tenant: str, watch_thresholds: Sequence[float],
                reference: ReferenceDistribution | None, intent: str = "") -> _TenantWindow:
        """The window of one route (tenant, intent); gauges are published per tenant over its routes.

        A threshold seen for the first time rebuilds the window (history restarts once); a new
        reference for the route restarts it. Intents of one tenant on different references keep
        separate windows instead of resetting each other.
        """
        thresholds = tuple(watch_thresholds)
        ref_key = (reference.name, reference.version) if reference is not None else None
        window = self._tenants.get((tenant, intent))
        if window is not None and window.key == ref_key:
            if thresholds in window.seen:
                return window
            if set(thresholds) <= set(window.thresholds):
                window.seen.add(thresholds)
                return window
        bins = None
        if reference is not None and ref_key is not None:
            bins = self._bins.get(ref_key)
            if bins is None:
                bins = self._bins[ref_key] = DriftBins.from_reference(reference)
        wanted = {float(t) for t in thresholds}
        if window is not None and window.key == ref_key:
            wanted |= set(window.thresholds)
        window = _TenantWindow(ref_key, tuple(sorted(wanted)), bins, self._buckets, self._span)
        window.seen.add(thresholds)
        self._tenants[(tenant, intent)] = window
        return window

    def _windows_of(self, tenant: str, now: float) -> list[tuple[_TenantWindow, TenantScoreStats]]:
        """The tenant's windows with their figures, fewest samples first (the busiest one wins ties)."""
        found = [(w, w.stats(now, self._epsilon, self.min_drift_samples))
                 for (t, _), w in self._tenants.items() if t == tenant]
        return sorted(found, key=lambda pair: pair[1].count)

    def stats(self, tenant: str, now: float | None = None) -> TenantScoreStats | None:
        """The tenant's current window figures, or ``None`` for a tenant never observed."""
        windows = self._windows_of(tenant, self._clock() if now is None else now)
        return windows[-1][1] if windows else None

    def estimate(self, tenant: str, now: float | None = None) -> WindowEstimate | None:
        """The tenant's label-free estimates over all its routes (expected counts added), or ``None`` without any."""
        windows = self._windows_of(tenant, self._clock() if now is None else now)
        found = [st.estimate for _, st in windows if st.estimate is not None and st.estimate.samples > 0]
        return combine_estimates(found) if found else None

    def publish(self, now: float | None = None) -> None:
        """Recompute every tenant's gauges from its window; a tenant whose window emptied loses its series."""
        now = self._clock() if now is None else now
        with self._lock:
            self._publish(now)

    def _publish(self, now: float) -> None:
        self._next_publish = now + self.publish_interval_seconds
        m = self.metrics
        for tenant in sorted({t for t, _ in self._tenants}):
            label = m.tenant_label(tenant)
            windows = [(w, st) for w, st in self._windows_of(tenant, now) if st.count > 0]
            shown = tuple(sorted({threshold_label(t) for w, _ in windows for t in w.thresholds}))
            self._retire(label, shown)
            if not windows:
                self._retire(label, ())
                continue
            self._published[label] = shown
            for window, stats in windows:
                for tau in window.thresholds:
                    text = threshold_label(tau)
                    m.alert_rate.labels(label, text, "mapped").set(stats.mapped_alert_rates[tau])
                    raw_rate = stats.raw_alert_rates[tau]
                    if not math.isnan(raw_rate):
                        m.alert_rate.labels(label, text, "raw").set(raw_rate)
            window, stats = windows[-1]
            if window.bins is not None and stats.count >= self.min_drift_samples:
                m.drift_psi.labels(label).set(stats.psi)
                m.drift_js.labels(label).set(stats.js)
            found = [st.estimate for _, st in windows if st.estimate is not None and st.estimate.samples > 0]
            self._publish_estimate(label, combine_estimates(found) if found else None)
        self._publish_candidates(now)

    def _publish_estimate(self, label: str, estimate: WindowEstimate | None) -> None:
        """Set (or retire) one tenant's label-free gauges; an undefined value removes its series."""
        m = self.metrics
        shown = tuple(sorted(threshold_label(t) for t in estimate.expected)) if estimate is not None else ()
        for text in self._estimated.get(label, ()):
            if text not in shown:
                for gauge in (m.estimated_precision, m.estimated_recall, m.estimated_f1, m.estimated_alert_rate):
                    _set(gauge, (label, text), math.nan)
        if estimate is None:
            self._estimated.pop(label, None)
            _set(m.estimated_frauds, (label,), math.nan)
            for method in ("mean", "em", "baseline"):
                _set(m.estimated_base_rate, (label, method), math.nan)
            return
        self._estimated[label] = shown
        for tau, expected in estimate.expected.items():
            text = threshold_label(tau)
            _set(m.estimated_precision, (label, text), expected.precision)
            _set(m.estimated_recall, (label, text), expected.recall)
            _set(m.estimated_f1, (label, text), expected.f1)
            _set(m.estimated_alert_rate, (label, text), expected.alert_rate)
        _set(m.estimated_frauds, (label,), estimate.samples * estimate.mean_probability)
        _set(m.estimated_base_rate, (label, "mean"), estimate.mean_probability)
        prior = estimate.prior
        _set(m.estimated_base_rate, (label, "em"), prior.prior if prior is not None else math.nan)
        _set(m.estimated_base_rate, (label, "baseline"), prior.baseline if prior is not None else math.nan)

    def _retire(self, label: str, keep: tuple[str, ...]) -> None:
        """Remove series of thresholds no longer watched (all of them, and drift, when ``keep`` is empty)."""
        m = self.metrics
        for text in self._published.get(label, ()):
            if text in keep:
                continue
            for kind in ("mapped", "raw"):
                with contextlib.suppress(KeyError):
                    m.alert_rate.remove(label, text, kind)
        if not keep:
            self._published.pop(label, None)
            for gauge in (m.drift_psi, m.drift_js):
                with contextlib.suppress(KeyError):
                    gauge.remove(label)
            self._publish_estimate(label, None)


def _set(gauge: Any, labels: tuple[str, ...], value: float) -> None:
    """Set a gauge child, or remove it when the value is undefined (NaN would poison averages over time)."""
    if math.isnan(value):
        with contextlib.suppress(KeyError):
            gauge.remove(*labels)
    else:
        gauge.labels(*labels).set(value)


class _PublishWhenDue:
    """A collector that yields nothing and lets a scrape refresh the gauges (seen from the next scrape on)."""

    def __init__(self, monitor: ScoreMonitor) -> None:
        self._monitor = monitor

    def describe(self) -> list[object]:
        return []

    def collect(self) -> list[object]:
        self._monitor.publish_if_due()
        return []
