"""``museflow routes``: set, show, history and rollback of (tenant, intent) routes."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from museflow.cli.options import kafka_options, settings_from
from museflow.control.routing import Candidate, ModelRef, Route, load_routes_yaml
from museflow.kafka.plane import read_state, rollback, set_routes

__all__ = ["routes_group"]

_out = Console()

IF_VERSION = click.option(
    "--if-version", type=int, default=None,
    help="Refuse unless the route is still at this version (the one you read); guards against a concurrent change.")


@click.group("routes")
def routes_group() -> None:
    """Manage routes: (tenant, intent) -> champion model [+ shadow / canary candidates]."""


@routes_group.command("set")
@kafka_options
@click.option("-f", "--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML with a 'routes:' list (tenant, intent, champion, candidates, reference, watch_thresholds, "
                   "auto_rollback).")
@click.option("--tenant", help="Tenant (with --intent and --champion instead of a file).")
@click.option("--intent", help="Intent, e.g. card-not-present.")
@click.option("--champion", help="Serving model, NAME@VERSION.")
@click.option("--shadow", "shadows", multiple=True, help="Shadow candidate NAME@VERSION[:FRACTION] (repeatable).")
@click.option("--canary", "canaries", multiple=True, help="Canary candidate NAME@VERSION:FRACTION (repeatable).")
@click.option("--reference", default="uniform@1", show_default=True, help="Reference distribution NAME@VERSION.")
@click.option("--watch", "watch", multiple=True, type=float, help="Watch threshold on mapped scores (repeatable).")
@click.option("--auto-rollback", is_flag=True,
              help="Roll back to the previous route version on its own when the alert-rate watch finds a breach.")
@click.option("--by", default="cli", show_default=True, help="Who makes the change (recorded).")
@IF_VERSION
def routes_set(bootstrap_servers: str | None, topic_prefix: str | None, path: Path | None, tenant: str | None,
               intent: str | None, champion: str | None, shadows: tuple[str, ...], canaries: tuple[str, ...],
               reference: str, watch: tuple[float, ...], auto_rollback: bool, by: str, if_version: int | None) -> None:
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
                        reference=reference, watch_thresholds=tuple(watch), auto_rollback=auto_rollback)]
    else:
        raise click.UsageError("give --file, or --tenant, --intent and --champion")
    for versioned in set_routes(settings, routes, by=by, if_version=if_version):
        click.echo(f"route {versioned.key} v{versioned.version}: champion {versioned.champion}"
                   + "".join(f", {c.mode} {c.model} ({c.fraction:g})" for c in versioned.candidates))


@routes_group.command("show")
@kafka_options
@click.option("--tenant", default=None, help="Only this tenant.")
def routes_show(bootstrap_servers: str | None, topic_prefix: str | None, tenant: str | None) -> None:
    """The routes in force."""
    state = read_state(settings_from(bootstrap_servers, topic_prefix))
    table = Table("tenant", "intent", "version", "champion", "candidates", "reference", "watch", "auto rollback")
    for r in state.routes:
        if tenant and r.tenant != tenant:
            continue
        table.add_row(r.tenant, r.intent, str(r.version), str(r.champion),
                      ", ".join(f"{c.model} {c.mode} {c.fraction:g}" for c in r.candidates) or "-",
                      r.reference, ", ".join(f"{t:g}" for t in r.watch_thresholds) or "-",
                      "yes" if r.auto_rollback else "no")
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
@IF_VERSION
def routes_rollback(bootstrap_servers: str | None, topic_prefix: str | None, route: str, to_version: int | None,
                    by: str, if_version: int | None) -> None:
    """Return ROUTE (TENANT/INTENT) to a previous version, published as a new version."""
    restored, target = rollback(settings_from(bootstrap_servers, topic_prefix), route, to_version=to_version, by=by,
                                if_version=if_version)
    click.echo(f"route {route} v{restored.version}: back to v{target.version} (champion {restored.champion})")
