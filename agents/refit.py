"""Refit role: score log in, quantile maps out (on a schedule; guards hold bad maps back)."""

from __future__ import annotations

import functools
import logging
import time
from collections import defaultdict
from typing import Any

import faust
import numpy as np

from museflow.agents.context import WorkerContext
from museflow.control.keys import control_key, value_digest
from museflow.kafka.plane import settings_contract, superseded_maps
from museflow.transform.refit import Refitter, refitter_for_routes

__all__ = ["build_refitter", "register"]

log = logging.getLogger(__name__)


def build_refitter(ctx: WorkerContext) -> Refitter:
    """A Refitter configured from the worker's settings and the routes in force."""
    settings, state = ctx.settings, ctx.state
    return refitter_for_routes(
        state.routes, state.reference, min_samples=settings.refit_min_samples,
        min_tail_samples=settings.refit_min_tail_samples, max_alert_rate_shift=settings.refit_max_alert_rate_shift,
        window_seconds=settings.refit_window_seconds, store=state.maps, contract=settings_contract(settings))


def register(app: faust.App, ctx: WorkerContext) -> None:
    settings, metrics = ctx.settings, ctx.metrics

    @functools.cache
    def refitter() -> Refitter:
        """Built on first use: the routes and references come from the control topics, read by then."""
        return build_refitter(ctx)

    @app.agent(app.topic(settings.topics.score_log), name="museflow-refit")
    async def observe(stream: Any) -> None:
        await ctx.wait_control("refit")
        async for batch in stream.take_events(settings.batch_size, within=max(settings.batch_window_seconds, 0.2)):
            records = ctx.serdes.score_log.decode_many([e.message.value for e in batch])
            groups: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
            for record in records:
                if isinstance(record, Exception):
                    log.warning("undecodable score-log record skipped: %s", record)
                    continue
                key = (record["model"], record["model_version"], record["tenant"], record["intent"])
                groups[key].extend(record["corrected_scores"])
            now = time.time()
            r = refitter()
            for (model, version, tenant, intent), scores in groups.items():
                r.observe(model, version, tenant, intent, np.asarray(scores), now)

    @app.timer(settings.refit_interval_seconds)
    async def publish() -> None:
        if not ctx.follower.caught_up:
            return
        r = refitter()
        outcomes = r.refit(time.time())
        for outcome in outcomes:
            decision = outcome.decision
            outcome_label = "published" if outcome.published else "held"
            metrics.child(metrics.map_publications, outcome_label, decision.reason).inc()
            if not outcome.published or outcome.candidate is None:
                # Waiting for samples is routine; a map held for moving alert rates needs a human.
                level = logging.WARNING if decision.reason == "alert-rate-shift" else logging.DEBUG
                log.log(level, "map for %s held: %s", outcome.key, decision.message)
                continue
            qmap = outcome.candidate
            record = qmap.to_record()
            value = ctx.serdes.quantile_maps.encode(record)
            key = control_key("map", record, value_digest(value))
            await (await app.producer.send(settings.topics.quantile_maps, key.encode(), value, None, None, None))
            for old in superseded_maps(ctx.state, qmap):
                await (await app.producer.send(settings.topics.quantile_maps, old.encode(), None, None, None, None))
            log.info("published %s", qmap)
