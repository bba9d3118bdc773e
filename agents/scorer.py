"""Scorer role: consumes the topics of the models it serves; batches scored, mapped, emitted per tenant.

Faust cannot subscribe by topic pattern, so a scorer consumes the topics of the models named by
``--models`` or deployed when it starts: new versions of those models load live, a new model
name needs a scorer (re)start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust

from agents.context import WorkerContext, to_in_messages
from museflow.errors import ConfigError
from museflow.monitoring import ScoreMonitor
from museflow.pipeline import ScorerStep

__all__ = ["register"]

log = logging.getLogger(__name__)

MODEL_WAIT_SECONDS = 30.0


def register(app: faust.App, ctx: WorkerContext) -> None:
    settings, metrics = ctx.settings, ctx.metrics
    step = ScorerStep(ctx.state, settings.topics, ctx.serdes, monitor=ScoreMonitor(metrics))
    if not ctx.models:
        raise ConfigError(
            "the scorer role needs model names: deploy a model first (museflow models deploy SPEC) "
            "or pass --models NAME,..."
        )
    source = app.topic(*(settings.topics.model(m) for m in sorted(ctx.models)))
    decode_seconds = metrics.child(metrics.stage_latency, "scorer_decode")
    score_seconds = metrics.child(metrics.stage_latency, "scorer_score")
    batch_size = metrics.child(metrics.batch_size, "scorer")

    @app.agent(source, name="museflow-scorer")
    async def score(stream: Any) -> None:
        await ctx.wait_control("scorer")
        in_flight = ctx.in_flight(app, stream, "scorer")
        async for batch in stream.noack_take(settings.batch_size, within=settings.batch_window_seconds):
            messages = to_in_messages(batch)
            await _wait_for_models(step, messages)
            t0 = time.perf_counter()
            decoded = ctx.serdes.events.decode_many([m.value for m in messages])
            t1 = time.perf_counter()
            result = step.run(messages, decoded)
            score_seconds.observe(time.perf_counter() - t1)
            decode_seconds.observe(t1 - t0)
            batch_size.observe(len(messages))
            await in_flight.send(result, batch)

    async def _wait_for_models(step: ScorerStep, messages: list[Any]) -> None:
        """A route may name a version whose deployment is still loading: give it a moment."""
        deadline = time.monotonic() + MODEL_WAIT_SECONDS
        missing = step.missing_models(messages)
        while missing and time.monotonic() < deadline:
            pending = [m for m in missing if m in ctx.state.deployments
                       and f"deployment {m}" not in ctx.state.rejected]
            if not pending:
                return
            await asyncio.sleep(0.1)
            missing = step.missing_models(messages)
        if missing:
            log.error("models %s still not loaded after %.0fs; their events become dead letters",
                      sorted(map(str, missing)), MODEL_WAIT_SECONDS)
