"""Named, versioned reference distributions: the stable score distribution a tenant's thresholds mean.

A reference is stored as quantile knots ``(u_i, x_i)``: ``Q_ref`` and ``F_ref`` are the
piecewise-linear interpolants through them, so a frozen reference (from an incumbent model's
scores at onboarding) and a parametric one (``uniform``, ``beta``) share one representation and
one Avro record. Knots follow :func:`probability_grid`, dense in the upper tail.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from museflow.errors import MapError

__all__ = ["KINDS", "ReferenceDistribution", "collapse_ties", "probability_grid"]

KINDS = ("frozen", "uniform", "beta")

FloatArray = npt.NDArray[np.float64]


def probability_grid(body_step: float = 0.02, tail_start: float = 0.9, tail_min: float = 1e-4,
                     per_decade: int = 10) -> FloatArray:
    """Levels u in [0, 1]: uniform (step ``body_step``) up to ``tail_start``, then log-spaced in ``1-u``.

    Log spacing keeps the ratio of tail masses between adjacent knots constant (10 per decade:
    1.26x), so the interpolation error is the same *relative* share of the alert rate at 5% as at
    0.1%; it stops at ``1-u = tail_min`` because a window of ~1e5 scores has only ~10 above it.
    """
    if not 0 < tail_start < 1 or not 0 < tail_min < 1 - tail_start or per_decade < 1 or body_step <= 0:
        raise MapError(
            f"probability_grid(body_step={body_step}, tail_start={tail_start}, tail_min={tail_min}, "
            f"per_decade={per_decade}) needs 0 < tail_min < 1 - tail_start < 1 and positive steps"
        )
    body = np.arange(0.0, tail_start, body_step)
    decades = math.log10((1.0 - tail_start) / tail_min)
    tail = 1.0 - np.logspace(math.log10(1.0 - tail_start), math.log10(tail_min),
                             max(2, round(decades * per_decade) + 1))
    grid = np.unique(np.concatenate([body, tail, [0.0, 1.0]]))
    return np.asarray(grid, dtype=np.float64)


class ReferenceDistribution:
    """``Q_ref``/``F_ref`` of a named reference, as monotone piecewise-linear quantile knots."""

    __slots__ = ("_us", "_xs", "kind", "name", "params", "version")

    def __init__(self, name: str, version: int, us: npt.ArrayLike, xs: npt.ArrayLike, *,
                 kind: str = "frozen", params: Mapping[str, float] | None = None) -> None:
        where = f"reference {name!r} v{version}"
        if not name:
            raise MapError("reference name is empty; give every reference a stable name")
        if int(version) < 0:
            raise MapError(f"{where}: version must be >= 0")
        if kind not in KINDS:
            raise MapError(f"{where}: kind={kind!r} is not one of {KINDS}")
        u = np.array(us, dtype=np.float64).ravel()
        x = np.array(xs, dtype=np.float64).ravel()
        if u.size != x.size or u.size < 2:
            raise MapError(f"{where}: needs >= 2 knots with as many u as x, got {u.size} u and {x.size} x")
        if not (np.all(np.isfinite(u)) and np.all(np.isfinite(x))):
            raise MapError(f"{where}: knots must be finite")
        if u[0] != 0.0 or u[-1] != 1.0 or np.any(np.diff(u) <= 0):
            raise MapError(f"{where}: u knots must rise strictly from 0 to 1")
        if np.any(np.diff(x) <= 0):
            raise MapError(f"{where}: x knots must rise strictly (collapse ties before building it)")
        u.setflags(write=False)
        x.setflags(write=False)
        self.name = name
        self.version = int(version)
        self.kind = kind
        self.params: dict[str, float] = {k: float(v) for k, v in (params or {}).items()}
        self._us = u
        self._xs = x

    @property
    def us(self) -> FloatArray:
        return self._us

    @property
    def xs(self) -> FloatArray:
        return self._xs

    @property
    def low(self) -> float:
        return float(self._xs[0])

    @property
    def high(self) -> float:
        return float(self._xs[-1])

    def quantile(self, u: npt.ArrayLike) -> FloatArray:
        """``Q_ref(u)``: the reference score at rank ``u`` (clamped to [0, 1])."""
        return np.interp(np.asarray(u, dtype=np.float64), self._us, self._xs)

    def cdf(self, x: npt.ArrayLike) -> FloatArray:
        """``F_ref(x) = P(score <= x)`` under the reference."""
        return np.interp(np.asarray(x, dtype=np.float64), self._xs, self._us)

    def alert_rate(self, threshold: npt.ArrayLike) -> FloatArray:
        """``1 - F_ref(tau)``: the alert rate a threshold means under this reference."""
        return 1.0 - self.cdf(threshold)

    def threshold_for(self, alert_rate: npt.ArrayLike) -> FloatArray:
        """The threshold ``tau`` with ``1 - F_ref(tau) = alert_rate``."""
        return self.quantile(1.0 - np.asarray(alert_rate, dtype=np.float64))

    @classmethod
    def uniform(cls, name: str = "uniform", version: int = 1, low: float = 0.0,
                high: float = 1.0) -> ReferenceDistribution:
        """Percentile scores: uniform on [low, high], so ``score = rank`` when low=0, high=1."""
        if not high > low:
            raise MapError(f"uniform reference {name!r}: high={high} must exceed low={low}")
        return cls(name, version, [0.0, 1.0], [low, high], kind="uniform",
                   params={"low": float(low), "high": float(high)})

    @classmethod
    def beta(cls, name: str, version: int, a: float, b: float,
             levels: npt.ArrayLike | None = None) -> ReferenceDistribution:
        """Beta(a, b) on [0, 1], tabulated at ``levels`` (default :func:`probability_grid`)."""
        if not (a > 0 and b > 0):
            raise MapError(f"beta reference {name!r}: a={a} and b={b} must be > 0")
        from scipy.special import betaincinv  # scipy ships with xgboost; only parametric beta needs it

        u = probability_grid() if levels is None else np.asarray(levels, dtype=np.float64)
        x = np.asarray(betaincinv(a, b, u), dtype=np.float64)
        us, xs = collapse_ties(u, x)
        return cls(name, version, us, xs, kind="beta", params={"a": float(a), "b": float(b)})

    @classmethod
    def from_samples(cls, name: str, version: int, samples: npt.ArrayLike,
                     levels: npt.ArrayLike | None = None) -> ReferenceDistribution:
        """Frozen from scores (e.g. the incumbent's corrected scores at onboarding), knots at ``levels``."""
        data = np.asarray(samples, dtype=np.float64).ravel()
        data = data[np.isfinite(data)]
        if data.size < 2 or data.min() == data.max():
            raise MapError(
                f"reference {name!r} v{version}: needs >= 2 distinct finite samples, got {data.size}"
            )
        u = probability_grid() if levels is None else np.asarray(levels, dtype=np.float64)
        x = np.quantile(data, u)
        us, xs = collapse_ties(u, x)
        return cls(name, version, us, xs, kind="frozen", params={"samples": float(data.size)})

    def to_record(self) -> dict[str, Any]:
        """Plain dict for the ``ReferenceDistribution`` Avro record."""
        return {
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "params": dict(self.params),
            "knots_u": self._us.tolist(),
            "knots_x": self._xs.tolist(),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ReferenceDistribution:
        """Inverse of :meth:`to_record`; knots are authoritative, params informational."""
        try:
            return cls(str(record["name"]), int(record["version"]), record["knots_u"], record["knots_x"],
                       kind=str(record.get("kind", "frozen")), params=record.get("params") or {})
        except KeyError as exc:
            raise MapError(f"reference record is missing field {exc.args[0]!r}: {sorted(record)}") from exc

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReferenceDistribution):
            return NotImplemented
        return (self.name, self.version, self.kind, self.params) == (
            other.name, other.version, other.kind, other.params
        ) and np.array_equal(self._us, other._us) and np.array_equal(self._xs, other._xs)

    __hash__ = None  # type: ignore[assignment]  # mutable-looking value object, compared by knots

    def __repr__(self) -> str:
        return (f"ReferenceDistribution({self.name!r}, v{self.version}, kind={self.kind}, "
                f"knots={self._us.size}, range=[{self.low:.6g}, {self.high:.6g}])")


def collapse_ties(u: FloatArray, x: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Keep one knot per distinct x (the highest u), pinned at u=0 and u=1, so F stays right-continuous."""
    x = np.maximum.accumulate(x)
    last = np.r_[x[1:] != x[:-1], True]
    us, xs = u[last], x[last]
    if us[0] != 0.0:
        us = np.r_[0.0, us]
        xs = np.r_[xs[0] - max(abs(xs[0]) * 1e-9, 1e-12), xs]
    if us[-1] != 1.0:
        us[-1] = 1.0
    return us, xs
