"""The control plane's operations: what the CLI, the demo, the benchmarks and the tests call.

Each change is a compare-and-set (:class:`museflow.kafka.control.ControlTransaction`): fence the
other writers, read the state, check the change against it, write, commit. Two writers racing
for the same route version cannot both win: the second is fenced and told to run again. An
``if_version`` makes the check explicit ("I read v3; write only if it is still v3").
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from museflow.config import Settings
from museflow.control.contract import Contract, ContractReport, judge_fit
from museflow.control.routing import ModelRef, Route
from museflow.control.state import PipelineState
from museflow.control.verdicts import verdict_record
from museflow.errors import BrokerError, ConflictError, RouteError, SpecError
from museflow.kafka.control import ControlTransaction, control_decoder, load_control_state, publish_control
from museflow.observe.estimate import GateReport
from museflow.transform.qmap import QuantileMap, map_key
from museflow.transform.reference import ReferenceDistribution
from museflow.transform.refit import DEFAULT_CONTRACT_RATES, Refitter, refitter_for_routes

__all__ = [
    "contract_gate",
    "deploy",
    "deployment_record",
    "next_reference_version",
    "promote",
    "publish_map",
    "publish_reference",
    "publish_route",
    "publish_verdict",
    "read_state",
    "recall_gate",
    "refitter_for_settings",
    "retire",
    "rollback",
    "set_routes",
    "stage_artifact",
    "superseded_maps",
    "transaction",
]

ARTIFACTS_DIR = "artifacts"
MAP_VERSIONS_KEPT = 2


def read_state(settings: Settings, *, load_models: bool | Collection[str] = False) -> PipelineState:
    """Routes, deployments, maps and references as a worker would hold them (models loaded only if
    asked: every one with True, or the names given)."""
    from museflow.kafka.schema_registry import serdes_from_settings

    return load_control_state(settings, control_decoder(settings, serdes_from_settings(settings)),
                              load_models=load_models)


def transaction(settings: Settings) -> ControlTransaction:
    """``with transaction(settings) as txn:`` read ``txn.state``, check, ``txn.send(...)``; commits on exit."""
    from museflow.kafka.schema_registry import serdes_from_settings

    return ControlTransaction(settings, control_decoder(settings, serdes_from_settings(settings)))


def _state(txn: ControlTransaction) -> PipelineState:
    assert txn.state is not None, "use the transaction inside `with`"
    return txn.state


def _check_if_version(route_key: str, latest: int, if_version: int | None) -> None:
    if if_version is not None and latest != if_version:
        raise ConflictError(f"route {route_key} is at v{latest}, not v{if_version} as read; nothing was "
                            "published — look again (museflow routes show) and retry")


def _send_route(settings: Settings, txn: ControlTransaction, route: Route) -> Route:
    """Write ``route``, which must be the next version of its key (ensures its topics first)."""
    from museflow.contracts.topics import ingest_topic, model_topic, tenant_topic
    from museflow.kafka.admin import ensure_topics
    from museflow.kafka.schema_registry import serdes_from_settings

    latest = _state(txn).routes.latest_version(route.tenant, route.intent)
    if route.version != latest + 1:
        raise ConflictError(f"route {route.key} v{route.version} is not the next version (the topic holds "
                            f"v{latest}); another writer got there first — re-read and retry")
    ensure_topics(settings, [tenant_topic(settings, route.tenant), ingest_topic(settings, route.tenant),
                             *(model_topic(settings, m.name) for m in route.models())])
    record = route.to_record()
    txn.send("route", record, serdes_from_settings(settings)["Route"].encode(record))
    return route


def publish_route(settings: Settings, route: Route) -> Route:
    """Publish ``route`` as given; its version must be the next one (refused otherwise)."""
    with transaction(settings) as txn:
        return _send_route(settings, txn, route)


def _check_models(state: PipelineState, route: Route) -> None:
    missing = [str(m) for m in route.models() if m not in state.deployments]
    if missing:
        raise RouteError(f"route {route.key} names models that are not deployed: {missing}; deployed: "
                         f"{sorted(map(str, state.deployments)) or 'none'} (museflow models deploy SPEC)")


def set_routes(settings: Settings, routes: Sequence[Route], *, by: str = "cli",
               if_version: int | None = None) -> list[Route]:
    """Publish each route as its key's next version, refused if a model is not deployed."""
    now = int(time.time() * 1000)
    published = []
    with transaction(settings) as txn:
        state = _state(txn)
        for route in routes:
            _check_models(state, route)
            latest = state.routes.latest_version(route.tenant, route.intent)
            _check_if_version(route.key, latest, if_version)
            published.append(_send_route(settings, txn, replace(route, version=latest + 1, updated_at=now,
                                                                updated_by=by)))
    return published


