"""``museflow routes``: set, show, history and rollback of (tenant, intent) routes."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from museflow.cli.options import kafka_options, settings_from
from museflow.config import Settings
from museflow.errors import RouteError
from museflow.routing import Candidate, ModelRef, Route, load_routes_yaml, route_key
from museflow.state import PipelineState

__all__ = ["promote_route", "publish_route", "read_state", "routes_group"]

_out = Console()


def read_state(settings: Settings) -> PipelineState:
    """Routes, deployments, maps and references as published (no model is loaded)."""
    from museflow.kafka.control import control_decoder, load_control_state
    from museflow.kafka.schema_registry import serdes_from_settings

    return load_control_state(settings, control_decoder(settings, serdes_from_settings(settings)))


def publish_route(settings: Settings, route: Route) -> None:
    """Publish a route version and make sure its tenant's and models' topics exist."""
    from museflow.kafka.admin import ensure_topics
    from museflow.kafka.control import publish_control
    from museflow.kafka.schema_registry import serdes_from_settings
    from museflow.topics import model_topic, tenant_topic

    ensure_topics(settings, [tenant_topic(settings, route.tenant),
                             *(model_topic(settings, m.name) for m in route.models())])
    value = serdes_from_settings(settings)["Route"].encode(route.to_record())
    publish_control(settings, settings.topics.routes, route_key(route.tenant, route.intent), value)


def _check_models(state: PipelineState, route: Route) -> None:
    missing = [str(m) for m in route.models() if m not in state.deployments]
    if missing:
        raise RouteError(f"route {route.key} names models that are not deployed: {missing}; deployed: "
                         f"{sorted(map(str, state.deployments)) or 'none'} (museflow models deploy SPEC)")


def promote_route(settings: Settings, key: str, candidate: ModelRef, *, by: str, allow_pooled: bool) -> Route:
    """The route's candidate becomes champion, refused until its quantile maps are fitted."""
    tenant, _, intent = key.partition("/")
    state = read_state(settings)
    current = state.routes.get(tenant, intent)
    if current is None:
        raise RouteError(f"no route {key!r}; see `museflow routes show`")
    own = state.maps.get(candidate.name, candidate.version, tenant)
    pooled = state.maps.get_pooled(candidate.name, candidate.version, intent)
    if own is None and not (allow_pooled and pooled is not None):
        hint = " (a pooled map exists: pass --allow-pooled to accept it)" if pooled is not None else ""
        raise RouteError(
            f"refusing to promote {candidate} on {key}: its quantile map for tenant {tenant!r} is not fitted "
            f"yet{hint}. Keep it in shadow until the refit agent publishes it (museflow maps list)")
    promoted = current.promoted(candidate, by=by)
    promoted = replace(promoted, version=state.routes.latest_version(tenant, intent) + 1)
    publish_route(settings, promoted)
    return promoted


@click.group("routes")
def routes_group() -> None:
    """Manage routes: (tenant, intent) -> champion model [+ shadow / canary candidates]."""


