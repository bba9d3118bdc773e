"""What a worker knows from the control topics: routes, deployed models, quantile maps, references.

Updates arrive as decoded control records (see :mod:`museflow.kafka.control`) and are applied
here one at a time. Each apply is all-or-nothing: a bad route, spec, artifact or map is
rejected with a logged reason and counted, and what was serving keeps serving. Readers on the
hot path see whole objects (a route, a model, a map), never a half-applied change.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from museflow.errors import ArtifactError, MapError, MuseflowError, RouteError
from museflow.metrics import PipelineMetrics
from museflow.qmap import MapStore, QuantileMap
from museflow.reference import ReferenceDistribution
from museflow.registry import ModelRegistry
from museflow.routing import ModelRef, Route, RouteTable
from museflow.scoring import LoadedModel

__all__ = ["Deployment", "PipelineState", "resolve_artifact"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deployment:
    """A model deployment record: the whole spec plus where its artifact is."""

    model: str
    version: str
    action: str
    spec_yaml: str
    artifact_uri: str
    artifact_sha256: str
    deployed_at: int = 0
    deployed_by: str = "museflow"
    spec_sha256: str = ""
    artifact_format: str = "ubj"

    @property
    def ref(self) -> ModelRef:
        return ModelRef(self.model, self.version)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Deployment:
        names = cls.__dataclass_fields__
        return cls(**{k: record[k] for k in names if k in record})

    def to_record(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def resolve_artifact(uri: str, model_dir: Path) -> Path:
    """A deployment's artifact path: absolute, ``file://``, or relative to the model directory."""
    path = Path(uri.removeprefix("file://"))
    return path if path.is_absolute() else model_dir / path