def recall_gate(settings: Settings, state: PipelineState, route: Route, candidate: ModelRef, *,
                margin: float, since_s: float) -> GateReport:
    """Estimated recall (CBPE, :mod:`museflow.observe.estimate`) of champion and candidate at the route's
    thresholds, on the shadow or canary traffic of the last ``since_s`` seconds. The candidate's
    scores are mapped with the map it will serve with, so both alert at the same rates."""
    from museflow.kafka.scorelog import read_score_log
    from museflow.observe.estimate import TenantScores, gate_scores, scores_by_tenant

    tenant, intent = route.tenant, route.intent
    records = read_score_log(settings, since_ms=int((time.time() - since_s) * 1000), where=lambda r: (
        r["tenant"] == tenant and r["intent"] == intent))
    champion, theirs = scores_by_tenant(records, (route.champion.name, route.champion.version),
                                        (candidate.name, candidate.version))
    serving = state.maps.resolve(candidate.name, candidate.version, tenant, intent, reference=route.reference)
    if tenant in theirs:
        scores = theirs[tenant]
        theirs[tenant] = TenantScores(scores.corrected, serving.apply(scores.corrected), scores.event_ids)
    reference = state.reference(route.reference)
    taus = route.watch_thresholds or tuple(float(t) for t in reference.threshold_for((0.05, 0.01)))
    return gate_scores(champion, theirs, {tenant: taus}, margin=margin)


def publish_verdict(settings: Settings, record: dict[str, Any], txn: ControlTransaction | None = None) -> None:
    """Append a ``ContractVerdict`` to the verdicts topic (inside ``txn``: only if the change commits)."""
    from museflow.contracts.topics import verdicts_topic
    from museflow.kafka.admin import ensure_topics
    from museflow.kafka.clients import make_producer
    from museflow.kafka.schema_registry import serdes_from_settings

    ensure_topics(settings, [verdicts_topic(settings)])
    value = serdes_from_settings(settings).verdicts.encode(record)
    key = f"{record['tenant']}/{record['intent']}".encode()
    if txn is not None:
        txn.producer.produce(settings.topics.verdicts, key=key, value=value)
        return
    producer = make_producer(settings)
    producer.produce(settings.topics.verdicts, key=key, value=value)
    if producer.flush(30) != 0:
        raise BrokerError(f"verdict for {key.decode()} not acknowledged by {settings.topics.verdicts} within 30 s")


def refitter_for_settings(settings: Settings, state: PipelineState, *,
                          window_seconds: float | None = None) -> Refitter:
    """The Refitter the refit agent runs (and ``museflow maps refit`` with it): the settings' guards and
    contract, the routes and maps in ``state``, a window of ``window_seconds`` (default the settings')."""
    return refitter_for_routes(
        state.routes, state.reference, min_samples=settings.refit_min_samples,
        min_tail_samples=settings.refit_min_tail_samples, max_alert_rate_shift=settings.refit_max_alert_rate_shift,
        window_seconds=window_seconds or settings.refit_window_seconds, store=state.maps,
        contract=Contract.from_settings(settings))


