"""Refit role: score log in, quantile maps out (on a schedule; guards hold bad maps back).

The same role watches the maps it serves: every served score on the log feeds the alert-rate
contract's watch (:class:`museflow.observe.contract_watch.ServedWatch`), whose breaches become
verdict records and, where the route asks, rollbacks (:class:`museflow.agents.guard.ContractGuard`).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import faust

from museflow.agents.context import WorkerContext, agent_rejecter, readable
from museflow.agents.guard import ContractGuard
from museflow.control.contract import Contract
from museflow.control.keys import map_message
from museflow.kafka.plane import refitter_for_settings, superseded_maps
from museflow.observe.contract_watch import ServedWatch
from museflow.transform.refit import Refitter

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(app: faust.App, ctx: WorkerContext) -> None:
    settings, metrics = ctx.settings, ctx.metrics

    @functools.cache
    def refitter() -> Refitter:
        """Built on first use: the routes and references come from the control topics, read by then."""
        return refitter_for_settings(ctx.settings, ctx.state)

    reject = agent_rejecter(app, ctx.deadletters, "refit")
    state = ctx.state
    guard = ContractGuard(settings, state)
    served = ServedWatch(metrics, Contract.from_settings(settings), route_at=state.routes.at,
                         current=state.routes.get, reference=state.reference,
                         pairs=settings.contract_watch_pairs, epoch=settings.contract_watch_epoch)

    @app.agent(app.topic(settings.topics.score_log), name="museflow-refit")
    async def observe(stream: Any) -> None:
        await ctx.wait_control("refit")
        async for batch in stream.take_events(settings.batch_size, within=max(settings.batch_window_seconds, 0.2)):
            # the score log's one bad-input policy, as in label-join: an undecodable record is a dead letter
            records = await readable(batch, ctx.serdes.score_log.decode_many, reject)
            refitter().observe_log(records, time.time())
            for breach in served.observe_log(records):
                guard(breach)

    @app.timer(settings.refit_interval_seconds)  # type: ignore[untyped-decorator]  # faust's timer is untyped
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
            key, value = map_message(qmap, ctx.serdes.quantile_maps.encode)
            await (await app.producer.send(settings.topics.quantile_maps, key.encode(), value, None, None, None))
            for old in superseded_maps(ctx.state, qmap):
                await (await app.producer.send(settings.topics.quantile_maps, old.encode(), None, None, None, None))
            log.info("published %s", qmap)
