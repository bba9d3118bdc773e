"""Streaming quantile sketch over a sliding time window, accurate at high ranks.

Wraps datasketches' REQ sketch in high-rank-accuracy mode: its rank error is relative to the
tail mass ``1 - q``, so the 0.1%-5% alert-rate region where fraud thresholds live is estimated
to about 2% of the alert rate (KLL's additive error is 10x-50x worse there; see
``bench/sketch_accuracy.py``). The window is a ring of time buckets, one REQ sketch each, merged
on query. :meth:`WindowedSketch.to_bytes` gives the state in datasketches' own binary format, framed.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable

import datasketches as ds
import numpy as np
import numpy.typing as npt

__all__ = ["DEFAULT_K", "WindowedSketch"]

DEFAULT_K = 12
"""REQ section size; k=12 gives <= ~2% relative rank error at q in [0.95, 0.999] (bench)."""

_MAGIC = b"MFWS"
_FORMAT_VERSION = 1
_HEADER = struct.Struct("<4sHHIdI")
_BUCKET = struct.Struct("<qI")

FloatArray = npt.NDArray[np.float64]


class WindowedSketch:
    """REQ (high-rank-accuracy) quantile sketch over the last ``window_seconds``, in ``buckets`` slices."""

    __slots__ = ("_buckets", "_k", "_merged", "_n_buckets", "_span", "_window", "late", "latest_epoch", "rejected")

    def __init__(self, k: int = DEFAULT_K, window_seconds: float = 3600.0, buckets: int = 12) -> None:
        if k < 4 or k > 1024 or k % 2:
            raise ValueError(f"WindowedSketch k={k} must be an even integer in [4, 1024]")
        if not window_seconds > 0 or not math.isfinite(window_seconds):
            raise ValueError(f"WindowedSketch window_seconds={window_seconds} must be a positive number")
        if buckets < 1:
            raise ValueError(f"WindowedSketch buckets={buckets} must be >= 1")
        self._k = int(k)
        self._window = float(window_seconds)
        self._n_buckets = int(buckets)
        self._span = self._window / self._n_buckets
        self._buckets: dict[int, ds.req_floats_sketch] = {}
        self._merged: ds.req_floats_sketch | None = None
        self.latest_epoch: int | None = None
        self.rejected = 0
        self.late = 0

    @property
    def k(self) -> int:
        return self._k

    @property
    def window_seconds(self) -> float:
        return self._window

    @property
    def buckets(self) -> int:
        return self._n_buckets

    def _epoch(self, now: float) -> int:
        return math.floor(now / self._span)

    def advance(self, now: float) -> None:
        """Drop the buckets that fell out of the window ending at ``now``."""
        epoch = self._epoch(now)
        if self.latest_epoch is not None and epoch < self.latest_epoch:
            epoch = self.latest_epoch
        self.latest_epoch = epoch
        oldest = epoch - self._n_buckets + 1
        stale = [e for e in self._buckets if e < oldest]
        for e in stale:
            del self._buckets[e]
        if stale:
            self._merged = None

    def update(self, values: npt.ArrayLike, now: float) -> None:
        """Add a batch of scores observed at ``now`` (seconds).

        Non-finite values are counted in ``rejected``; values older than the window in ``late``.
        """
        batch = np.asarray(values, dtype=np.float32).ravel()
        finite = np.isfinite(batch)
        if not finite.all():
            self.rejected += int(batch.size - np.count_nonzero(finite))
            batch = batch[finite]
        self.advance(now)
        epoch = self._epoch(now)
        assert self.latest_epoch is not None
        if epoch <= self.latest_epoch - self._n_buckets:
            self.late += int(batch.size)
            return
        if batch.size == 0:
            return
        sketch = self._buckets.get(epoch)
        if sketch is None:
            sketch = self._buckets[epoch] = ds.req_floats_sketch(self._k, True)
        sketch.update(np.ascontiguousarray(batch))
        self._merged = None

    def _whole(self) -> ds.req_floats_sketch:
        if self._merged is None:
            merged = ds.req_floats_sketch(self._k, True)
            for e in sorted(self._buckets):
                merged.merge(self._buckets[e])
            self._merged = merged
        return self._merged

    @property
    def count(self) -> int:
        """Number of scores in the window."""
        return sum(int(s.n) for s in self._buckets.values())

    @property
    def is_empty(self) -> bool:
        return self.count == 0

    @property
    def min(self) -> float:
        """Smallest score in the window (exact), nan when empty."""
        return float("nan") if self.is_empty else float(self._whole().get_min_value())

    @property
    def max(self) -> float:
        """Largest score in the window (exact), nan when empty."""
        return float("nan") if self.is_empty else float(self._whole().get_max_value())

    @property
    def window_start(self) -> float:
        """Start (seconds) of the oldest bucket still held, nan when empty."""
        if not self._buckets:
            return float("nan")
        return min(self._buckets) * self._span

    def cdf(self, xs: npt.ArrayLike) -> FloatArray:
        """Estimated ``P(X <= x)`` for each ``x`` (any order, any shape); nan when empty."""
        points = np.asarray(xs, dtype=np.float64)
        if self.is_empty:
            return np.full(points.shape, np.nan)
        flat = points.ravel()
        unique, inverse = np.unique(flat.astype(np.float32), return_inverse=True)
        if unique.size == 0:
            return np.empty(points.shape)
        ranks = np.asarray(self._whole().get_cdf(unique.tolist(), True), dtype=np.float64)[:-1]
        return ranks[inverse].reshape(points.shape)

    def count_above(self, x: float) -> float:
        """Estimated number of scores strictly greater than ``x``."""
        n = self.count
        if n == 0:
            return 0.0
        return n * (1.0 - float(self._whole().get_rank(float(x), True)))

    def quantile(self, q: npt.ArrayLike) -> FloatArray:
        """Estimated score at normalized rank ``q`` (scalar or array, in [0, 1]); nan when empty."""
        ranks = np.asarray(q, dtype=np.float64)
        if np.any((ranks < 0) | (ranks > 1)) or not np.all(np.isfinite(ranks)):
            raise ValueError("WindowedSketch.quantile: ranks must be finite and in [0, 1]")
        if self.is_empty:
            return np.full(ranks.shape, np.nan)
        values = self._whole().get_quantiles(ranks.ravel().tolist(), True)
        return np.asarray(values, dtype=np.float64).reshape(ranks.shape)

    def relative_rank_error(self, q: float, std_devs: int = 3) -> float:
        """REQ's own bound on ``|rank error| / (1 - q)`` at rank ``q`` (``std_devs`` in 1..3); 0 while exact."""
        if self.is_empty or q >= 1.0:
            return 0.0
        upper = float(self._whole().get_rank_upper_bound(float(q), int(std_devs)))
        return max(upper - q, 0.0) / (1.0 - q)

    def to_bytes(self) -> bytes:
        """Framed datasketches serialization of every bucket (no pickle): the size of the window's state."""
        parts = [
            _HEADER.pack(
                _MAGIC,
                _FORMAT_VERSION,
                self._k,
                self._n_buckets,
                self._window,
                len(self._buckets),
            ),
            struct.pack("<q", self.latest_epoch if self.latest_epoch is not None else -(2**63)),
            struct.pack("<Q", self.rejected),
        ]
        for epoch in sorted(self._buckets):
            blob = self._buckets[epoch].serialize()
            parts.append(_BUCKET.pack(epoch, len(blob)))
            parts.append(blob)
        return b"".join(parts)

    def merge(self, others: Iterable[WindowedSketch]) -> None:
        """Fold other windows with the same bucket span into this one (e.g. partitions of one key)."""
        for other in others:
            if other._span != self._span or other._k != self._k:
                raise ValueError(
                    f"cannot merge WindowedSketch(k={other._k}, span={other._span}s) into "
                    f"WindowedSketch(k={self._k}, span={self._span}s); build both with the same settings"
                )
            for epoch, sk in other._buckets.items():
                mine = self._buckets.get(epoch)
                if mine is None:
                    mine = self._buckets[epoch] = ds.req_floats_sketch(self._k, True)
                mine.merge(sk)
            if other.latest_epoch is not None:
                self.advance((other.latest_epoch + 0.5) * self._span)
        self._merged = None

    def __repr__(self) -> str:
        return (
            f"WindowedSketch(k={self._k}, window_seconds={self._window}, buckets={self._n_buckets}, "
            f"count={self.count})"
        )