def contract_gate(settings: Settings, state: PipelineState, route: Route, qmap: QuantileMap, *,
                  contract: Contract, since_s: float = 3600.0) -> ContractReport:
    """The map the candidate would serve ``route``'s tenant with, judged at each of the route's thresholds
    on what it was fitted on and the tenant's candidate scores logged since (shadow or canary)."""
    from museflow.kafka.scorelog import read_score_log
    from museflow.observe.estimate import scores_by_tenant

    tenant, intent = route.tenant, route.intent
    since_ms = max(qmap.window_end_ms, int((time.time() - since_s) * 1000))
    records = read_score_log(settings, since_ms=since_ms, where=lambda r: (
        r["tenant"] == tenant and r["intent"] == intent))
    _, theirs = scores_by_tenant(records, (route.champion.name, route.champion.version),
                                 (qmap.model, qmap.model_version))
    evidence = theirs[tenant].corrected if tenant in theirs else None
    reference = state.reference(route.reference)
    taus = route.watch_thresholds or tuple(float(t) for t in reference.threshold_for(DEFAULT_CONTRACT_RATES))
    return ContractReport(contract, tuple(
        judge_fit(qmap, float(tau), float(reference.alert_rate(tau)), contract, evidence) for tau in taus))


def promote(settings: Settings, key: str, candidate: ModelRef, *, by: str = "cli", allow_pooled: bool = False,
            if_version: int | None = None, recall_margin: float | None = None,
            recall_window_s: float = 3600.0, explain: Callable[[str], None] | None = None,
            contract: Contract | None = None, accept_insufficient: bool = False) -> Route:
    """The route's candidate becomes champion, refused until its quantile maps are fitted, unless the
    alert-rate contract holds at every threshold of the route (:func:`contract_gate`; with
    ``accept_insufficient`` pairs without enough samples are promoted and flagged, a breach never is)
    and, with ``recall_margin``, while its estimated recall at the route's thresholds is more than the
    margin below the champion's (:func:`recall_gate`; ``explain`` receives the gates' tables)."""
    tenant, _, intent = key.partition("/")
    with transaction(settings) as txn:
        state = _state(txn)
        current = state.routes.get(tenant, intent)
        if current is None:
            raise RouteError(f"no route {key!r}; see `museflow routes show`")
        _check_if_version(key, state.routes.latest_version(tenant, intent), if_version)
        own = state.maps.get(candidate.name, candidate.version, tenant, current.reference)
        pooled = state.maps.get_pooled(candidate.name, candidate.version, intent, current.reference)
        if own is None and not (allow_pooled and pooled is not None):
            hint = " (a pooled map exists: pass --allow-pooled to accept it)" if pooled is not None else ""
            raise RouteError(
                f"refusing to promote {candidate} on {key}: its quantile map for tenant {tenant!r} onto the route's "
                f"reference {current.reference} is not fitted yet{hint}. Keep it in shadow until the refit agent "
                "publishes it (museflow maps list)")
        serving = own if own is not None else pooled
        assert serving is not None
        report = contract_gate(settings, state, current, serving, contract=contract or Contract.from_settings(settings))
        if explain is not None:
            explain(report.table())
        breaches = [r for r in report.rows if r.verdict == "breach"]
        refused = bool(breaches) or not (report.passed or accept_insufficient)
        verdict = partial(verdict_record, tenant=tenant, intent=intent, model=candidate.name,
                          model_version=candidate.version, contract=report.contract, rows=report.rows, by=by)
        if refused:
            hold = verdict("hold", route_version=current.version,
                           detail="; ".join(report.problems()) or "no threshold to judge")
            publish_verdict(settings, hold)
            raise RouteError(
                f"refusing to promote {candidate} on {key}: the alert-rate contract "
                f"({report.contract.describe()}) is not established: " + "; ".join(report.problems())
                + ("" if breaches else ". Wait for more shadow or rehearsal samples, or pass --accept-insufficient "
                   "to promote with these pairs flagged"))
        if recall_margin is not None:
            gate = recall_gate(settings, state, current, candidate, margin=recall_margin, since_s=recall_window_s)
            if explain is not None:
                explain(gate.table())
            gate.raise_if_refused()
        promoted = replace(current.promoted(candidate, by=by),
                           version=state.routes.latest_version(tenant, intent) + 1)
        if not report.passed:
            flagged = ", ".join(f"{r.threshold:g}" for r in report.rows if not r.holds)
            promoted = replace(promoted, comment=f"{promoted.comment}; promoted with insufficient alert-rate "
                                                 f"evidence at {flagged}")
        publish_verdict(settings, verdict("promote", route_version=promoted.version, detail=promoted.comment or ""),
                        txn)
        return _send_route(settings, txn, promoted)


