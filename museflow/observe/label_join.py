"""Delayed ground truth joined back to served scores by ``event_id``, and the performance it reveals.

:class:`LabelJoin` is the pure core of the label-join role. Scores and labels may arrive in
either order, days apart: whichever comes first waits in one bounded store (an ordered dict in
arrival order) until its partner arrives, the join window passes, or ``max_entries`` forces the
oldest out. Evicted scores that never got a label, and labels whose score never came, are
counted per tenant. A joined pair stays in the store (marked labelled) until the window passes,
so duplicates from at-least-once delivery are recognised and the unlabelled fraction is the
share of the window's scores still waiting for ground truth.

Joined ``(score, is_fraud)`` pairs go to a fixed-size ring per (tenant, cohort) and per tenant
(cohort ``_all``); :class:`LabelMetrics` computes precision, recall and F1 at each watch threshold
and AUC from those rings with :mod:`museflow.observe.performance`, and the realised fraud rate. When the
score came with its corrected probability (``add_score(..., corrected=p)``), the ring keeps it too
and the calibration the label-free estimates rest on is checked where the labels land:
:func:`museflow.observe.estimate.check_calibration` gives ECE and the trust verdict per (tenant, cohort).
The cohort is the label's own cohort when the labeller gives one, otherwise the score's intent;
at most ``max_cohorts`` per tenant, the rest are ``_other``.

Time is the records' own time (score: event time; label: label time) held as a high-water mark,
so a replay of the topics rebuilds the same state; callers clamp it to the wall clock.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge

from museflow.observe.estimate import Calibration, check_calibration
from museflow.observe.monitoring import threshold_label
from museflow.observe.performance import auc, confusion_at

__all__ = ["ALL_COHORTS", "OTHER_COHORT", "Joined", "LabelJoin", "LabelMetrics", "Performance"]

ALL_COHORTS = "_all"
OTHER_COHORT = "_other"


@dataclass(frozen=True)
class Joined:
    """A score and its ground truth, matched by event id."""

    event_id: str
    tenant: str
    cohort: str
    score: float
    is_fraud: bool
    corrected: float = math.nan


class _Entry:
    __slots__ = ("cohort", "corrected", "is_fraud", "score", "tenant", "ts")

    def __init__(self, tenant: str, cohort: str | None, score: float | None, is_fraud: bool | None,
                 ts: float, corrected: float = math.nan) -> None:
        self.tenant = tenant
        self.cohort = cohort
        self.score = score
        self.is_fraud = is_fraud
        self.ts = ts
        self.corrected = corrected


class _Pairs:
    """The latest ``capacity`` joined (score, label, corrected probability) of one (tenant, cohort)."""

    __slots__ = ("_corrected", "_labels", "_next", "_scores", "capacity", "size")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._scores = np.empty(min(capacity, 1024), dtype=np.float64)
        self._labels = np.empty(min(capacity, 1024), dtype=np.bool_)
        self._corrected = np.empty(min(capacity, 1024), dtype=np.float64)
        self._next = 0
        self.size = 0

    def add(self, score: float, is_fraud: bool, corrected: float = math.nan) -> None:
        if self._next >= self._scores.size and self._scores.size < self.capacity:
            grown = min(self.capacity, self._scores.size * 2)
            self._scores = np.resize(self._scores, grown)
            self._labels = np.resize(self._labels, grown)
            self._corrected = np.resize(self._corrected, grown)
        i = self._next % self.capacity
        self._scores[i] = score
        self._labels[i] = is_fraud
        self._corrected[i] = corrected
        self._next = i + 1
        self.size = min(self.size + 1, self.capacity)

    def arrays(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        return self._scores[: self.size], self._labels[: self.size]

    def corrected(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        """The pairs that came with a corrected probability: (p, is_fraud)."""
        p, y = self._corrected[: self.size], self._labels[: self.size]
        known = ~np.isnan(p)
        return p[known], y[known]


@dataclass(frozen=True)
class Performance:
    """Labelled performance of one (tenant, cohort): per threshold (precision, recall, F1), AUC, calibration.

    ``calibration`` is ``None`` when no joined score came with its corrected probability.
    """

    samples: int
    positives: int
    at_threshold: dict[float, tuple[float, float, float]]
    auc: float
    calibration: Calibration | None = None

    @property
    def fraud_rate(self) -> float:
        """The realised fraud rate of the labelled scores."""
        return self.positives / self.samples if self.samples else math.nan


class LabelJoin:
    """Bounded join of served scores and delayed labels by event id (see the module docstring)."""

    def __init__(self, window_seconds: float = 30 * 86400.0, max_entries: int = 500_000, *,
                 history: int = 100_000, max_cohorts: int = 16) -> None:
        if not window_seconds > 0 or max_entries < 1 or history < 1 or max_cohorts < 1:
            raise ValueError(f"LabelJoin(window_seconds={window_seconds}, max_entries={max_entries}, "
                             f"history={history}, max_cohorts={max_cohorts}) needs all > 0")
        self.window_seconds = float(window_seconds)
        self.max_entries = int(max_entries)
        self.history = int(history)
        self.max_cohorts = int(max_cohorts)
        self.now = -math.inf
        self._store: OrderedDict[str, _Entry] = OrderedDict()
        self._pairs: dict[tuple[str, str], _Pairs] = {}
        self._cohorts: dict[str, set[str]] = {}
        self.scores_waiting: dict[str, int] = {}
        self.scores_in_window: dict[str, int] = {}
        self.labels_waiting = 0
        self.joined: dict[str, int] = {}
        self.evicted_unlabelled: dict[str, int] = {}
        self.evicted_labels: dict[str, int] = {}
        self.duplicates = 0

    def __len__(self) -> int:
        return len(self._store)

    def add_score(self, event_id: str, tenant: str, score: float, ts: float, *, cohort: str = "",
                  corrected: float | None = None) -> Joined | None:
        """A served score (and its corrected probability, for the calibration check); the join if its label waited."""
        self._advance(ts)
        entry = self._store.get(event_id)
        if entry is not None and entry.score is not None:
            self.duplicates += 1
            return None
        self.scores_in_window[tenant] = self.scores_in_window.get(tenant, 0) + 1
        p = math.nan if corrected is None else float(corrected)
        if entry is None:
            self._store[event_id] = _Entry(tenant, cohort, float(score), None, ts, p)
            self.scores_waiting[tenant] = self.scores_waiting.get(tenant, 0) + 1
            self._bound()
            return None
        self.labels_waiting -= 1
        entry.score = float(score)
        entry.corrected = p
        entry.tenant = tenant
        entry.cohort = entry.cohort or cohort
        entry.ts = ts
        self._store.move_to_end(event_id)
        return self._record(event_id, entry)

    def add_label(self, event_id: str, is_fraud: bool, ts: float, *, tenant: str = "",
                  cohort: str | None = None) -> Joined | None:
        """A label; returns the join when its score was already waiting."""
        self._advance(ts)
        entry = self._store.get(event_id)
        if entry is not None and entry.is_fraud is not None:
            self.duplicates += 1
            return None
        if entry is None:
            self._store[event_id] = _Entry(tenant, cohort, None, bool(is_fraud), ts)
            self.labels_waiting += 1
            self._bound()
            return None
        entry.is_fraud = bool(is_fraud)
        if cohort:
            entry.cohort = cohort
        self.scores_waiting[entry.tenant] -= 1
        return self._record(event_id, entry)

    def _record(self, event_id: str, entry: _Entry) -> Joined:
        assert entry.score is not None and entry.is_fraud is not None
        tenant = entry.tenant
        cohort = self._cohort(tenant, entry.cohort or "")
        for key in ((tenant, cohort), (tenant, ALL_COHORTS)):
            pairs = self._pairs.get(key)
            if pairs is None:
                pairs = self._pairs[key] = _Pairs(self.history)
            pairs.add(entry.score, entry.is_fraud, entry.corrected)
        self.joined[tenant] = self.joined.get(tenant, 0) + 1
        return Joined(event_id, tenant, cohort, entry.score, entry.is_fraud, entry.corrected)

    def _cohort(self, tenant: str, cohort: str) -> str:
        cohort = cohort or OTHER_COHORT
        known = self._cohorts.setdefault(tenant, set())
        if cohort in known:
            return cohort
        if len(known) < self.max_cohorts:
            known.add(cohort)
            return cohort
        return OTHER_COHORT

    def _advance(self, ts: float) -> None:
        if ts > self.now:
            self.now = ts
        self.expire()

    def expire(self, now: float | None = None) -> None:
        """Evict entries older than the window (``now`` moves the high-water mark forward first)."""
        if now is not None and now > self.now:
            self.now = now
        horizon = self.now - self.window_seconds
        store = self._store
        while store:
            event_id, entry = next(iter(store.items()))
            if entry.ts >= horizon:
                break
            self._evict(event_id)

    def _bound(self) -> None:
        while len(self._store) > self.max_entries:
            self._evict(next(iter(self._store)))

    def _evict(self, event_id: str) -> None:
        entry = self._store.pop(event_id)
        if entry.score is None:
            self.labels_waiting -= 1
            self.evicted_labels[entry.tenant] = self.evicted_labels.get(entry.tenant, 0) + 1
            return
        self.scores_in_window[entry.tenant] -= 1
        if entry.is_fraud is None:
            self.scores_waiting[entry.tenant] -= 1
            self.evicted_unlabelled[entry.tenant] = self.evicted_unlabelled.get(entry.tenant, 0) + 1

    def unlabelled_fraction(self, tenant: str) -> float:
        """Share of the tenant's scores in the window still waiting for a label (nan with none)."""
        total = self.scores_in_window.get(tenant, 0)
        return self.scores_waiting.get(tenant, 0) / total if total else math.nan

    def tenants(self) -> set[str]:
        return set(self.scores_in_window) | {t for t, _ in self._pairs}

    def cohorts(self) -> Iterator[tuple[str, str]]:
        """Every (tenant, cohort) with joined pairs, ``_all`` included."""
        yield from sorted(self._pairs)

    def performance(self, tenant: str, cohort: str, thresholds: Sequence[float]) -> Performance | None:
        """Precision/recall/F1 at each threshold, AUC and calibration over the latest joined pairs."""
        pairs = self._pairs.get((tenant, cohort))
        if pairs is None or pairs.size == 0:
            return None
        scores, labels = pairs.arrays()
        at: dict[float, tuple[float, float, float]] = {}
        for tau in thresholds:
            c = confusion_at(scores, labels, float(tau))
            at[float(tau)] = (c.precision, c.recall, c.f1)
        p, y = pairs.corrected()
        calibration = check_calibration(p, y) if p.size else None
        return Performance(int(scores.size), int(np.count_nonzero(labels)), at, auc(scores, labels), calibration)


