"""Quantile maps ``score = Q_ref(F_mt(p))`` and the store the scorer resolves them from.

A :class:`QuantileMap` is a monotone piecewise-linear function through knots ``(x_i, y_i)`` with
``x_i = Q_mt(u_i)`` (model m's corrected scores on tenant t's traffic) and ``y_i = Q_ref(u_i)``;
it is versioned and keyed by (model, model version, tenant), or pooled by (model, model version,
intent) when ``tenant`` is None. :class:`MapStore` keeps the latest version of each and resolves
tenant -> pooled -> identity on the scorer's hot path.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from museflow.errors import MapError

__all__ = ["IDENTITY_REFERENCE", "MapKey", "MapStore", "QuantileMap", "map_key"]

IDENTITY_REFERENCE = "identity"

FloatArray = npt.NDArray[np.float64]
ScoreLike = Sequence[float] | npt.NDArray[np.floating[Any]]


class QuantileMap:
    """Versioned monotone piecewise-linear map from corrected probability to reference score."""

    __slots__ = (
        "_xs",
        "_ys",
        "created_at_ms",
        "evidence",
        "intent",
        "model",
        "model_version",
        "reference_name",
        "reference_version",
        "sample_count",
        "source",
        "tail_sample_count",
        "tenant",
        "version",
        "window_end_ms",
        "window_start_ms",
    )

    def __init__(
        self,
        *,
        model: str,
        model_version: str,
        tenant: str | None,
        intent: str,
        version: int,
        reference_name: str,
        reference_version: int,
        knots_x: npt.ArrayLike,
        knots_y: npt.ArrayLike,
        sample_count: int = 0,
        tail_sample_count: int = 0,
        window_start_ms: int = 0,
        window_end_ms: int = 0,
        created_at_ms: int = 0,
        source: str = "shadow",
        evidence: Sequence[tuple[float, float]] = (),
    ) -> None:
        where = f"quantile map {model}/{model_version} tenant={tenant or '<pooled>'} intent={intent} v{version}"
        xs = np.array(knots_x, dtype=np.float64).ravel()
        ys = np.array(knots_y, dtype=np.float64).ravel()
        if xs.size != ys.size or xs.size < 2:
            raise MapError(f"{where}: needs >= 2 knots with as many x as y, got {xs.size} x and {ys.size} y")
        if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
            raise MapError(f"{where}: knots must be finite; refit from a clean score log")
        if np.any(np.diff(xs) <= 0):
            bad = int(np.argmax(np.diff(xs) <= 0))
            raise MapError(f"{where}: knots_x must rise strictly (x[{bad}]={xs[bad]!r} >= x[{bad + 1}]="
                           f"{xs[bad + 1]!r}); collapse tied knots before building the map")
        if np.any(np.diff(ys) < 0):
            bad = int(np.argmax(np.diff(ys) < 0))
            raise MapError(f"{where}: knots_y must not fall (y[{bad}]={ys[bad]!r} > y[{bad + 1}]="
                           f"{ys[bad + 1]!r}); a map that reorders scores would change rankings")
        if int(version) < 0 or int(sample_count) < 0 or int(tail_sample_count) < 0:
            raise MapError(f"{where}: version and sample counts must be >= 0")
        if not (model and model_version and intent):
            raise MapError(f"{where}: model, model_version and intent must be non-empty")
        xs.setflags(write=False)
        ys.setflags(write=False)
        self._xs = xs
        self._ys = ys
        self.model = model
        self.model_version = model_version
        self.tenant = tenant
        self.intent = intent
        self.version = int(version)
        self.reference_name = reference_name
        self.reference_version = int(reference_version)
        self.sample_count = int(sample_count)
        self.tail_sample_count = int(tail_sample_count)
        self.window_start_ms = int(window_start_ms)
        self.window_end_ms = int(window_end_ms)
        self.created_at_ms = int(created_at_ms)
        self.source = source
        self.evidence = tuple((float(t), float(n)) for t, n in evidence)
        """``(threshold, effective samples)`` where they differ from ``sample_count`` (a blended map's)."""

    @classmethod
    def identity(cls, model: str, model_version: str, tenant: str | None, intent: str, *,
                 created_at_ms: int = 0) -> QuantileMap:
        """Version-0 map, identity on [0, 1] (the range of corrected probabilities), used until fitted."""
        return cls(model=model, model_version=model_version, tenant=tenant, intent=intent, version=0,
                   reference_name=IDENTITY_REFERENCE, reference_version=0, knots_x=[0.0, 1.0],
                   knots_y=[0.0, 1.0], created_at_ms=created_at_ms)

    @property
    def knots_x(self) -> FloatArray:
        return self._xs

    @property
    def knots_y(self) -> FloatArray:
        return self._ys

    def effective_samples(self, threshold: float) -> float:
        """Samples the map's alert rate at ``threshold`` rests on: its evidence there, else ``sample_count``."""
        for tau, n in self.evidence:
            if abs(tau - threshold) <= 1e-9:
                return n
        return float(self.sample_count)

    @property
    def is_identity(self) -> bool:
        return self.version == 0 and self.reference_name == IDENTITY_REFERENCE

    @property
    def pooled(self) -> bool:
        return self.tenant is None

    @property
    def key(self) -> tuple[str, str, str, str | None]:
        """``(model, model_version, intent, tenant)``; tenant None for a pooled map."""
        return (self.model, self.model_version, self.intent, self.tenant)

    def apply(self, p: ScoreLike) -> FloatArray:
        """Mapped scores for a batch of corrected probabilities; clamped outside the knot range.

        ``np.interp`` computes ``y0 + slope * (x - x0)``, which can land an ulp beyond the last knot's
        y (found by the property test); the clip keeps every score within the knots' range.
        """
        return np.clip(np.interp(p, self._xs, self._ys), self._ys[0], self._ys[-1])

    def inverse(self, score: ScoreLike) -> FloatArray:
        """Corrected probability that maps to ``score`` (the raw threshold behind a mapped one)."""
        return np.interp(score, self._ys, self._xs)

    def to_record(self) -> dict[str, Any]:
        """Plain dict for the ``QuantileMap`` Avro record (tenant None = pooled)."""
        return {
            "model": self.model,
            "model_version": self.model_version,
            "tenant": self.tenant,
            "intent": self.intent,
            "version": self.version,
            "reference_name": self.reference_name,
            "reference_version": self.reference_version,
            "sample_count": self.sample_count,
            "tail_sample_count": self.tail_sample_count,
            "window_start_ms": self.window_start_ms,
            "window_end_ms": self.window_end_ms,
            "created_at_ms": self.created_at_ms,
            "source": self.source,
            "evidence": [{"threshold": t, "effective_samples": n} for t, n in self.evidence],
            "knots_x": self._xs.tolist(),
            "knots_y": self._ys.tolist(),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> QuantileMap:
        """Inverse of :meth:`to_record`; raises MapError on a missing field or an invalid map."""
        try:
            return cls(
                model=str(record["model"]),
                model_version=str(record["model_version"]),
                tenant=None if record["tenant"] is None else str(record["tenant"]),
                intent=str(record["intent"]),
                version=int(record["version"]),
                reference_name=str(record["reference_name"]),
                reference_version=int(record["reference_version"]),
                knots_x=record["knots_x"],
                knots_y=record["knots_y"],
                sample_count=int(record.get("sample_count", 0)),
                tail_sample_count=int(record.get("tail_sample_count", 0)),
                window_start_ms=int(record.get("window_start_ms", 0)),
                window_end_ms=int(record.get("window_end_ms", 0)),
                created_at_ms=int(record.get("created_at_ms", 0)),
                source=str(record.get("source") or "shadow"),
                evidence=[(float(e["threshold"]), float(e["effective_samples"])) for e in record.get("evidence") or ()],
            )
        except KeyError as exc:
            raise MapError(f"quantile map record is missing field {exc.args[0]!r}; got {sorted(record)}") from exc

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantileMap):
            return NotImplemented
        mine, theirs = self.to_record(), other.to_record()
        return mine == theirs

    __hash__ = None  # type: ignore[assignment]  # value object compared by its record

    def __repr__(self) -> str:
        return (f"QuantileMap({self.model}/{self.model_version} tenant={self.tenant or '<pooled>'} "
                f"intent={self.intent} v{self.version} ref={self.reference_name}@{self.reference_version} "
                f"knots={self._xs.size} n={self.sample_count})")


MapKey = tuple[str, str, str | None, str, str]


def map_key(qmap: QuantileMap) -> MapKey:
    """What a map is a version of: (model, model version, tenant or None for pooled, intent of a
    pooled map, reference ``name@version``). Each reference keeps its own latest map, so events
    routed before a route moved to another reference are still mapped onto theirs."""
    return (qmap.model, qmap.model_version, qmap.tenant, "" if qmap.tenant is not None else qmap.intent,
            f"{qmap.reference_name}@{qmap.reference_version}")


class MapStore:
    """Latest map per (model version, tenant | pooled intent, reference); resolves with fallback."""

    __slots__ = ("_identity", "_pooled", "_tenant")

    def __init__(self) -> None:
        self._tenant: dict[tuple[str, str, str], dict[str, QuantileMap]] = {}
        self._pooled: dict[tuple[str, str, str], dict[str, QuantileMap]] = {}
        self._identity: dict[tuple[str, str, str, str], QuantileMap] = {}

    def put(self, qmap: QuantileMap) -> bool:
        """Keep ``qmap`` if it is newer than the held one; returns False for a replay or an older version."""
        held = self.held(map_key(qmap))
        if held is not None and held.version >= qmap.version:
            return False
        self.set(map_key(qmap), qmap)
        return True

    def _slot(self, key: MapKey) -> tuple[dict[tuple[str, str, str], dict[str, QuantileMap]], tuple[str, str, str]]:
        model, version, tenant, intent, _ = key
        return (self._pooled, (model, version, intent)) if tenant is None else (self._tenant, (model, version, tenant))

    def held(self, key: MapKey) -> QuantileMap | None:
        """The map held under ``key`` (see :func:`map_key`)."""
        table, inner = self._slot(key)
        return table.get(inner, {}).get(key[4])

    def set(self, key: MapKey, qmap: QuantileMap | None) -> None:
        """Hold ``qmap`` under ``key`` whatever its version (None drops it): the state's rule chose it."""
        table, inner = self._slot(key)
        if qmap is not None:
            table.setdefault(inner, {})[key[4]] = qmap
        elif inner in table:
            table[inner].pop(key[4], None)
            if not table[inner]:
                del table[inner]

    @staticmethod
    def _pick(by_reference: dict[str, QuantileMap] | None, reference: str | None) -> QuantileMap | None:
        if not by_reference:
            return None
        if reference is not None:
            return by_reference.get(reference)
        return max(by_reference.values(), key=lambda m: m.version)

    def get(self, model: str, model_version: str, tenant: str, reference: str | None = None) -> QuantileMap | None:
        """The tenant's own map onto ``reference`` (default: its newest onto any), or None."""
        return self._pick(self._tenant.get((model, model_version, tenant)), reference)

    def get_pooled(self, model: str, model_version: str, intent: str,
                   reference: str | None = None) -> QuantileMap | None:
        """The pooled map of (model version, intent) onto ``reference`` (default: the newest), or None."""
        return self._pick(self._pooled.get((model, model_version, intent)), reference)

    def resolve(self, model: str, model_version: str, tenant: str, intent: str,
                reference: str | None = None) -> QuantileMap:
        """The map to apply: the tenant's own, else the pooled one for the intent, else identity.

        With ``reference`` (``name@version``, that of the route version the event was routed
        by) only a map onto that reference is used: another would put scores on the wrong scale.
        """
        for found in (self.get(model, model_version, tenant, reference),
                      self.get_pooled(model, model_version, intent, reference)):
            if found is not None:
                return found
        key = (model, model_version, tenant, intent)
        ident = self._identity.get(key)
        if ident is None:
            ident = self._identity[key] = QuantileMap.identity(model, model_version, tenant, intent)
        return ident

    def forget(self, model: str, model_version: str) -> int:
        """Drop every map of a retired model version; returns how many were dropped."""
        dropped = 0
        for table in (self._tenant, self._pooled):
            for key in [k for k in table if k[:2] == (model, model_version)]:
                dropped += len(table.pop(key))
        self._identity = {k: v for k, v in self._identity.items() if k[:2] != (model, model_version)}
        return dropped

    def __iter__(self) -> Iterator[QuantileMap]:
        for table in (self._tenant, self._pooled):
            for by_reference in table.values():
                yield from by_reference.values()

    def __len__(self) -> int:
        return sum(len(v) for table in (self._tenant, self._pooled) for v in table.values())