@dataclass
class PipelineState:
    """Routes, models, maps and references in force in this worker."""

    model_dir: Path
    metrics: PipelineMetrics
    serves: Collection[str] | None = None
    routes: RouteTable = field(default_factory=RouteTable)
    registry: ModelRegistry = field(default_factory=ModelRegistry)
    maps: MapStore = field(default_factory=MapStore)
    references: dict[str, ReferenceDistribution] = field(default_factory=dict)
    deployments: dict[ModelRef, Deployment] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    on_change: list[Callable[[str, Any], None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        uniform = ReferenceDistribution.uniform()
        self.references.setdefault(f"{uniform.name}@{uniform.version}", uniform)

    def wants(self, model: str) -> bool:
        """Whether this worker scores ``model`` (``--models`` filter; None = every model)."""
        return self.serves is None or model in self.serves

    def apply_route(self, record: Mapping[str, Any]) -> Route | None:
        """Apply a route record; returns the route when it changed what is in force."""
        try:
            route = Route.from_record(record)
        except RouteError as exc:
            self._reject("route", f"{record.get('tenant')}/{record.get('intent')}", exc)
            return None
        with self._lock:
            previous = self.routes.get(route.tenant, route.intent)
            if not self.routes.apply(route):
                return None
            self.metrics.set_known(self.routes.tenants(), self.routes.intents())
        kind = "delete" if route.deleted else (
            "swap" if previous is not None and previous.champion != route.champion else "update")
        self.metrics.child(self.metrics.route_changes, route.tenant, route.intent, kind).inc()
        self.metrics.child(self.metrics.route_version, route.tenant, route.intent).set(route.version)
        log.info("route %s v%d applied (%s): champion %s, candidates %s", route.key, route.version, kind,
                 route.champion, [f"{c.model}:{c.mode}:{c.fraction}" for c in route.candidates])
        self._notify("route", route)
        return route

    def apply_deployment(self, record: Mapping[str, Any]) -> LoadedModel | None:
        """Load (or retire) a model version; a failing load leaves every loaded model serving."""
        try:
            deployment = Deployment.from_record(record)
            ref = deployment.ref
        except (TypeError, KeyError, RouteError) as exc:
            self._reject("deployment", str(record.get("model")), exc)
            return None
        if deployment.action == "retire":
            with self._lock:
                self.deployments.pop(ref, None)
                if ref.name in self.registry.names() and ref.version in self.registry.versions(ref.name):
                    self.registry.remove(ref.name, ref.version)
                    self.maps.forget(ref.name, ref.version)
            self.metrics.child(self.metrics.models_loaded, ref.name).set(len(self.registry.versions(ref.name))
                                                                         if ref.name in self.registry.names() else 0)
            self._notify("retire", ref)
            return None
        self.deployments[ref] = deployment
        if not self.wants(ref.name):
            return None
        started = time.perf_counter()
        try:
            path = resolve_artifact(deployment.artifact_uri, self.model_dir)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ArtifactError(f"model {ref}: cannot read artifact {path}: {exc.strerror or exc}") from exc
            if hashlib.sha256(data).hexdigest() != deployment.artifact_sha256:
                raise ArtifactError(f"model {ref}: artifact {path} does not match the deployment's sha256 "
                                    f"{deployment.artifact_sha256[:12]}...; it was altered after deploy")
            model = self.registry.load_bytes(deployment.spec_yaml, data, origin=f"deployment {ref}")
        except MuseflowError as exc:
            self.metrics.child(self.metrics.model_loads, ref.name, "rejected").inc()
            self._reject("deployment", str(ref), exc)
            return None
        self.metrics.child(self.metrics.model_loads, ref.name, "loaded").inc()
        self.metrics.child(self.metrics.models_loaded, ref.name).set(len(self.registry.versions(ref.name)))
        log.info("model %s loaded in %.0f ms", ref, (time.perf_counter() - started) * 1000)
        self._notify("model", model)
        return model

    def apply_map(self, record: Mapping[str, Any]) -> QuantileMap | None:
        try:
            qmap = QuantileMap.from_record(record)
        except (MapError, KeyError, TypeError, ValueError) as exc:
            self._reject("quantile map", f"{record.get('model')}@{record.get('model_version')}", exc)
            return None
        if not self.maps.put(qmap):
            held = self.maps.get_pooled(qmap.model, qmap.model_version, qmap.intent) if qmap.tenant is None \
                else self.maps.get(qmap.model, qmap.model_version, qmap.tenant)
            if held is None or held.version != qmap.version:
                return None
        tenant = qmap.tenant or "_pooled"
        self.metrics.child(self.metrics.map_version, qmap.model, tenant).set(qmap.version)
        self.metrics.child(self.metrics.map_created, qmap.model, tenant).set(qmap.created_at_ms / 1000)
        self.metrics.child(self.metrics.map_samples, qmap.model, tenant).set(qmap.sample_count)
        self._notify("map", qmap)
        return qmap

    def apply_reference(self, record: Mapping[str, Any]) -> ReferenceDistribution | None:
        try:
            ref = ReferenceDistribution.from_record(record)
        except (MapError, KeyError, TypeError, ValueError) as exc:
            self._reject("reference", f"{record.get('name')}@{record.get('version')}", exc)
            return None
        self.references[f"{ref.name}@{ref.version}"] = ref
        self._notify("reference", ref)
        return ref

    def reference(self, name: str) -> ReferenceDistribution:
        """A reference by ``name@version``; the uniform reference when unknown (logged once)."""
        found = self.references.get(name)
        if found is None:
            if name not in self.rejected:
                self.rejected[name] = "unknown reference; using uniform@1 until it is published"
                log.warning("reference %s is not published; mapping onto uniform@1 meanwhile", name)
            return self.references["uniform@1"]
        return found

    def _reject(self, kind: str, what: str, exc: Exception) -> None:
        self.rejected[f"{kind} {what}"] = str(exc)
        log.error("rejected %s %s (what was serving keeps serving): %s", kind, what, exc)
        self._notify("rejected", (kind, what, str(exc)))

    def _notify(self, kind: str, value: Any) -> None:
        for callback in self.on_change:
            try:
                callback(kind, value)
            except Exception:  # a listener's bug must not stop the control plane
                log.exception("state listener failed on %s", kind)
