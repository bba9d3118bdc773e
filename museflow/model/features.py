"""Feature building: a batch of decoded events to the float32 matrix a model spec declares.

A batch is read column by column: each event field a spec names is pulled out once
(:func:`source_values`) and each feature's transforms evaluate it with numpy
(:meth:`museflow.model.spec.FeatureSpec.evaluate`), never with ``eval``. Missing sources are
replaced by the declared default (``null`` = NaN, XGBoost's missing value) and counted per
feature, so monitoring can export a default-value rate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from museflow.model.problems import ATTRIBUTES_PREFIX
from museflow.model.spec import ModelSpec

__all__ = ["FeatureBuilder", "FeatureMatrix", "source_value", "source_values"]

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


def source_values(
    events: Sequence[Mapping[str, Any]], source: str, attributes: Sequence[Mapping[str, Any]] | None = None
) -> list[Any]:
    """Each event's raw value of a spec ``source``: a TransactionEvent field or ``attributes.<key>``.

    None where an event lacks it. ``attributes`` (each event's attributes map, ``{}`` when absent)
    spares re-reading them for every attribute source of a batch.
    """
    if source.startswith(ATTRIBUTES_PREFIX):
        key = source[len(ATTRIBUTES_PREFIX):]
        if attributes is None:
            attributes = [e.get("attributes") or _EMPTY for e in events]
        return [a.get(key) for a in attributes]
    return [e.get(source) for e in events]


def source_value(event: Mapping[str, Any], source: str) -> Any:
    """One event's raw value of a spec ``source`` (None when it lacks it)."""
    return source_values((event,), source)[0]


class FeatureBuilder:
    """Builds a spec's feature matrix from decoded TransactionEvent dicts, batch at a time."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.feature_names: tuple[str, ...] = spec.feature_names
        self.columns: tuple[str, ...] = spec.columns
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
        features = self.spec.features
        counts = np.zeros(len(features), dtype=np.int64)
        attrs: Sequence[Mapping[str, Any]] | None = (
            [e.get("attributes") or _EMPTY for e in events] if self._needs_attributes else None
        )

        def read(source: str) -> list[Any]:
            return source_values(events, source, attrs)

        if n:
            col = 0
            for i, f in enumerate(features):
                values, counts[i] = f.evaluate(read)
                out[:, col:col + values.shape[1]] = values
                col += values.shape[1]
        return FeatureMatrix(out, counts, self.feature_names, self.columns)
