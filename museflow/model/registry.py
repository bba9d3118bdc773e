"""The model registry: loads, verifies and holds many versions of many models at once.

Loading is all-or-nothing: the spec is validated, the artifact's sha256 is checked before
XGBoost sees a byte, the booster must be an XGBoost JSON/UBJ model of a binary logistic
objective with exactly the spec's column count, and a warm-up predict must succeed — only then
is the model added. A failed load never disturbs models already registered. A registered
``(name, version)`` is immutable: the same spec again is a no-op, a different one is refused.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import xgboost as xgb

from museflow.errors import ArtifactError, MuseflowError, SpecError
from museflow.model.scoring import LoadedModel
from museflow.model.spec import ModelSpec, load_spec, parse_spec

__all__ = ["ModelRegistry", "UnknownModelError", "load_model", "verify_artifact"]

_OBJECTIVES = ("binary:logistic", "reg:logistic")
_WARMUP_ROWS = 8


class UnknownModelError(MuseflowError, LookupError):
    """No model with that name (and version) is registered."""


def verify_artifact(spec: ModelSpec, data: bytes, where: str) -> xgb.Booster:
    """Check ``data`` against the spec's sha256 and format, then load it as a booster (nthread=1)."""
    tag = f"model {spec.name} version {spec.version} ({spec.origin}), artifact {where}"
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.artifact.sha256:
        raise ArtifactError(
            f"{tag}: sha256 mismatch: artifact.sha256 in the spec is {spec.artifact.sha256} but the "
            f"file has {digest}; the artifact was altered or the spec names the wrong file — restore "
            "the artifact or publish a new model version with the new sha256"
        )
    head = data[:2]
    if head[:1] == b"\x80" or data[:1] in (b"(", b"c"):
        raise ArtifactError(
            f"{tag}: looks like a Python pickle; museflow never loads pickles — export the model with "
            "booster.save_model('model.ubj') (or .json)"
        )
    if spec.artifact.format == "json" and not data.lstrip()[:2] == b'{"':
        raise ArtifactError(f"{tag}: artifact.format is json but the file is not XGBoost JSON")
    if spec.artifact.format == "ubj" and not (head[:1] == b"{" and head[1:2].isalpha()):
        raise ArtifactError(
            f"{tag}: artifact.format is ubj but the file is not XGBoost UBJSON"
            + (" (it is JSON: set format: json)" if head == b'{"' else "")
        )
    booster = xgb.Booster()
    try:
        booster.load_model(bytearray(data))
        booster.set_param({"nthread": 1})
        config = json.loads(booster.save_config())
        n_features = booster.num_features()
    except (xgb.core.XGBoostError, ValueError, KeyError) as exc:
        raise ArtifactError(f"{tag}: not a loadable XGBoost model: {str(exc).splitlines()[0]}") from exc
    objective = config.get("learner", {}).get("objective", {}).get("name")
    if objective not in _OBJECTIVES:
        raise ArtifactError(
            f"{tag}: objective {objective!r} does not output probabilities; train with "
            f"objective={_OBJECTIVES[0]!r}"
        )
    columns = spec.columns
    if n_features != len(columns):
        raise ArtifactError(
            f"{tag}: the booster expects {n_features} features but the spec declares {len(columns)} "
            f"columns ({', '.join(columns)}); the features list and the artifact do not belong together"
        )
    names = booster.feature_names
    if names is not None and tuple(names) != columns:
        diff = [f"#{i}: booster {a!r} vs spec {b!r}" for i, (a, b) in enumerate(zip(names, columns, strict=True))
                if a != b]
        raise ArtifactError(f"{tag}: feature names differ from the spec's columns: {'; '.join(diff[:5])}")
    return booster