@routes_group.command("set")
@kafka_options
@click.option("-f", "--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML with a 'routes:' list (tenant, intent, champion, candidates, reference, watch_thresholds).")
@click.option("--tenant", help="Tenant (with --intent and --champion instead of a file).")
@click.option("--intent", help="Intent, e.g. card-not-present.")
@click.option("--champion", help="Serving model, NAME@VERSION.")
@click.option("--shadow", "shadows", multiple=True, help="Shadow candidate NAME@VERSION[:FRACTION] (repeatable).")
@click.option("--canary", "canaries", multiple=True, help="Canary candidate NAME@VERSION:FRACTION (repeatable).")
@click.option("--reference", default="uniform@1", show_default=True, help="Reference distribution NAME@VERSION.")
@click.option("--watch", "watch", multiple=True, type=float, help="Watch threshold on mapped scores (repeatable).")
@click.option("--by", default="cli", show_default=True, help="Who makes the change (recorded).")
def routes_set(bootstrap_servers: str | None, topic_prefix: str | None, path: Path | None, tenant: str | None,
               intent: str | None, champion: str | None, shadows: tuple[str, ...], canaries: tuple[str, ...],
               reference: str, watch: tuple[float, ...], by: str) -> None:
    """Publish new route versions (refused if a model is not deployed)."""
    settings = settings_from(bootstrap_servers, topic_prefix)
    if path is not None:
        routes = load_routes_yaml(path)
    elif tenant and intent and champion:
        candidates = [Candidate(ModelRef.parse(s.split(":")[0]), "shadow", float(s.split(":")[1]) if ":" in s else 1.0)
                      for s in shadows]
        for c in canaries:
            ref, sep, fraction = c.partition(":")
            if not sep:
                raise click.BadParameter(f"{c!r}: a canary needs a fraction, e.g. fraud-cnp@2:0.1",
                                         param_hint="--canary")
            candidates.append(Candidate(ModelRef.parse(ref), "canary", float(fraction)))
        routes = [Route(tenant=tenant, intent=intent, champion=ModelRef.parse(champion), candidates=tuple(candidates),
                        reference=reference, watch_thresholds=tuple(watch))]
    else:
        raise click.UsageError("give --file, or --tenant, --intent and --champion")
    state = read_state(settings)
    now = int(time.time() * 1000)
    for route in routes:
        _check_models(state, route)
        versioned = replace(route, version=state.routes.latest_version(route.tenant, route.intent) + 1,
                            updated_at=now, updated_by=by)
        publish_route(settings, versioned)
        click.echo(f"route {versioned.key} v{versioned.version}: champion {versioned.champion}"
                   + "".join(f", {c.mode} {c.model} ({c.fraction:g})" for c in versioned.candidates))


@routes_group.command("show")
@kafka_options
@click.option("--tenant", default=None, help="Only this tenant.")
def routes_show(bootstrap_servers: str | None, topic_prefix: str | None, tenant: str | None) -> None:
    """The routes in force."""
    state = read_state(settings_from(bootstrap_servers, topic_prefix))
    table = Table("tenant", "intent", "version", "champion", "candidates", "reference", "watch")
    for r in state.routes:
        if tenant and r.tenant != tenant:
            continue
        table.add_row(r.tenant, r.intent, str(r.version), str(r.champion),
                      ", ".join(f"{c.model} {c.mode} {c.fraction:g}" for c in r.candidates) or "-",
                      r.reference, ", ".join(f"{t:g}" for t in r.watch_thresholds) or "-")
    _out.print(table)


@routes_group.command("history")
@kafka_options
@click.argument("route")
def routes_history(bootstrap_servers: str | None, topic_prefix: str | None, route: str) -> None:
    """Every version of ROUTE (TENANT/INTENT) still in the compacted topic's history."""
    tenant, _, intent = route.partition("/")
    state = read_state(settings_from(bootstrap_servers, topic_prefix))
    table = Table("version", "champion", "candidates", "updated", "by", "comment")
    for r in state.routes.history(tenant, intent):
        table.add_row(str(r.version), str(r.champion) + (" (deleted)" if r.deleted else ""),
                      ", ".join(f"{c.model} {c.mode} {c.fraction:g}" for c in r.candidates) or "-",
                      time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.updated_at / 1000)), r.updated_by,
                      r.comment or "")
    _out.print(table)


@routes_group.command("rollback")
@kafka_options
@click.argument("route")
@click.option("--to", "to_version", type=int, default=None, help="Version to return to (default: the previous).")
@click.option("--by", default="cli", show_default=True)
def routes_rollback(bootstrap_servers: str | None, topic_prefix: str | None, route: str, to_version: int | None,
                    by: str) -> None:
    """Return ROUTE (TENANT/INTENT) to a previous version, published as a new version."""
    settings = settings_from(bootstrap_servers, topic_prefix)
    tenant, _, intent = route.partition("/")
    state = read_state(settings)
    history = state.routes.history(tenant, intent)
    if len(history) < 2 and to_version is None:
        raise RouteError(f"route {route} has no previous version to roll back to")
    target = history[-2] if to_version is None else next((r for r in history if r.version == to_version), None)
    if target is None:
        raise RouteError(f"route {route} has no version {to_version}; versions: {[r.version for r in history]}")
    restored = replace(target, version=state.routes.latest_version(tenant, intent) + 1, deleted=False,
                       updated_at=int(time.time() * 1000), updated_by=by, comment=f"rollback to v{target.version}")
    publish_route(settings, restored)
    click.echo(f"route {route} v{restored.version}: back to v{target.version} (champion {restored.champion})")
