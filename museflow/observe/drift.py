"""Drift of mapped scores against the reference: PSI, Jensen-Shannon, and alert rate at watch thresholds.

Bins come from reference quantiles, so each body bin holds equal reference mass and extra tail
bins (top 5%, 1%, 0.5%, 0.1%) keep the fraud region visible instead of lumped into one decile.
:class:`DriftWindow` holds per-bucket bin counts over a sliding window: updating it with a batch
is one ``searchsorted`` and one ``bincount``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from museflow.errors import MapError
from museflow.transform.reference import ReferenceDistribution

__all__ = [
    "DEFAULT_EPSILON",
    "DEFAULT_TAIL_LEVELS",
    "DriftBins",
    "DriftWindow",
    "alert_rates",
    "jensen_shannon",
    "psi",
]

DEFAULT_EPSILON = 1e-4
"""Probability floor for empty bins, so PSI stays finite; small next to the smallest tail bin (0.1%)."""

DEFAULT_TAIL_LEVELS = (0.95, 0.99, 0.995, 0.999)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _probabilities(counts: npt.ArrayLike, epsilon: float) -> FloatArray:
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    if not total > 0:
        return np.full(c.shape, np.nan)
    p = np.maximum(c / total, epsilon)
    return np.asarray(p / p.sum(), dtype=np.float64)


def psi(actual: npt.ArrayLike, expected: npt.ArrayLike, epsilon: float = DEFAULT_EPSILON) -> float:
    """Population stability index ``sum (a - e) ln(a / e)`` of two histograms (counts or shares)."""
    a = _probabilities(actual, epsilon)
    e = _probabilities(expected, epsilon)
    if a.shape != e.shape:
        raise ValueError(f"psi: {a.size} actual bins against {e.size} expected bins; use the same bins")
    return float(np.sum((a - e) * np.log(a / e)))


def jensen_shannon(actual: npt.ArrayLike, expected: npt.ArrayLike, epsilon: float = DEFAULT_EPSILON) -> float:
    """Jensen-Shannon divergence in bits (0 = same, 1 = disjoint) of two histograms."""
    a = _probabilities(actual, epsilon)
    e = _probabilities(expected, epsilon)
    if a.shape != e.shape:
        raise ValueError(f"jensen_shannon: {a.size} actual bins against {e.size} expected bins")
    m = 0.5 * (a + e)
    return 0.5 * _kl_bits(a, m) + 0.5 * _kl_bits(e, m)


def _kl_bits(p: FloatArray, m: FloatArray) -> float:
    """KL(p || m) in bits with 0 log 0 = 0 (m > 0 wherever p > 0 since m is a mixture with p)."""
    mask = p > 0
    return float(np.sum(p[mask] * np.log2(p[mask] / m[mask])))


def alert_rates(scores: npt.ArrayLike, thresholds: Sequence[float]) -> FloatArray:
    """Share of ``scores`` strictly above each threshold."""
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if s.size == 0:
        return np.full(len(thresholds), np.nan)
    above = s.size - np.searchsorted(s, np.asarray(thresholds, dtype=np.float64), side="right")
    return np.asarray(above / s.size, dtype=np.float64)


class DriftBins:
    """Score bin edges with the reference's expected share per bin."""

    __slots__ = ("edges", "expected", "reference")

    def __init__(self, edges: npt.ArrayLike, expected: npt.ArrayLike, reference: str = "") -> None:
        e = np.asarray(edges, dtype=np.float64)
        p = np.asarray(expected, dtype=np.float64)
        if e.ndim != 1 or p.size != e.size + 1 or np.any(np.diff(e) <= 0):
            raise MapError(f"drift bins for {reference!r}: need strictly rising edges and one more "
                           f"expected share than edges, got {e.size} edges and {p.size} shares")
        self.edges = e
        self.expected = p / p.sum()
        self.reference = reference

    @classmethod
    def from_reference(cls, reference: ReferenceDistribution, body_bins: int = 10,
                       tail_levels: Sequence[float] = DEFAULT_TAIL_LEVELS) -> DriftBins:
        """Equal-mass body bins up to the 90th reference percentile, then bins at ``tail_levels``."""
        body = np.linspace(0.0, 1.0, body_bins + 1)[1:-1]
        levels = np.unique(np.concatenate([body, np.asarray(tail_levels, dtype=np.float64)]))
        edges = reference.quantile(levels)
        keep = np.r_[True, np.diff(edges) > 0]
        levels, edges = levels[keep], edges[keep]
        expected = np.diff(np.concatenate([[0.0], levels, [1.0]]))
        return cls(edges, expected, f"{reference.name}@{reference.version}")

    @property
    def size(self) -> int:
        return int(self.expected.size)

    def counts(self, scores: npt.ArrayLike) -> IntArray:
        """Histogram of ``scores`` over the bins (a score equal to an edge falls in the bin above)."""
        idx = np.searchsorted(self.edges, np.asarray(scores, dtype=np.float64).ravel(), side="right")
        return np.bincount(idx, minlength=self.size).astype(np.int64)

    def psi(self, scores: npt.ArrayLike, epsilon: float = DEFAULT_EPSILON) -> float:
        return psi(self.counts(scores), self.expected, epsilon)

    def jensen_shannon(self, scores: npt.ArrayLike, epsilon: float = DEFAULT_EPSILON) -> float:
        return jensen_shannon(self.counts(scores), self.expected, epsilon)


