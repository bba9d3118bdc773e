"""A museflow worker: one Faust app running any subset of the roles, plus its control plane.

Every role runs in one process by default (the embedded deployment); Kubernetes runs one
Deployment per role. Roles scale by partitions and consumer groups: Kafka is the engine.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import faust

from museflow.agents.app import create_app, run_worker
from museflow.agents.context import ROLES, WorkerContext
from museflow.agents.hot import HOT_ROLES, HotLoops, build_loops
from museflow.config import Settings
from museflow.contracts.topics import core_topics, ingest_topic, model_topic, tenant_topic
from museflow.control.routing import ModelRef, Route
from museflow.errors import ConfigError
from museflow.kafka.admin import ensure_topics
from museflow.observe.http_server import start_http_server

__all__ = ["build_worker", "group_id", "parse_roles", "run"]

log = logging.getLogger(__name__)

_ROLE_MODULES = {
    "refit": "museflow.agents.refit", "label-join": "museflow.agents.label_join", "lag": "museflow.agents.lag",
}


def parse_roles(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``router,scorer`` -> ('router', 'scorer'); empty or ``all`` -> every role."""
    if text is None:
        return ROLES
    items = [r.strip() for r in (text.split(",") if isinstance(text, str) else text) if r.strip()]
    if not items or items == ["all"]:
        return ROLES
    unknown = sorted(set(items) - set(ROLES))
    if unknown:
        raise ConfigError(f"unknown roles {unknown}; choose from {', '.join(ROLES)} (or 'all')")
    return tuple(r for r in ROLES if r in items)


def _ensure_topics_for(settings: Settings) -> Any:
    """A state listener creating tenant and model topics as routes and deployments appear."""
    def listener(kind: str, value: Any) -> None:
        if kind == "route" and isinstance(value, Route) and not value.deleted:
            specs = [tenant_topic(settings, value.tenant), ingest_topic(settings, value.tenant),
                     *(model_topic(settings, m.name) for m in value.models())]
            ensure_topics(settings, specs)
        elif kind == "deployment" and isinstance(value, ModelRef):
            ensure_topics(settings, [model_topic(settings, value.name)])
    return listener


def group_id(settings: Settings, roles: Sequence[str], models: Collection[str] | None = None) -> str:
    """The consumer group (Faust app id) of a worker running ``roles``.

    The embedded all-roles worker uses the app id itself; a worker running a subset (one
    Deployment per role) gets ``<app id>-<roles>[-<models given with --models>]``, so processes
    that consume different topics never share a group (Faust's assignor assumes every member
    subscribes to the same topics) and refit and label-join each see the whole score log. Models
    discovered at start are not part of it: a group id must not change with deployments.
    """
    if tuple(roles) == ROLES:
        return settings.app_id
    suffix = "+".join(roles)
    if models and "scorer" in roles:
        suffix += "-" + "+".join(sorted(models))
    return f"{settings.app_id}-{suffix}"


def build_worker(settings: Settings, roles: Sequence[str] = ROLES, models: Collection[str] | None = None, *,
                 group: str | None = None, start_from: str | int | None = None,
                 ) -> tuple[faust.App, WorkerContext, HotLoops]:
    """The Faust app with the side roles registered, the hot loops it hosts, and their shared context."""
    ctx = WorkerContext(settings, tuple(roles), frozenset(models) if models else None, start_from=start_from)
    ctx.state.on_change.append(_ensure_topics_for(settings))
    app = create_app(settings.replace(processing_guarantee="at_least_once") if settings.exactly_once else settings,
                     app_id=group or group_id(settings, roles, models))
    for role in ctx.roles:
        if role in HOT_ROLES:
            continue
        module = importlib.import_module(_ROLE_MODULES[role])
        if role == "lag":
            module.register(app, settings, ctx.metrics)
            ctx.ready_roles.add(role)
        elif role == "label-join":
            module.register(app, settings, ctx.metrics, deadletters=ctx.deadletters,
                            thresholds_for=_watch_thresholds(ctx))
            ctx.ready_roles.add(role)
        else:
            module.register(app, ctx)
    return app, ctx, HotLoops(build_loops(ctx))


def _watch_thresholds(ctx: WorkerContext) -> Any:
    def thresholds_for(tenant: str) -> tuple[float, ...]:
        found = sorted({t for r in ctx.state.routes if r.tenant == tenant for t in r.watch_thresholds})
        return tuple(found) or (0.5,)
    return thresholds_for


def _run_lag_only(settings: Settings, ctx: WorkerContext, interval: float = 5.0) -> None:
    """A lag exporter needs no Faust app (one with no topics cannot start): refresh until SIGTERM."""
    import signal
    import threading

    from museflow.kafka.lag import LagCollector

    collector = LagCollector(settings, None, registry=ctx.metrics.registry, group_prefix=settings.app_id)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    ctx.ready_roles.add("lag")
    ctx.metrics.child(ctx.metrics.worker_ready, "lag").set(1)
    while not stop.is_set():
        collector.refresh()
        stop.wait(interval)


def run(settings: Settings, roles: Sequence[str] = ROLES, models: Collection[str] | None = None,
        loglevel: str = "warn", start_from: str | int | None = None) -> None:
    """Provision topics, start the control plane and metrics endpoint, then run until stopped.

    A failed hot loop crashes the worker: this raises (the CLI exits non-zero).
    """
    settings = settings.replace(log_level=loglevel)
    ensure_topics(settings, core_topics(settings))
    if tuple(roles) == ("lag",):
        ctx = WorkerContext(settings, ("lag",), None)
        with _serving(settings, ctx):
            _run_lag_only(settings, ctx)
        return
    app, ctx, hot = build_worker(settings, roles, models, start_from=start_from)
    with _serving(settings, ctx):
        run_worker(app, hot, loglevel=loglevel)


@contextlib.contextmanager
def _serving(settings: Settings, ctx: WorkerContext) -> Iterator[None]:
    """The metrics endpoint and the control follower, for as long as the worker runs."""
    server = None
    if settings.metrics_enabled:
        server = start_http_server(ctx.metrics.registry, settings.metrics_port, ready=ctx.ready)
        log.warning("metrics on %s/metrics", server.url)
    ctx.follower.start()
    try:
        yield
    finally:
        ctx.follower.stop()
        if server is not None:
            server.stop()
