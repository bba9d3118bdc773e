"""Feature building: a batch of decoded events to the float32 matrix a model spec declares.

Each feature is compiled once into a column plan (source accessor, default, vectorised
transform steps); a batch is then read column by column with list comprehensions and numpy,
never with ``eval``. Missing sources are replaced by the declared default (``null`` = NaN,
XGBoost's missing value) and counted per feature, so monitoring can export a default-value rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from museflow.model.spec import (
    ATTRIBUTES_PREFIX,
    Bucketize,
    Clip,
    Equals,
    FeatureSpec,
    Log1p,
    Lookup,
    ModelSpec,
    OneHot,
    Ratio,
    Transform,
)

__all__ = ["FeatureBuilder", "FeatureMatrix"]

FloatArray = npt.NDArray[np.float64]
Extract = Callable[[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]], list[Any]]
_EMPTY: Mapping[str, Any] = {}


@dataclass(frozen=True)
class FeatureMatrix:
    """Model input for one batch plus how many rows fell back to each feature's default."""

    values: npt.NDArray[np.float32]
    default_counts: npt.NDArray[np.int64]
    feature_names: tuple[str, ...]
    columns: tuple[str, ...]

    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])

    def defaults_by_feature(self) -> dict[str, int]:
        return dict(zip(self.feature_names, self.default_counts.tolist(), strict=True))


def _extractor(source: str) -> Extract:
    if source.startswith(ATTRIBUTES_PREFIX):
        key = source[len(ATTRIBUTES_PREFIX):]
        return lambda events, attrs: [a.get(key) for a in attrs]
    return lambda events, attrs: [e.get(source) for e in events]


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool | int | float):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp() * 1000.0
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _numeric(raw: list[Any], default: float | None) -> tuple[FloatArray, npt.NDArray[np.bool_] | None]:
    """Values as float64 with defaults filled, and the mask of rows that used the default."""
    fill = math.nan if default is None else float(default)
    missing: npt.NDArray[np.bool_] | None = None
    values: list[Any] = raw
    if None in raw:
        missing = np.fromiter((v is None for v in raw), dtype=np.bool_, count=len(raw))
        values = [fill if v is None else v for v in raw]
    try:
        return np.asarray(values, dtype=np.float64), missing
    except (TypeError, ValueError):
        coerced = [_as_float(v) for v in values]
        bad = np.fromiter((v is None for v in coerced), dtype=np.bool_, count=len(raw))
        arr = np.array([fill if v is None else v for v in coerced], dtype=np.float64)
        return arr, bad if missing is None else (bad | missing)


@dataclass(frozen=True)
class _Plan:
    """A compiled feature: where its columns go, how to read it and how to transform it."""

    feature: FeatureSpec
    first_column: int
    extract: Extract
    denominator: Extract | None

    def fill(
        self,
        events: Sequence[Mapping[str, Any]],
        attrs: Sequence[Mapping[str, Any]],
        out: npt.NDArray[np.float32],
    ) -> int:
        """Write this feature's column(s) into ``out``; return how many rows used the default."""
        f = self.feature
        raw = self.extract(events, attrs)
        steps = f.transforms
        first = steps[0] if steps else None
        col = self.first_column
        if f.type == "category" or isinstance(first, OneHot | Equals | Lookup):
            missing = raw.count(None)
            if missing and f.default is not None:
                raw = [f.default if v is None else v for v in raw]
            if isinstance(first, Lookup):
                table = dict(first.table)
                x = np.array([table.get(v, first.default) for v in raw], dtype=np.float64)
            else:
                arr = np.array(raw, dtype=object) if f.type == "category" else _numeric(raw, None)[0]
                if isinstance(first, OneHot):
                    for k, value in enumerate(first.values):
                        out[:, col + k] = np.equal(arr, value)
                    return missing
                assert isinstance(first, Equals)
                x = np.equal(arr, first.value).astype(np.float64)
                if f.type != "category":
                    x[np.isnan(arr.astype(np.float64))] = math.nan
            out[:, col] = _apply(steps[1:], x)
            return missing
        default = None if f.default is None else float(f.default)
        x, mask = _numeric(raw, default)
        if isinstance(first, Ratio):
            assert self.denominator is not None
            den, den_mask = _numeric(self.denominator(events, attrs), None)
            with np.errstate(divide="ignore", invalid="ignore"):
                x = np.where(den == 0.0, first.on_zero, x / den)
            if den_mask is not None:
                mask = den_mask if mask is None else (mask | den_mask)
            steps = steps[1:]
        out[:, col] = _apply(steps, x)
        return 0 if mask is None else int(mask.sum())


def _apply(steps: Sequence[Transform], x: FloatArray) -> FloatArray:
    for step in steps:
        if isinstance(step, Log1p):
            x = np.log1p(np.maximum(x, 0.0))
        elif isinstance(step, Clip):
            x = np.clip(
                x, -math.inf if step.lo is None else step.lo, math.inf if step.hi is None else step.hi
            )
        elif isinstance(step, Bucketize):
            idx = np.searchsorted(np.asarray(step.edges), x, side="right").astype(np.float64)
            x = np.where(np.isnan(x), math.nan, idx)
        else:
            raise AssertionError(f"transform {step.kind} cannot follow another transform")
    return x


class FeatureBuilder:
    """Builds a spec's feature matrix from decoded TransactionEvent dicts, batch at a time."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.feature_names: tuple[str, ...] = spec.feature_names
        self.columns: tuple[str, ...] = spec.columns
        plans: list[_Plan] = []
        col = 0
        for f in spec.features:
            ratio = next((t for t in f.transforms if isinstance(t, Ratio)), None)
            plans.append(
                _Plan(f, col, _extractor(f.source), None if ratio is None else _extractor(ratio.denominator))
            )
            col += len(f.columns)
        self._plans = tuple(plans)
        self._needs_attributes = any(
            s.startswith(ATTRIBUTES_PREFIX) for f in spec.features for s in f.sources()
        )

    @property
    def n_columns(self) -> int:
        return len(self.columns)

    def build(self, events: Sequence[Mapping[str, Any]]) -> FeatureMatrix:
        """The (len(events), n_columns) float32 matrix and per-feature default counts."""
        n = len(events)
        out = np.empty((n, len(self.columns)), dtype=np.float32)
        counts = np.zeros(len(self._plans), dtype=np.int64)
        attrs: Sequence[Mapping[str, Any]] = (
            [e.get("attributes") or _EMPTY for e in events] if self._needs_attributes else ()
        )
        if n:
            for i, plan in enumerate(self._plans):
                counts[i] = plan.fill(events, attrs, out)
        return FeatureMatrix(out, counts, self.feature_names, self.columns)