class LabelMetrics:
    """The label-join role's metrics on a given registry; :meth:`publish` refreshes the gauges."""

    def __init__(self, registry: CollectorRegistry, tenant_label: Callable[[str], str] = str) -> None:
        self.tenant_label = tenant_label
        self.precision = Gauge("museflow_labelled_precision",
                               "Precision of served scores above a watch threshold, over the latest labelled scores.",
                               ["tenant", "cohort", "threshold"], registry=registry)
        self.recall = Gauge("museflow_labelled_recall",
                            "Recall of served scores above a watch threshold, over the latest labelled scores.",
                            ["tenant", "cohort", "threshold"], registry=registry)
        self.f1 = Gauge("museflow_labelled_f1", "F1 at a watch threshold, over the latest labelled scores.",
                        ["tenant", "cohort", "threshold"], registry=registry)
        self.auc = Gauge("museflow_labelled_auc", "ROC AUC of served scores over the latest labelled scores.",
                         ["tenant", "cohort"], registry=registry)
        self.samples = Gauge("museflow_labelled_samples", "Labelled scores the performance gauges are computed on.",
                             ["tenant", "cohort"], registry=registry)
        self.base_rate = Gauge("museflow_labelled_base_rate", "Realised fraud rate of the latest labelled scores.",
                               ["tenant", "cohort"], registry=registry)
        self.ece = Gauge("museflow_calibration_ece",
                         "Expected calibration error of corrected probabilities over the latest labelled scores.",
                         ["tenant", "cohort"], registry=registry)
        self.trustworthy = Gauge("museflow_calibration_trustworthy",
                                 "1 when calibration supports the label-free estimates (ECE / fraud rate within the "
                                 "bound), 0 when not, NaN while too few labelled frauds to judge.",
                                 ["tenant", "cohort"], registry=registry)
        self.joined = Counter("museflow_labels_joined_total", "Labels joined to their served score.",
                              ["tenant"], registry=registry)
        self.unlabelled = Gauge("museflow_unlabelled_fraction",
                                "Share of the join window's served scores still waiting for a label.",
                                ["tenant"], registry=registry)
        self.evicted = Counter("museflow_label_join_evicted_total",
                               "Entries that left the join unmatched (kind: unlabelled_score, orphan_label).",
                               ["tenant", "kind"], registry=registry)
        self.entries = Gauge("museflow_label_join_entries", "Scores and labels held by the join.",
                             registry=registry)
        self._joined_children: dict[str, Counter] = {}
        self._evicted_seen: dict[tuple[str, str], int] = {}

    def count_join(self, joined: Joined) -> None:
        """Count one join (cached child per tenant)."""
        child = self._joined_children.get(joined.tenant)
        if child is None:
            child = self._joined_children[joined.tenant] = self.joined.labels(self.tenant_label(joined.tenant))
        child.inc()

    def publish(self, join: LabelJoin, thresholds_for: Callable[[str], Sequence[float]]) -> None:
        """Recompute every gauge from the join's state (costs a sort per cohort: call every few seconds)."""
        self.entries.set(len(join))
        for tenant in join.tenants():
            label = self.tenant_label(tenant)
            fraction = join.unlabelled_fraction(tenant)
            if not math.isnan(fraction):
                self.unlabelled.labels(label).set(fraction)
        for kind, counts in (("unlabelled_score", join.evicted_unlabelled), ("orphan_label", join.evicted_labels)):
            for tenant, n in counts.items():
                key = (tenant, kind)
                delta = n - self._evicted_seen.get(key, 0)
                if delta > 0:
                    self.evicted.labels(self.tenant_label(tenant), kind).inc(delta)
                    self._evicted_seen[key] = n
        for tenant, cohort in join.cohorts():
            performance = join.performance(tenant, cohort, thresholds_for(tenant))
            if performance is None:
                continue
            label = self.tenant_label(tenant)
            self.samples.labels(label, cohort).set(performance.samples)
            self.base_rate.labels(label, cohort).set(performance.fraud_rate)
            calibration = performance.calibration
            if calibration is not None:
                self.ece.labels(label, cohort).set(calibration.ece)
                verdict = calibration.trustworthy
                self.trustworthy.labels(label, cohort).set(math.nan if verdict is None else float(verdict))
            for tau, (p, r, f) in performance.at_threshold.items():
                text = threshold_label(tau)
                self.precision.labels(label, cohort, text).set(p)
                self.recall.labels(label, cohort, text).set(r)
                self.f1.labels(label, cohort, text).set(f)
            if not math.isnan(performance.auc):
                self.auc.labels(label, cohort).set(performance.auc)