def rollback(settings: Settings, key: str, *, to_version: int | None = None, by: str = "cli",
             if_version: int | None = None) -> tuple[Route, Route]:
    """Return the route to a previous version (default: the one before the latest), as a new version."""
    tenant, _, intent = key.partition("/")
    with transaction(settings) as txn:
        state = _state(txn)
        history = state.routes.history(tenant, intent)
        _check_if_version(key, state.routes.latest_version(tenant, intent), if_version)
        if len(history) < 2 and to_version is None:
            raise RouteError(f"route {key} has no previous version to roll back to")
        target = history[-2] if to_version is None else next((r for r in history if r.version == to_version), None)
        if target is None:
            raise RouteError(f"route {key} has no version {to_version}; versions: {[r.version for r in history]}")
        restored = replace(target, version=state.routes.latest_version(tenant, intent) + 1, deleted=False,
                           updated_at=int(time.time() * 1000), updated_by=by,
                           comment=f"rollback to v{target.version}")
        return _send_route(settings, txn, restored), target


def stage_artifact(settings: Settings, artifact: Path, sha256: str, fmt: str) -> str:
    """The artifact's URI relative to the model directory, copying it there if it lives elsewhere.

    A copy is named by its sha256 (``artifacts/<sha256>.<format>``) and never rewritten, so editing
    the original later cannot change what workers load.
    """
    root = Path(settings.model_dir).resolve()
    source = artifact.resolve()
    if source.is_relative_to(root):
        return source.relative_to(root).as_posix()
    target = root / ARTIFACTS_DIR / f"{sha256}.{fmt}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}")
        shutil.copyfile(source, partial)
        os.replace(partial, target)
    return target.relative_to(root).as_posix()


def deployment_record(settings: Settings, spec_path: str | Path, *, by: str = "cli",
                      action: str = "deploy") -> dict[str, Any]:
    """Validate a spec and its artifact locally (sha256, load, warm-up), stage the artifact, and
    return the ``ModelDeployment`` record that publishes it."""
    from museflow.model.registry import ModelRegistry
    from museflow.model.spec import dump_spec

    spec = ModelRegistry().load(spec_path).spec
    artifact = spec.artifact.resolve(spec.base_dir).resolve()
    sha256 = hashlib.sha256(artifact.read_bytes()).hexdigest()
    return {
        "model": spec.name, "version": spec.version, "action": action, "spec_yaml": dump_spec(spec),
        "spec_sha256": spec.digest, "artifact_uri": stage_artifact(settings, artifact, sha256, spec.artifact.format),
        "artifact_format": spec.artifact.format, "artifact_sha256": sha256,
        "deployed_at": int(time.time() * 1000), "deployed_by": by,
    }


