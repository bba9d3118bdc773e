"""``museflow worker`` and ``museflow topics``."""

from __future__ import annotations

import click

from museflow.cli.options import kafka_options, settings_from

__all__ = ["topics_group", "worker_command"]

ROLE_HELP = "router, scorer, refit, label-join, lag (comma-separated; default all)"


@click.command("worker")
@kafka_options
@click.option("--roles", default="all", show_default=True, help=f"Roles to run: {ROLE_HELP}.")
@click.option("--models", default=None, help="Model names this worker scores (default: every deployed model).")
@click.option("--metrics-port", type=int, default=None, help="HTTP port for /metrics, /healthz, /readyz "
              "[env MUSEFLOW_METRICS_PORT, default 9108; 0 = a free port].")
@click.option("--app-id", default=None, help="Consumer group / Faust app id [env MUSEFLOW_APP_ID].")
@click.option("--loglevel", default="warn", show_default=True,
              type=click.Choice(["crit", "error", "warn", "info", "debug"]))
@click.option("--from", "start_from", default=None, metavar="earliest|latest|ISO-TIME",
              help="Move the router and scorer groups here before joining (a deliberate replay or skip; refused "
                   "while other members of the group run). Without it a group resumes, takes over from the group "
                   "it replaces, or starts at MUSEFLOW_NEW_GROUP_START.")
def worker_command(bootstrap_servers: str | None, topic_prefix: str | None, roles: str, models: str | None,
                   metrics_port: int | None, app_id: str | None, loglevel: str, start_from: str | None) -> None:
    """Run a worker: every role in one process, or the roles given (one Deployment per role in k8s)."""
    from museflow.agents.worker import parse_roles, run
    from museflow.kafka.offsets import parse_start

    settings = settings_from(bootstrap_servers, topic_prefix, metrics_port=metrics_port, app_id=app_id)
    model_names = [m.strip() for m in models.split(",") if m.strip()] if models else None
    run(settings, parse_roles(roles), model_names, loglevel=loglevel, start_from=parse_start(start_from))


@click.group("topics")
def topics_group() -> None:
    """Provision museflow's topics."""


@topics_group.command("create")
@kafka_options
@click.option("--tenant", "tenants", multiple=True,
              help="Also create this tenant's scored and ingest topics (repeatable).")
@click.option("--model", "models", multiple=True, help="Also create this model's topic (repeatable).")
def topics_create(bootstrap_servers: str | None, topic_prefix: str | None, tenants: tuple[str, ...],
                  models: tuple[str, ...]) -> None:
    """Create every topic with explicit partitions and configs (idempotent)."""
    from museflow.contracts.topics import core_topics, ingest_topic, model_topic, tenant_topic
    from museflow.control.routing import validate_name
    from museflow.kafka.admin import ensure_topics

    settings = settings_from(bootstrap_servers, topic_prefix)
    named = [validate_name("tenant", t) for t in tenants]
    specs = [*core_topics(settings), *(tenant_topic(settings, t) for t in named),
             *(ingest_topic(settings, t) for t in named),
             *(model_topic(settings, validate_name("model", m)) for m in models)]
    created = ensure_topics(settings, specs)
    for spec in specs:
        state = "created" if spec.name in created else "exists"
        click.echo(f"{state:8} {spec.name} partitions={spec.partitions} {spec.config or ''}")
