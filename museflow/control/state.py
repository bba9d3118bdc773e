"""What a worker knows from the control topics: routes, deployed models, quantile maps, references.

The control topics are compacted, so a worker that starts later reads only the last record of
each key. To make its state equal to that of a worker that ran all along, the state is never
built from the *order* records arrived in:

1. **The view mirrors compaction.** Every record (by topic and Kafka key) replaces the one held
   under its key, a tombstone removes it, an undecodable record still displaces it — exactly
   what the log cleaner will leave.
2. **The state is a function of the view.** Records are grouped by what they describe (a route,
   a model version, a map, a reference), and each group is decided by a rule that does not
   depend on arrival order:

   - route ``tenant/intent``: per version the valid record with the smallest
     ``(updated_at, sha256 of the bytes)`` wins — first-valid-wins by the writer's stamp; the route
     in force is the highest version (none if that version deletes it).
   - deployment ``name@version``: retired for good once a valid retire record exists; otherwise
     the first record by ``(deployed_at, sha256)`` whose artifact loads. A later bad record never
     displaces a good one; a deployment that cannot load yet is retried when its artifact appears.
   - quantile map ``(model version, tenant | pooled intent)``: the highest version, ties by
     ``(created_at_ms, sha256)``.
   - reference ``name@version``: the smallest sha256 among valid records.

3. **Writers keep distinct contents under distinct keys** (:func:`museflow.control.keys.control_key`
   puts a digest of the record in the key), so compaction never lets a bad record erase a good one.

Readers on the hot path see whole objects (a route, a model, a map), never a half-applied change.
A rejected record is logged with its reason and counted; what was serving keeps serving.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from museflow.control.routing import ModelRef, Route, RouteTable
from museflow.errors import ArtifactError, MuseflowError, RouteError
from museflow.model.registry import ModelRegistry
from museflow.model.scoring import LoadedModel
from museflow.observe.metrics import PipelineMetrics
from museflow.transform.qmap import MapKey, MapStore, QuantileMap, map_key
from museflow.transform.reference import ReferenceDistribution

__all__ = ["CONTROL_KINDS", "Deployment", "PipelineState", "rejection_key", "resolve_artifact"]

log = logging.getLogger(__name__)

CONTROL_KINDS = ("route", "deployment", "map", "reference")


def rejection_key(kind: str, what: object) -> str:
    """The key of :attr:`PipelineState.rejected` for the ``kind`` record about ``what``, e.g.
    ``deployment fraud-cnp@1``; readers ask with the same call."""
    return f"{kind} {what}"


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
        deployment = cls(**{k: record[k] for k in names if k in record})
        if deployment.action not in ("deploy", "retire"):
            raise RouteError(f"deployment {deployment.model}@{deployment.version}: action {deployment.action!r} "
                             "is neither 'deploy' nor 'retire'")
        return deployment


def resolve_artifact(uri: str, model_dir: Path, what: str) -> Path:
    """The artifact of deployment ``what``: a relative path that stays inside the model directory.

    The sha256 that guards the bytes comes from the same record as the path, so a path is the
    only thing that keeps a writer of the deployments topic from making workers read any file:
    absolute paths, ``..`` and symlinks that lead out of ``model_dir`` are refused.
    """
    text = uri.removeprefix("file://")
    pure = PurePosixPath(text)
    where = f"deployment {what}: artifact_uri {uri!r}"
    if not text or pure.is_absolute() or Path(text).is_absolute():
        raise ArtifactError(f"{where} is absolute; artifacts must be relative paths inside the model "
                            f"directory {model_dir} (MUSEFLOW_MODEL_DIR); `museflow models deploy` stages them there")
    if ".." in pure.parts:
        raise ArtifactError(f"{where} climbs out with '..'; artifacts must stay inside the model directory "
                            f"{model_dir} (MUSEFLOW_MODEL_DIR)")
    root = model_dir.resolve()
    path = (root / pure).resolve()
    if not path.is_relative_to(root):
        raise ArtifactError(f"{where} resolves to {path}, outside the model directory {root} (a symlink?)")
    return path


@dataclass
class _Held:
    """One key's record as compaction would leave it: parsed, or why it is not valid."""

    kind: str
    group: Hashable | None
    value: Any
    digest: str
    error: str | None = None