def deploy(settings: Settings, spec_path: str | Path, *, by: str = "cli", action: str = "deploy") -> str:
    """Publish a deployment (or retirement) of the spec at ``spec_path``.

    Snapshots are immutable: a different spec under a deployed name and version is refused; the
    same one again is a no-op. A retire is refused while a route in force uses the version.
    Returns what happened, in words.
    """
    from museflow.contracts.topics import model_topic
    from museflow.kafka.admin import ensure_topics
    from museflow.kafka.schema_registry import serdes_from_settings

    record = deployment_record(settings, spec_path, by=by, action=action)
    ref = ModelRef(record["model"], record["version"])
    with transaction(settings) as txn:
        state = _state(txn)
        existing = state.deployments.get(ref)
        if action == "retire":
            users = [r.key for r in state.routes if ref in r.models()]
            if users:
                raise RouteError(f"{ref} is still used by routes {users}; change them first")
        elif existing is not None:
            if existing.spec_sha256 == record["spec_sha256"]:
                return f"{ref} is already deployed with this spec (no change)"
            raise SpecError(
                f"{spec_path}: {ref} is already deployed with a different spec (sha256 "
                f"{existing.spec_sha256[:12]}... vs {record['spec_sha256'][:12]}...); model specs are immutable "
                "snapshots: publish it as a new version")
        ensure_topics(settings, [model_topic(settings, ref.name)])
        txn.send("deployment", record, serdes_from_settings(settings)["ModelDeployment"].encode(record))
    return f"{ref} {'deployed' if action == 'deploy' else 'retired'} ({record['artifact_uri']} in {settings.model_dir})"


def retire(settings: Settings, spec_path: str | Path, *, by: str = "cli") -> str:
    """Unload a model version from every worker (refused while a route still uses it)."""
    return deploy(settings, spec_path, by=by, action="retire")


def publish_reference(settings: Settings, ref: ReferenceDistribution, *, point: str | None = None,
                      by: str = "cli", comment: str | None = None) -> Route | None:
    """Publish a reference (a name@version is written once); with ``point`` (TENANT/INTENT) the route
    is moved onto it in the same transaction. Returns the new route version, if any."""
    from museflow.kafka.schema_registry import serdes_from_settings

    name = f"{ref.name}@{ref.version}"
    with transaction(settings) as txn:
        state = _state(txn)
        held = state.references.get(name)
        if held is not None and held != ref:
            raise ConflictError(f"reference {name} is already published with other knots; references are "
                                "immutable — publish the next version")
        if held is None:
            record = ref.to_record()
            txn.send("reference", record, serdes_from_settings(settings).references.encode(record))
        if point is None:
            return None
        tenant, _, intent = point.partition("/")
        current = state.routes.get(tenant, intent)
        if current is None:
            raise RouteError(f"no route {point!r}; set it first (museflow routes set)")
        moved = replace(current, reference=name, version=state.routes.latest_version(tenant, intent) + 1,
                        updated_at=int(time.time() * 1000), updated_by=by, comment=comment)
        return _send_route(settings, txn, moved)


def next_reference_version(state: PipelineState, name: str) -> int:
    return max((r.version for r in state.references.values() if r.name == name), default=0) + 1


def superseded_maps(state: PipelineState, qmap: QuantileMap, keep: int = MAP_VERSIONS_KEPT) -> list[str]:
    """Keys of map records ``qmap`` makes obsolete: versions below the ``keep`` newest (``qmap`` included)."""
    held = state.keys_of("map", map_key(qmap))
    versions = sorted({v.version for v in held.values() if v is not None} | {qmap.version}, reverse=True)
    floor = versions[keep - 1] if len(versions) >= keep else 0
    return [k for k, v in held.items() if v is not None and v.version < floor]


def publish_map(settings: Settings, qmap: QuantileMap, *, state: PipelineState | None = None) -> str:
    """Publish a fitted map under its content key; tombstone the versions it makes obsolete."""
    from museflow.control.keys import map_message
    from museflow.kafka.schema_registry import serdes_from_settings

    key, value = map_message(qmap, serdes_from_settings(settings).quantile_maps.encode)
    publish_control(settings, settings.topics.quantile_maps, key, value)
    for old in superseded_maps(state, qmap) if state is not None else ():
        publish_control(settings, settings.topics.quantile_maps, old, None)
    return key

