"""Router role: events in, each forwarded to the topic of the model that serves its route."""

from __future__ import annotations

import time
from typing import Any

import faust

from agents.context import WorkerContext, to_in_messages
from museflow.pipeline import RouterStep
from museflow.validation import validate_event

__all__ = ["register"]


def register(app: faust.App, ctx: WorkerContext) -> None:
    settings, metrics = ctx.settings, ctx.metrics
    step = RouterStep(ctx.state, settings.topics, validate_event)
    decode_seconds = metrics.child(metrics.stage_latency, "router_decode")
    route_seconds = metrics.child(metrics.stage_latency, "router_route")
    batch_size = metrics.child(metrics.batch_size, "router")

    @app.agent(app.topic(settings.topics.events), name="museflow-router")
    async def route(stream: Any) -> None:
        await ctx.wait_control("router")
        in_flight = ctx.in_flight(app, stream, "router")
        async for batch in stream.noack_take(settings.batch_size, within=settings.batch_window_seconds):
            t0 = time.perf_counter()
            messages = to_in_messages(batch)
            decoded = ctx.serdes.events.decode_many([m.value for m in messages])
            t1 = time.perf_counter()
            result = step.run(messages, decoded)
            route_seconds.observe(time.perf_counter() - t1)
            decode_seconds.observe(t1 - t0)
            batch_size.observe(len(messages))
            await in_flight.send(result, batch)
