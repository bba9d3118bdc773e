"""Exactly-once mode of the router and scorer roles (``MUSEFLOW_PROCESSING_GUARANTEE=exactly_once``).

The one deliberate departure from "every agent is a Faust agent": Faust's transaction manager
picks its transactional producer by the destination partition, which cannot commit a batch that
writes to many topics atomically with its source offsets (see :mod:`museflow.kafka.transactional`).
So in exactly-once mode these two roles run as confluent-kafka transactional loops, each on a
thread of its own, calling the same :class:`~museflow.pipeline.RouterStep` /
:class:`~museflow.pipeline.ScorerStep` as the Faust agents. Other roles stay Faust agents
(at-least-once: refit publishes compacted maps, label-join only reads).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from agents.context import WorkerContext
from museflow.errors import ConfigError, KafkaError
from museflow.kafka.transactional import TransactionalLoop
from museflow.monitoring import ScoreMonitor
from museflow.pipeline import InMessage, RouterStep, ScorerStep, StepResult
from museflow.validation import validate_event

__all__ = ["TRANSACTIONAL_ROLES", "build_loops", "start_loops"]

log = logging.getLogger(__name__)

TRANSACTIONAL_ROLES = ("router", "scorer")
MODEL_WAIT_SECONDS = 30.0


def _gate(ctx: WorkerContext, role: str) -> Callable[[], None]:
    """Hold the role until the control topics are applied, then mark it ready."""
    def wait() -> None:
        while not ctx.follower.caught_up:
            if ctx.follower.error is not None:
                raise KafkaError(f"control topics could not be read: {ctx.follower.error}")
            time.sleep(0.05)
        ctx.ready_roles.add(role)
        ctx.metrics.child(ctx.metrics.worker_up, role).set(1)
    return wait


def _timed(ctx: WorkerContext, role: str, step: Callable[[list[InMessage]], StepResult]
           ) -> Callable[[list[InMessage]], StepResult]:
    metrics = ctx.metrics
    seconds = metrics.child(metrics.stage_latency, f"{role}_{'route' if role == 'router' else 'score'}")
    sizes = metrics.child(metrics.batch_size, role)

    def process(messages: list[InMessage]) -> StepResult:
        started = time.perf_counter()
        result = step(messages)
        seconds.observe(time.perf_counter() - started)
        sizes.observe(len(messages))
        return result
    return process


def _router(ctx: WorkerContext) -> TransactionalLoop:
    step = RouterStep(ctx.state, ctx.settings.topics, validate_event)

    def process(messages: list[InMessage]) -> StepResult:
        return step.run(messages, ctx.serdes.events.decode_many([m.value for m in messages]))

    return TransactionalLoop(ctx.settings, "router", [ctx.settings.topics.events], _timed(ctx, "router", process),
                             ctx.deadletters, before_start=_gate(ctx, "router"))


def _scorer(ctx: WorkerContext) -> TransactionalLoop:
    if not ctx.models:
        raise ConfigError("the scorer role needs model names: deploy a model first (museflow models deploy SPEC) "
                          "or pass --models NAME,...")
    step = ScorerStep(ctx.state, ctx.settings.topics, ctx.serdes, monitor=ScoreMonitor(ctx.metrics))

    def process(messages: list[InMessage]) -> StepResult:
        deadline = time.monotonic() + MODEL_WAIT_SECONDS
        missing = step.missing_models(messages)
        while missing and time.monotonic() < deadline:
            if not [m for m in missing if m in ctx.state.deployments and f"deployment {m}" not in ctx.state.rejected]:
                break
            time.sleep(0.1)
            missing = step.missing_models(messages)
        return step.run(messages, ctx.serdes.events.decode_many([m.value for m in messages]))

    topics = [ctx.settings.topics.model(m) for m in sorted(ctx.models)]
    return TransactionalLoop(ctx.settings, "scorer", topics, _timed(ctx, "scorer", process), ctx.deadletters,
                             before_start=_gate(ctx, "scorer"))


def build_loops(ctx: WorkerContext) -> list[TransactionalLoop]:
    """The exactly-once loops for the transactional roles this worker runs."""
    builders = {"router": _router, "scorer": _scorer}
    return [builders[role](ctx) for role in ctx.roles if role in TRANSACTIONAL_ROLES]


def start_loops(loops: list[TransactionalLoop], stop: threading.Event,
                on_failure: Callable[[BaseException], None]) -> list[threading.Thread]:
    """Run each loop on its own thread; a loop that dies calls ``on_failure`` (the worker then stops)."""
    threads = []
    for loop in loops:
        def target(loop: TransactionalLoop = loop) -> None:
            try:
                loop.run(stop)
            except BaseException as exc:
                log.exception("%s exactly-once loop stopped", loop.role)
                on_failure(exc)
        thread = threading.Thread(target=target, name=f"museflow-eos-{loop.role}", daemon=True)
        thread.start()
        threads.append(thread)
    return threads
