"""Sliding windows kept as a ring of time buckets, each holding the sums of one fixed-length vector.

Adding to the current bucket is one vector add and the window's total is one sum over the live
buckets, so a window costs nothing per event and nothing to slide. The score monitor keeps bin
counts this way (:mod:`museflow.observe.monitoring`) and the label-free estimates keep sums of
probabilities per threshold (:mod:`museflow.observe.estimate`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["BucketRing"]


class BucketRing:
    """Sums per time bucket of ``span`` seconds over ``buckets`` buckets; a slot is reset when it comes round again."""

    __slots__ = ("epochs", "span", "sums")

    def __init__(self, width: int, buckets: int, span: float,
                 dtype: type[np.int64] | type[np.float64] = np.float64) -> None:
        if width < 1 or buckets < 1 or not span > 0:
            raise ValueError(f"BucketRing(width={width}, buckets={buckets}, span={span}) needs all > 0")
        self.sums: npt.NDArray[Any] = np.zeros((buckets, width), dtype=dtype)
        self.epochs = np.full(buckets, -(2**62), dtype=np.int64)
        self.span = float(span)

    def current(self, now: float) -> npt.NDArray[Any] | None:
        """The writable row of the bucket ``now`` falls in, or ``None`` when it is older than the window."""
        epoch = int(now // self.span)
        slot = epoch % self.epochs.size
        if self.epochs[slot] != epoch:
            if epoch < self.epochs[slot]:
                return None
            self.epochs[slot] = epoch
            self.sums[slot] = 0
        row: npt.NDArray[Any] = self.sums[slot]
        return row

    def add(self, values: npt.ArrayLike, now: float) -> None:
        """Add a vector of ``width`` values to the bucket of ``now`` (dropped when outside the window)."""
        row = self.current(now)
        if row is not None:
            row += values

    def total(self, now: float) -> npt.NDArray[Any]:
        """Sums over the buckets still inside the window at ``now``."""
        epoch = int(now // self.span)
        live = self.epochs > epoch - self.epochs.size
        out: npt.NDArray[Any] = self.sums[live].sum(axis=0)
        return out