class DriftWindow:
    """Sliding-window bin counts and watch-threshold counts of one tenant's mapped scores."""

    __slots__ = ("_above", "_bins", "_counts", "_n_buckets", "_span", "_taus", "latest_epoch")

    def __init__(self, bins: DriftBins, watch_thresholds: Sequence[float] = (),
                 window_seconds: float = 3600.0, buckets: int = 12) -> None:
        if not window_seconds > 0 or buckets < 1:
            raise ValueError(f"DriftWindow(window_seconds={window_seconds}, buckets={buckets}) needs both > 0")
        self._bins = bins
        self._taus = np.asarray(sorted(float(t) for t in watch_thresholds), dtype=np.float64)
        self._n_buckets = int(buckets)
        self._span = float(window_seconds) / buckets
        self._counts: dict[int, IntArray] = {}
        self._above: dict[int, IntArray] = {}
        self.latest_epoch: int | None = None

    @property
    def watch_thresholds(self) -> tuple[float, ...]:
        return tuple(float(t) for t in self._taus)

    def advance(self, now: float) -> None:
        """Drop buckets older than the window ending at ``now``."""
        epoch = math.floor(now / self._span)
        if self.latest_epoch is not None:
            epoch = max(epoch, self.latest_epoch)
        self.latest_epoch = epoch
        for old in [e for e in self._counts if e <= epoch - self._n_buckets]:
            del self._counts[old]
            del self._above[old]

    def update(self, scores: npt.ArrayLike, now: float) -> None:
        """Add a batch of mapped scores observed at ``now`` (seconds); older-than-window batches are ignored."""
        s = np.asarray(scores, dtype=np.float64).ravel()
        self.advance(now)
        epoch = math.floor(now / self._span)
        assert self.latest_epoch is not None
        if epoch <= self.latest_epoch - self._n_buckets or s.size == 0:
            return
        counts = self._bins.counts(s)
        ordered = np.sort(s)
        above = (s.size - np.searchsorted(ordered, self._taus, side="right")).astype(np.int64)
        if epoch in self._counts:
            self._counts[epoch] += counts
            self._above[epoch] += above
        else:
            self._counts[epoch] = counts
            self._above[epoch] = above

    def counts(self) -> IntArray:
        """Bin counts over the window."""
        total = np.zeros(self._bins.size, dtype=np.int64)
        for c in self._counts.values():
            total += c
        return total

    @property
    def count(self) -> int:
        return int(sum(int(c.sum()) for c in self._counts.values()))

    def psi(self, epsilon: float = DEFAULT_EPSILON) -> float:
        """PSI of the window against the reference; nan when empty."""
        return psi(self.counts(), self._bins.expected, epsilon)

    def jensen_shannon(self, epsilon: float = DEFAULT_EPSILON) -> float:
        """Jensen-Shannon divergence (bits) of the window against the reference; nan when empty."""
        return jensen_shannon(self.counts(), self._bins.expected, epsilon)

    def alert_rates(self) -> dict[float, float]:
        """Observed share above each watch threshold over the window (nan when empty)."""
        n = self.count
        above = np.zeros(self._taus.size, dtype=np.int64)
        for a in self._above.values():
            above += a
        return {float(t): (float(a) / n if n else float("nan")) for t, a in zip(self._taus, above, strict=True)}