def load_model(spec: ModelSpec, data: bytes, where: str) -> LoadedModel:
    """A verified, warmed-up :class:`LoadedModel` for ``spec`` from artifact bytes."""
    booster = verify_artifact(spec, data, where)
    model = LoadedModel(spec=spec, booster=booster, artifact_sha256=spec.artifact.sha256)
    warm = model.score([{}] * _WARMUP_ROWS)
    if warm.probability.shape != (_WARMUP_ROWS,) or not np.all(np.isfinite(warm.probability)):
        raise ArtifactError(
            f"model {spec.name} version {spec.version} ({spec.origin}): warm-up predict returned "
            f"{warm.probability!r}, not {_WARMUP_ROWS} finite probabilities"
        )
    return model


class ModelRegistry:
    """Thread-safe set of loaded models keyed by ``(name, version)``."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str], LoadedModel] = {}
        self._lock = threading.Lock()

    def load(self, spec_path: str | Path) -> LoadedModel:
        """Validate the spec file, verify and load its artifact, warm it up and register it."""
        spec = load_spec(spec_path)
        existing = self._same(spec)
        if existing is not None:
            return existing
        path = spec.artifact.resolve(spec.base_dir)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise ArtifactError(
                f"model {spec.name} version {spec.version} ({spec.origin}): artifact.uri "
                f"{spec.artifact.uri!r} not found at {path}; the path is relative to the spec file"
            ) from exc
        except OSError as exc:
            raise ArtifactError(f"model {spec.name} version {spec.version}: cannot read {path}: {exc}") from exc
        return self.add(load_model(spec, data, str(path)))

    def load_bytes(self, spec_yaml: str, artifact: bytes, origin: str) -> LoadedModel:
        """Like :meth:`load` for a spec and artifact received in memory (e.g. a deployment record)."""
        spec = parse_spec(spec_yaml, origin=origin)
        existing = self._same(spec)
        if existing is not None:
            return existing
        return self.add(load_model(spec, artifact, f"{spec.artifact.uri} (from {origin})"))

    def _same(self, spec: ModelSpec) -> LoadedModel | None:
        with self._lock:
            current = self._models.get(spec.key)
        if current is None:
            return None
        if current.spec.digest != spec.digest:
            raise _immutable(current.spec, spec)
        return current

    def add(self, model: LoadedModel) -> LoadedModel:
        """Register ``model``; the registered instance is returned (the existing one if identical)."""
        with self._lock:
            current = self._models.get(model.key)
            if current is None:
                self._models[model.key] = model
                return model
        if current.spec.digest != model.spec.digest:
            raise _immutable(current.spec, model.spec)
        return current

    def get(self, name: str, version: str) -> LoadedModel:
        """The registered model ``name`` at ``version``."""
        with self._lock:
            model = self._models.get((name, version))
        if model is None:
            known = self.versions(name)
            hint = f"registered versions: {', '.join(known)}" if known else "no version of it is registered"
            raise UnknownModelError(f"model {name} version {version} is not loaded; {hint}")
        return model

    def find(self, name: str, version: str) -> LoadedModel | None:
        """The registered model or ``None``."""
        with self._lock:
            return self._models.get((name, version))

    def versions(self, name: str) -> tuple[str, ...]:
        """Versions of ``name`` that are registered, in registration order."""
        with self._lock:
            return tuple(v for (n, v) in self._models if n == name)

    def names(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(dict.fromkeys(n for (n, _) in self._models))

    def remove(self, name: str, version: str) -> LoadedModel:
        """Unregister and return a model (scorers holding it may finish their batch)."""
        with self._lock:
            model = self._models.pop((name, version), None)
        if model is None:
            raise UnknownModelError(f"model {name} version {version} is not loaded; nothing to remove")
        return model

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._models

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)

    def __iter__(self) -> Iterator[LoadedModel]:
        with self._lock:
            return iter(list(self._models.values()))


def _immutable(current: ModelSpec, new: ModelSpec) -> SpecError:
    return SpecError(
        f"model {new.name} version {new.version} ({new.origin}) is already registered with a different "
        f"spec (digest {current.digest[:12]} from {current.origin}, new {new.digest[:12]}); specs are "
        "immutable — publish the change as a new version"
    )
