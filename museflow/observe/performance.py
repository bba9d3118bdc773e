"""Labelled performance once delayed ground truth joins back: precision/recall/F1 at a threshold, AUC.

Numpy only. A score *alerts* when it is strictly above the threshold, the same convention as
the alert rate ``P(score > tau)``. Ratios with a zero denominator are 0.0; AUC with a single
class is nan (undefined, and reported as such rather than as a guess).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from museflow.errors import ValidationError

__all__ = ["Confusion", "auc", "confusion_at", "precision_recall_f1", "recall_at_alert_rate"]


def _inputs(scores: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValidationError(f"performance: {s.size} scores but {y.size} labels; join them by event_id first",
                              reason="label-mismatch")
    if np.any(np.isnan(s)):
        raise ValidationError("performance: scores contain NaN; drop unscored events before measuring",
                              reason="nan-score")
    return s, y.astype(bool)


@dataclass(frozen=True)
class Confusion:
    """Counts of a thresholded decision against labels."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        denom = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denom if denom else 0.0

    @property
    def alert_rate(self) -> float:
        n = self.tp + self.fp + self.fn + self.tn
        return (self.tp + self.fp) / n if n else 0.0


def confusion_at(scores: npt.ArrayLike, labels: npt.ArrayLike, threshold: float) -> Confusion:
    """Confusion counts when alerting on ``score > threshold``."""
    s, y = _inputs(scores, labels)
    alert = s > threshold
    tp = int(np.count_nonzero(alert & y))
    fp = int(np.count_nonzero(alert & ~y))
    fn = int(np.count_nonzero(~alert & y))
    return Confusion(tp, fp, fn, int(s.size) - tp - fp - fn)


def precision_recall_f1(scores: npt.ArrayLike, labels: npt.ArrayLike, threshold: float) -> tuple[float, float, float]:
    """Precision, recall and F1 when alerting on ``score > threshold``."""
    c = confusion_at(scores, labels, threshold)
    return c.precision, c.recall, c.f1


def auc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """ROC AUC as the Mann-Whitney statistic with average ranks for ties (a tie counts one half)."""
    s, y = _inputs(scores, labels)
    n_pos = int(np.count_nonzero(y))
    n_neg = int(s.size) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ordered = s[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], ordered.size]
    average_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = np.repeat(average_rank, ends - starts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def recall_at_alert_rate(scores: npt.ArrayLike, labels: npt.ArrayLike, alert_rate: float) -> float:
    """Recall when alerting on the top ``ceil(alert_rate * n)`` scores (ties at the cut all alert)."""
    s, y = _inputs(scores, labels)
    if not 0 < alert_rate <= 1:
        raise ValueError(f"recall_at_alert_rate: alert_rate={alert_rate} must be in (0, 1]")
    n_pos = int(np.count_nonzero(y))
    if s.size == 0 or n_pos == 0:
        return 0.0
    k = int(np.ceil(alert_rate * s.size))
    cut = np.sort(s)[s.size - k]
    return int(np.count_nonzero((s >= cut) & y)) / n_pos
