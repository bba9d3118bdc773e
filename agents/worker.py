"""A museflow worker: one Faust app running any subset of the roles, plus its control plane.

Every role runs in one process by default (the embedded deployment); Kubernetes runs one
Deployment per role. Roles scale by partitions and consumer groups: Kafka is the engine.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Collection, Sequence
from typing import Any

import faust

from agents.app import create_app, run_worker
from agents.context import ROLES, WorkerContext
from museflow.config import Settings
from museflow.errors import ConfigError
from museflow.http_server import start_http_server
from museflow.kafka.admin import ensure_topics
from museflow.routing import ModelRef, Route
from museflow.topics import core_topics, model_topic, tenant_topic

__all__ = ["build_worker", "deployed_model_names", "parse_roles", "run"]

log = logging.getLogger(__name__)

_ROLE_MODULES = {"router": "agents.router", "scorer": "agents.scorer", "refit": "agents.refit",
                 "label-join": "agents.label_join", "lag": "agents.lag"}


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
            specs = [tenant_topic(settings, value.tenant), *(model_topic(settings, m.name) for m in value.models())]
            ensure_topics(settings, specs)
        elif kind == "deployment" and isinstance(value, ModelRef):
            ensure_topics(settings, [model_topic(settings, value.name)])
    return listener


def deployed_model_names(settings: Settings) -> list[str]:
    """Names of the models with a deployment record (what a scorer without --models consumes)."""
    from museflow.kafka.control import control_decoder, load_control_state
    from museflow.kafka.schema_registry import serdes_from_settings

    state = load_control_state(settings, control_decoder(settings, serdes_from_settings(settings)))
    return sorted({ref.name for ref in state.deployments})


def build_worker(settings: Settings, roles: Sequence[str] = ROLES,
                 models: Collection[str] | None = None) -> tuple[faust.App, WorkerContext]:
    """The Faust app with the given roles registered, and the context they share (not started)."""
    ctx = WorkerContext(settings, tuple(roles), frozenset(models) if models else None)
    ctx.state.on_change.append(_ensure_topics_for(settings))
    app = create_app(settings)
    for role in ctx.roles:
        module = importlib.import_module(_ROLE_MODULES[role])
        if role in ("lag", "label-join"):
            module.register(app, settings, ctx.metrics)
            ctx.ready_roles.add(role)
        else:
            module.register(app, ctx)
    return app, ctx


def run(settings: Settings, roles: Sequence[str] = ROLES, models: Collection[str] | None = None,
        loglevel: str = "warn") -> None:
    """Provision topics, start the control plane and metrics endpoint, then run until stopped."""
    ensure_topics(settings, core_topics(settings))
    if "scorer" in roles and not models:
        models = deployed_model_names(settings)
        log.warning("scorer serves the models deployed now: %s", ", ".join(models) or "none")
    app, ctx = build_worker(settings, roles, models)
    server = None
    if settings.metrics_enabled:
        server = start_http_server(ctx.metrics.registry, settings.metrics_port, ready=ctx.ready)
        log.warning("metrics on %s/metrics", server.url)
    ctx.follower.start()
    try:
        run_worker(app, loglevel=loglevel)
    finally:
        ctx.follower.stop()
        if server is not None:
            server.stop()
