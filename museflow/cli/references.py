"""``museflow references``: freeze a tenant's reference at onboarding, create parametric ones, list."""

from __future__ import annotations

import time

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from museflow.cli.options import kafka_options, settings_from
from museflow.errors import MapError, RouteError
from museflow.transform.reference import ReferenceDistribution

__all__ = ["references_group"]

_RATES = (0.05, 0.01, 0.005, 0.001)


def _thresholds(ref: ReferenceDistribution) -> str:
    return ", ".join(f"{rate:.1%}: {float(ref.threshold_for(rate)):.4g}" for rate in _RATES)


@click.group("references")
def references_group() -> None:
    """Reference distributions that tenants' scores are mapped onto."""


@references_group.command("freeze")
@kafka_options
@click.argument("route")
@click.option("--model", default=None, help="Model NAME@VERSION whose scores to freeze (default: the champion).")
@click.option("--since", "since_s", type=float, default=3600.0, show_default=True,
              help="Use scores logged in the last SECONDS.")
@click.option("--min-samples", default=10_000, show_default=True, help="Refuse with fewer scores than this.")
@click.option("--name", default=None, help="Reference name (default TENANT-INTENT).")
@click.option("--apply/--no-apply", default=True, show_default=True,
              help="Point the route at the new reference (a new route version).")
def freeze(bootstrap_servers: str | None, topic_prefix: str | None, route: str, model: str | None, since_s: float,
           min_samples: int, name: str | None, apply: bool) -> None:
    """Freeze ROUTE's (TENANT/INTENT) reference from its incumbent model's corrected scores.

    The incumbent's map onto its own frozen reference is close to identity, so thresholds the
    tenant set on its scores keep their meaning through later model swaps.
    """
    from museflow.control.routing import ModelRef
    from museflow.kafka.plane import next_reference_version, publish_reference, read_state
    from museflow.kafka.scorelog import read_score_log

    settings = settings_from(bootstrap_servers, topic_prefix)
    tenant, _, intent = route.partition("/")
    state = read_state(settings)
    current = state.routes.get(tenant, intent)
    if current is None:
        raise RouteError(f"no route {route!r}; set it first (museflow routes set)")
    ref_model = ModelRef.parse(model) if model else current.champion
    records = read_score_log(settings, since_ms=int((time.time() - since_s) * 1000), where=lambda r: (
        r["tenant"] == tenant and r["intent"] == intent and r["model"] == ref_model.name
        and r["model_version"] == ref_model.version))
    scores = np.array([r["corrected_score"] for r in records])
    if scores.size < min_samples:
        raise MapError(f"only {scores.size} scores of {ref_model} for {route} in the last {since_s:.0f}s; "
                       f"need {min_samples} (--min-samples) to freeze a reference with a usable tail")
    ref_name = name or f"{tenant}-{intent}"
    ref = ReferenceDistribution.from_samples(ref_name, next_reference_version(state, ref_name), scores)
    updated = publish_reference(settings, ref, point=route if apply else None,
                                comment=f"reference frozen from {ref_model}")
    click.echo(f"reference {ref.name}@{ref.version} frozen from {scores.size:,} scores of {ref_model}; "
               f"thresholds by alert rate: {_thresholds(ref)}")
    if updated is not None:
        click.echo(f"route {route} v{updated.version} now maps onto {ref.name}@{ref.version}")


@references_group.command("create")
@kafka_options
@click.argument("name")
@click.option("--uniform", "kind", flag_value="uniform", default=True, help="Percentile scores on [0, 1].")
@click.option("--beta", "beta_ab", nargs=2, type=float, default=None, help="A beta(A, B) distribution.")
def create(bootstrap_servers: str | None, topic_prefix: str | None, name: str, kind: str,
           beta_ab: tuple[float, float] | None) -> None:
    """Publish a parametric reference NAME (uniform percentile scores, or beta(A, B))."""
    from museflow.kafka.plane import next_reference_version, publish_reference, read_state

    settings = settings_from(bootstrap_servers, topic_prefix)
    version = next_reference_version(read_state(settings), name)
    ref = (ReferenceDistribution.beta(name, version, *beta_ab) if beta_ab
           else ReferenceDistribution.uniform(name, version))
    publish_reference(settings, ref)
    click.echo(f"reference {ref.name}@{ref.version} ({ref.kind}); thresholds by alert rate: {_thresholds(ref)}")


@references_group.command("list")
@kafka_options
def list_references(bootstrap_servers: str | None, topic_prefix: str | None) -> None:
    """Published references and the thresholds that give common alert rates."""
    from museflow.kafka.plane import read_state

    state = read_state(settings_from(bootstrap_servers, topic_prefix))
    table = Table("reference", "kind", "knots", *(f"tau @ {r:.1%}" for r in _RATES), "used by")
    for key, ref in sorted(state.references.items()):
        users = [r.key for r in state.routes if r.reference == key]
        table.add_row(key, ref.kind, str(len(ref.xs)), *(f"{float(ref.threshold_for(r)):.4g}" for r in _RATES),
                      ", ".join(users) or "-")
    Console().print(table)