@dataclass
class _Load:
    """What loading one deployment record gave: a model, or an error (retried if about the artifact)."""

    model: LoadedModel | None
    error: str = ""
    retry: bool = False


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
    """Why a record is not in force, under :func:`rejection_key`."""
    on_change: list[Callable[[str, Any], None]] = field(default_factory=list)
    _view: dict[tuple[str, str], _Held] = field(default_factory=dict)
    _groups: dict[tuple[str, Hashable], set[str]] = field(default_factory=dict)
    _loads: dict[str, _Load] = field(default_factory=dict)
    _tried: set[str] = field(default_factory=set)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        uniform = ReferenceDistribution.uniform()
        self.references.setdefault(f"{uniform.name}@{uniform.version}", uniform)

    def wants(self, model: str) -> bool:
        """Whether this worker scores ``model`` (``--models`` filter; None = every model)."""
        return self.serves is None or model in self.serves

    # -- the view -------------------------------------------------------------------------------

    def apply(self, kind: str, key: str, record: Mapping[str, Any] | None, digest: str,
              error: str | None = None) -> None:
        """Apply the record now last under ``key`` of ``kind``'s topic (None: a tombstone).

        ``error`` says the bytes could not be decoded: the record still displaces the key's
        previous one, as compaction will.
        """
        with self._lock:
            previous = self._view.pop((kind, key), None)
            if previous is not None and previous.group is not None:
                self._groups[(kind, previous.group)].discard(key)
            held = None
            if record is not None or error is not None:
                held = self._view[(kind, key)] = self._parse(kind, key, record, digest, error)
                if held.group is not None:
                    self._groups.setdefault((kind, held.group), set()).add(key)
            for group in dict.fromkeys(h.group for h in (previous, held) if h is not None and h.group is not None):
                self._derive(kind, group)
            if held is not None and held.error is not None:
                self._reject(kind, key, held.error)

    def keys_of(self, kind: str, group: Hashable) -> dict[str, Any]:
        """Kafka key -> parsed value (or None if invalid) of every record held for ``group``."""
        with self._lock:
            return {k: self._view[(kind, k)].value for k in sorted(self._groups.get((kind, group), ()))}

    def _parse(self, kind: str, key: str, record: Mapping[str, Any] | None, digest: str,
               error: str | None) -> _Held:
        if error is not None or record is None:
            return _Held(kind, None, None, digest, f"undecodable record under key {key!r}: {error}")
        try:
            if kind == "route":
                route = Route.from_record(record)
                return _Held(kind, (route.tenant, route.intent), route, digest)
            if kind == "deployment":
                deployment = Deployment.from_record(record)
                return _Held(kind, deployment.ref, deployment, digest)
            if kind == "map":
                qmap = QuantileMap.from_record(record)
                return _Held(kind, map_key(qmap), qmap, digest)
            if kind == "reference":
                ref = ReferenceDistribution.from_record(record)
                return _Held(kind, f"{ref.name}@{ref.version}", ref, digest)
        except (MuseflowError, KeyError, TypeError, ValueError) as exc:
            return _Held(kind, None, None, digest, f"{kind} record under key {key!r}: {exc}")
        raise ValueError(f"unknown control record kind {kind!r}; one of {CONTROL_KINDS}")

    def _valid(self, kind: str, group: Hashable) -> list[_Held]:
        keys = self._groups.get((kind, group), set())
        return [h for k in keys if (h := self._view[(kind, k)]).error is None]

    def _derive(self, kind: str, group: Hashable) -> None:
        if kind == "route":
            self._derive_route(group)  # type: ignore[arg-type]
        elif kind == "deployment":
            self._derive_deployment(group)  # type: ignore[arg-type]
        elif kind == "map":
            self._derive_map(group)  # type: ignore[arg-type]
        else:
            self._derive_reference(str(group))

    # -- the rules --------------------------------------------------------------------------------

    def _derive_route(self, key: tuple[str, str]) -> None:
        winners: dict[int, _Held] = {}
        for held in self._valid("route", key):
            v = held.value.version
            if v not in winners or (held.value.updated_at, held.digest) < (winners[v].value.updated_at,
                                                                            winners[v].digest):
                winners[v] = held
        previous = self.routes.get(*key)
        known = {r.version for r in self.routes.history(*key)}
        for version in known - winners.keys():
            self.routes.put(key, version, None)
        for version, held in sorted(winners.items()):
            self.routes.put(key, version, held.value)
        route = self.routes.get(*key)
        self.metrics.set_known(self.routes.tenants(), self.routes.intents())
        if route is previous or (route is not None and previous is not None and route == previous):
            return
        kind = "delete" if route is None else (
            "swap" if previous is not None and previous.champion != route.champion else "update")
        tenant, intent = key
        self.metrics.child(self.metrics.route_changes, tenant, intent, kind).inc()
        self.metrics.child(self.metrics.route_version, tenant, intent).set(
            route.version if route is not None else self.routes.latest_version(*key))
        if route is None:
            log.info("route %s/%s deleted (v%d)", tenant, intent, self.routes.latest_version(*key))
        else:
            log.info("route %s v%d applied (%s): champion %s, candidates %s", route.key, route.version, kind,
                     route.champion, [f"{c.model}:{c.mode}:{c.fraction}" for c in route.candidates])
        self._notify("route", route)

    def _derive_deployment(self, ref: ModelRef) -> None:
        valid = self._valid("deployment", ref)
        retired = any(h.value.action == "retire" for h in valid)
        candidates = sorted((h for h in valid if h.value.action == "deploy"),
                            key=lambda h: (h.value.deployed_at, h.digest))
        if retired or not candidates:
            self.deployments.pop(ref, None)
            self._unload(ref, "retired" if retired else "no valid deployment record left")
            return
        if not self.wants(ref.name):
            self.deployments[ref] = candidates[0].value
            return
        errors = []
        for i, held in enumerate(candidates):
            loaded = self._load(held)
            if loaded.model is not None:
                self.deployments[ref] = held.value
                self.rejected.pop(rejection_key("deployment", ref), None)
                self._install(ref, loaded.model)
                self._report_ignored(ref, held, candidates[i + 1:])
                return
            errors.append(loaded.error)
        self.deployments[ref] = candidates[0].value
        self._unload(ref, "; ".join(errors))
        self.rejected[rejection_key("deployment", ref)] = "; ".join(errors)

    def _report_ignored(self, ref: ModelRef, winner: _Held, later: list[_Held]) -> None:
        """Say so (once each) when a later record for a serving version differs from the one serving."""
        serving: Deployment = winner.value
        for held in later:
            other: Deployment = held.value
            same = (other.spec_yaml, other.artifact_uri, other.artifact_sha256) == (
                serving.spec_yaml, serving.artifact_uri, serving.artifact_sha256)
            if same or held.digest in self._loads:
                continue
            self._loads[held.digest] = _Load(None, "ignored: a later record for a serving version")
            self.metrics.child(self.metrics.model_loads, ref.name, "rejected").inc()
            self._reject("deployment", f"{ref} (later record)",
                         f"deployment {ref} deployed_at {other.deployed_at} by {other.deployed_by} differs from the "
                         f"one serving (deployed_at {serving.deployed_at}); ignored: a version's first valid "
                         "deployment wins and specs are immutable — publish a new version")

    def _load(self, held: _Held) -> _Load:
        done = self._loads.get(held.digest)
        if done is not None:
            return done
        deployment: Deployment = held.value
        ref = deployment.ref
        started = time.perf_counter()
        try:
            path = resolve_artifact(deployment.artifact_uri, self.model_dir, str(ref))
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise _Retryable(f"deployment {ref}: cannot read artifact {path}: "
                                 f"{exc.strerror or exc}; retried until it appears") from exc
            if hashlib.sha256(data).hexdigest() != deployment.artifact_sha256:
                raise _Retryable(f"deployment {ref}: artifact {path} does not match the deployment's sha256 "
                                 f"{deployment.artifact_sha256[:12]}...; retried until it does")
            model = ModelRegistry().load_bytes(deployment.spec_yaml, data, origin=f"deployment {ref}")
        except _Retryable as exc:
            outcome = _Load(None, str(exc), retry=True)
        except MuseflowError as exc:
            outcome = _Load(None, str(exc))
        else:
            log.info("model %s loaded in %.0f ms", ref, (time.perf_counter() - started) * 1000)
            outcome = _Load(model)
        retried = held.digest in self._tried
        self._tried.add(held.digest)
        if outcome.model is None and retried:  # a retry that fails again: said once already
            log.debug("deployment %s still cannot load: %s", ref, outcome.error)
        else:
            self.metrics.child(self.metrics.model_loads, ref.name, "rejected" if outcome.model is None
                               else "loaded").inc()
        if outcome.model is None and not retried:
            log.error("rejected deployment %s (what was serving keeps serving): %s", ref, outcome.error)
            self._notify("rejected", ("deployment", str(ref), outcome.error))
        self._loads[held.digest] = outcome
        return outcome

    def _install(self, ref: ModelRef, model: LoadedModel) -> None:
        current = self.registry.find(ref.name, ref.version)
        if current is model:
            return
        if current is not None:
            log.warning("deployment %s: another record now wins (%s); replacing the loaded model", ref,
                        model.spec.digest[:12])
            self.registry.remove(ref.name, ref.version)
        self.registry.add(model)
        self.metrics.child(self.metrics.models_loaded, ref.name).set(len(self.registry.versions(ref.name)))
        self._notify("model", model)

    def _unload(self, ref: ModelRef, why: str) -> None:
        if self.registry.find(ref.name, ref.version) is None:
            return
        self.registry.remove(ref.name, ref.version)
        log.warning("model %s unloaded: %s", ref, why)
        self.metrics.child(self.metrics.models_loaded, ref.name).set(len(self.registry.versions(ref.name)))
        self._notify("retire", ref)

    def _derive_map(self, key: MapKey) -> None:
        valid = self._valid("map", key)
        best = min(valid, key=lambda h: (-h.value.version, h.value.created_at_ms, h.digest), default=None)
        held = self.maps.held(key)
        qmap: QuantileMap | None = best.value if best is not None else None
        if qmap is held:
            return
        self.maps.set(key, qmap)
        if qmap is None:
            return
        tenant = qmap.tenant or "_pooled"
        self.metrics.child(self.metrics.map_version, qmap.model, tenant).set(qmap.version)
        self.metrics.child(self.metrics.map_created, qmap.model, tenant).set(qmap.created_at_ms / 1000)
        self.metrics.child(self.metrics.map_samples, qmap.model, tenant).set(qmap.sample_count)
        for tau, effective in qmap.evidence:
            self.metrics.child(self.metrics.map_effective_samples, qmap.model, tenant, repr(float(tau))).set(effective)
        self._notify("map", qmap)

    def _derive_reference(self, name: str) -> None:
        best = min(self._valid("reference", name), key=lambda h: h.digest, default=None)
        if best is None:
            if name != "uniform@1":
                self.references.pop(name, None)
            return
        if self.references.get(name) is best.value:
            return
        self.references[name] = best.value
        self.rejected.pop(rejection_key("reference", name), None)
        self._notify("reference", best.value)

    # -- what the rest of the worker asks -----------------------------------------------------------

    def retry_artifacts(self) -> int:
        """Retry deployments whose artifact was missing or altered; returns how many now load."""
        with self._lock:
            waiting = {ref for ref in self.deployments if self.wants(ref.name)
                       and self.registry.find(ref.name, ref.version) is None}
            if not waiting:
                return 0
            for held in [h for (kind, _), h in self._view.items() if kind == "deployment" and h.group in waiting]:
                outcome = self._loads.get(held.digest)
                if outcome is not None and outcome.retry:
                    del self._loads[held.digest]
            for ref in waiting:
                self._derive_deployment(ref)
            return sum(1 for ref in waiting if self.registry.find(ref.name, ref.version) is not None)

    def unloaded(self) -> list[ModelRef]:
        """Models a route in force uses, that this worker scores, and that are not loaded."""
        return sorted(m for m in self.routes.models()
                      if self.wants(m.name) and self.registry.find(m.name, m.version) is None)

    def reference(self, name: str) -> ReferenceDistribution:
        """A reference by ``name@version``; the uniform reference when unknown (logged once)."""
        found = self.references.get(name)
        if found is None:
            key = rejection_key("reference", name)
            if key not in self.rejected:
                self.rejected[key] = "unknown reference; using uniform@1 until it is published"
                log.warning("reference %s is not published; mapping onto uniform@1 meanwhile", name)
            return self.references["uniform@1"]
        return found

    def _reject(self, kind: str, what: str, message: str) -> None:
        self.rejected[rejection_key(kind, what)] = message
        log.error("rejected %s (what was serving keeps serving): %s", kind, message)
        self._notify("rejected", (kind, what, message))

    def _notify(self, kind: str, value: Any) -> None:
        for callback in self.on_change:
            try:
                callback(kind, value)
            except Exception:  # a listener's bug must not stop the control plane
                log.exception("state listener failed on %s", kind)


class _Retryable(MuseflowError):
    """An artifact that is missing or not (yet) the recorded bytes: worth another try later."""

