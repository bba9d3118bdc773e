"""Batch scoring: features, one batched XGBoost predict, then posterior correction.

The first level of DESIGN.md's two-level score transformation lives here: a model trained on
negatives down-sampled at rate beta outputs s, and the probability on real traffic is
``p = beta*s / (beta*s - s + 1)``. Quantile mapping (the second level) happens downstream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np
import numpy.typing as npt
import xgboost as xgb

from museflow.errors import ArtifactError, SpecError
from museflow.model.features import FeatureBuilder, FeatureMatrix
from museflow.model.spec import ModelSpec

__all__ = ["LoadedModel", "ScoreBatch", "posterior_correction"]

FloatArray = npt.NDArray[np.float64]


@overload
def posterior_correction(s: float, beta: float) -> float: ...
@overload
def posterior_correction(s: npt.ArrayLike, beta: float) -> FloatArray: ...
def posterior_correction(s: float | npt.ArrayLike, beta: float) -> float | FloatArray:
    """Undo negative down-sampling at rate ``beta`` in (0, 1]: ``beta*s / (beta*s - s + 1)``.

    The result is capped at 1.0 so rounding at s = 1 never yields a probability above one.
    """
    if not 0.0 < beta <= 1.0:
        raise SpecError(f"negative_sampling_rate beta must be in (0, 1], got {beta}")
    if isinstance(s, float | int):
        return float(s) if beta == 1.0 else min(1.0, beta * s / (beta * s - s + 1.0))
    arr = np.asarray(s, dtype=np.float64)
    if beta == 1.0:
        return arr.copy()
    out: FloatArray = beta * arr / (beta * arr - arr + 1.0)
    return np.minimum(out, 1.0, out=out)


@dataclass(frozen=True)
class ScoreBatch:
    """One model's scores for a batch: raw model output, corrected probability, default counts."""

    model: str
    version: str
    raw: FloatArray
    probability: FloatArray
    default_counts: npt.NDArray[np.int64]
    feature_names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.raw.shape[0])

    def defaults_by_feature(self) -> dict[str, int]:
        """Rows of this batch that used each feature's default (missing source)."""
        return dict(zip(self.feature_names, self.default_counts.tolist(), strict=True))


@dataclass
class LoadedModel:
    """A validated spec with its verified XGBoost booster, ready to score batches."""

    spec: ModelSpec
    booster: xgb.Booster
    artifact_sha256: str
    features: FeatureBuilder = field(init=False)

    def __post_init__(self) -> None:
        self.features = FeatureBuilder(self.spec)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def key(self) -> tuple[str, str]:
        return self.spec.key

    @property
    def beta(self) -> float:
        return self.spec.negative_sampling_rate

    def predict_matrix(self, matrix: FeatureMatrix) -> FloatArray:
        """Raw model scores for an already built matrix: exactly one ``inplace_predict`` call."""
        if matrix.n_rows == 0:
            return np.empty(0, dtype=np.float64)
        try:
            raw = self.booster.inplace_predict(matrix.values, validate_features=False)
        except xgb.core.XGBoostError as exc:
            raise ArtifactError(
                f"model {self.name} version {self.version} failed to predict on "
                f"{matrix.values.shape}: {exc}"
            ) from exc
        return np.asarray(raw, dtype=np.float64).reshape(matrix.n_rows)

    def score(self, events: Sequence[Mapping[str, Any]]) -> ScoreBatch:
        """Score a batch of decoded events (features -> one predict -> posterior correction)."""
        matrix = self.features.build(events)
        raw = self.predict_matrix(matrix)
        return ScoreBatch(
            model=self.name,
            version=self.version,
            raw=raw,
            probability=posterior_correction(raw, self.beta),
            default_counts=matrix.default_counts,
            feature_names=matrix.feature_names,
        )
