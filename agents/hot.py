"""The hot roles, router and scorer, as batch loops on librdkafka hosted by the Faust worker.

Faust runs the worker (lifecycle, signals, crash supervision), the control plane's readiness and
the side agents; the two roles that carry every transaction run on
:class:`~museflow.kafka.loop.BatchLoop` (DESIGN.md, "Runtime", says why). Each loop runs on a
thread of its own; :class:`HotLoops` is the Faust-side service that starts them with the worker,
stops them with it (finishing and committing their batches), and crashes the worker (exit status 1)
when one of them fails.

When a worker runs both roles, the router scores the events of the models this worker serves in
place (no model-topic hop); forwards to models served elsewhere still go to their topics, and the
scorer loop consumes the model topics (all of them by pattern, or those named by ``--models``), so a
split deployment and a newly deployed model name work without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from mode import Service

from museflow.agents.context import WorkerContext
from museflow.config import Settings
from museflow.contracts.topics import ingest_pattern
from museflow.contracts.validation import validate_event
from museflow.control.state import rejection_key
from museflow.kafka.loop import BatchLoop, LoopHooks
from museflow.kafka.offsets import plan_start, seed_offsets
from museflow.kafka.schema_registry import DEPENDENCY
from museflow.observe.monitoring import ScoreMonitor
from museflow.runtime.pipeline import FusedStep, InMessage, RouterStep, ScorerStep, StepResult

__all__ = ["HOT_ROLES", "HotLoops", "build_loops", "hot_group"]

log = logging.getLogger(__name__)

HOT_ROLES = ("router", "scorer")
MODEL_WAIT_SECONDS = 30.0

Step = Callable[[Sequence[InMessage], Sequence[Mapping[str, Any] | Exception]], StepResult]


def hot_group(settings: Settings, role: str, models: Collection[str] | None = None) -> str:
    """The consumer group of a hot role: ``<app id>-<role>[-<models given with --models>]``.

    The same in both guarantees (switching guarantee does not start a new group at ``earliest``);
    a scorer serving a subset of models gets its own group, so it never shares partitions with
    scorers that consume other model topics.
    """
    group = f"{settings.app_id}-{role}"
    if role == "scorer" and models:
        group += "-" + "+".join(sorted(models))
    return group


def _scorer_subscription(settings: Settings, models: Collection[str] | None) -> list[str]:
    """The model topics named by ``--models``, or every model topic by pattern."""
    if models:
        return [settings.topics.model(m) for m in sorted(models)]
    return ["^" + settings.topics.model("").replace(".", "\\.") + ".+"]


def _start_group(ctx: WorkerContext, role: str, subscription: list[str], group: str) -> None:
    """Decide and say where the group starts (see :mod:`museflow.kafka.offsets`), seeding its offsets."""
    prefix = hot_group(ctx.settings, role)
    plan = plan_start(ctx.settings, group, subscription, start_from=ctx.start_from,
                      replaces=lambda other: other == prefix or other.startswith(f"{prefix}-"))
    seed_offsets(ctx.settings, plan)
    log.warning("%s: %s", role, plan.describe())


def _wait_for_models(ctx: WorkerContext, step: ScorerStep) -> Callable[[Sequence[InMessage]], None]:
    """A route may name a version whose deployment is still loading: give it a moment."""
    def wait(messages: Sequence[InMessage]) -> None:
        deadline = time.monotonic() + MODEL_WAIT_SECONDS
        missing = step.missing_models(messages)
        while missing and time.monotonic() < deadline:
            state = ctx.state
            loadable = [m for m in missing if m in state.deployments]
            if not [m for m in loadable if rejection_key("deployment", m) not in state.rejected]:
                return
            time.sleep(0.1)
            missing = step.missing_models(messages)
        if missing:
            log.error("models %s still not loaded after %.0fs; their events become dead letters",
                      sorted(map(str, missing)), MODEL_WAIT_SECONDS)
    return wait


def _loop(ctx: WorkerContext, role: str, subscription: list[str], group: str,
          step: Step) -> BatchLoop:
    metrics = ctx.metrics
    decode_seconds = metrics.child(metrics.stage_latency, f"{role}_decode")
    step_seconds = metrics.child(metrics.stage_latency, f"{role}_{'route' if role == 'router' else 'score'}")
    send_seconds = metrics.child(metrics.stage_latency, f"{role}_send")
    sizes = metrics.child(metrics.batch_size, role)
    decode = ctx.serdes.events.decode_many

    def process(messages: list[InMessage]) -> StepResult:
        t0 = time.perf_counter()
        decoded = decode([m.value for m in messages])
        t1 = time.perf_counter()
        result = step(messages, decoded)
        step_seconds.observe(time.perf_counter() - t1)
        decode_seconds.observe(t1 - t0)
        sizes.observe(len(messages))
        return result

    def assigned() -> None:
        """Ready once the loop has joined its group (output metadata fetched, partitions, if any, assigned)."""
        ctx.mark_ready(role)

    def output_topics() -> list[str]:
        topics = ctx.settings.topics
        routes = list(ctx.state.routes)
        return sorted({topics.score_log, topics.dlq, *(topics.scores(r.tenant) for r in routes),
                       *(topics.model(m.name) for r in routes for m in r.models())})

    def before_start() -> None:
        ctx.wait_control_blocking()
        _start_group(ctx, role, subscription, group)

    # Exported at 0 from the start, so "not paused" is a reading and not an absent series.
    metrics.child(metrics.dependency_paused, role, DEPENDENCY).set(0)
    metrics.child(metrics.dependency_pause_seconds, role, DEPENDENCY).inc(0)

    def paused(dependency: str) -> None:
        metrics.child(metrics.dependency_paused, role, dependency).set(1)

    def resumed(dependency: str, seconds: float) -> None:
        metrics.child(metrics.dependency_paused, role, dependency).set(0)
        metrics.child(metrics.dependency_pause_seconds, role, dependency).inc(seconds)

    hooks = LoopHooks(before_start=before_start, output_topics=output_topics, on_assigned=assigned,
                      on_delivered=send_seconds.observe, on_paused=paused, on_resumed=resumed)
    return BatchLoop(ctx.settings, role, subscription, process, ctx.deadletters, group_id=group, hooks=hooks,
                     metrics=metrics)


class _LockedMonitor:
    """One score monitor fed by both loops of a worker (fused router and scorer), one at a time."""

    def __init__(self, monitor: ScoreMonitor) -> None:
        self.monitor, self.lock = monitor, threading.Lock()

    def observe(self, *args: Any, **kwargs: Any) -> None:
        with self.lock:
            self.monitor.observe(*args, **kwargs)

    def observe_candidate(self, *args: Any, **kwargs: Any) -> None:
        with self.lock:
            self.monitor.observe_candidate(*args, **kwargs)


def build_loops(ctx: WorkerContext) -> list[BatchLoop]:
    """The batch loops of the hot roles this worker runs (router fused with scoring when it runs both)."""
    settings, state = ctx.settings, ctx.state
    loops = []
    monitor = _LockedMonitor(ScoreMonitor(ctx.metrics))

    def scorer_step() -> ScorerStep:
        return ScorerStep(state, settings.topics, ctx.serdes, monitor=monitor)

    scorer = scorer_step() if "scorer" in ctx.roles else None
    if "router" in ctx.roles:
        router = RouterStep(state, settings.topics, validate_event)
        if scorer is not None:
            in_place = scorer_step()  # each loop thread has its own step; they share the monitor
            fused = FusedStep(router, in_place, state.wants, before_score=_wait_for_models(ctx, in_place))
            route: Step = fused.run
        else:
            route = router.run
        # the shared events topic (platform producers) and every tenant's ingest topic, by pattern
        router_subscription = [settings.topics.events, ingest_pattern(settings.topics)]
        loops.append(_loop(ctx, "router", router_subscription, hot_group(settings, "router"), route))
    if scorer is not None:
        wait = _wait_for_models(ctx, scorer)

        def score(messages: Sequence[InMessage], decoded: Sequence[Mapping[str, Any] | Exception]) -> StepResult:
            wait(messages)
            return scorer.run(messages, decoded)

        loops.append(_loop(ctx, "scorer", _scorer_subscription(settings, ctx.models),
                           hot_group(settings, "scorer", ctx.models), score))
    return loops


class HotLoops(Service):
    """The Faust-side host of the hot loops: started and stopped with the worker, crashing it on failure."""

    def __init__(self, loops: list[BatchLoop], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.loops = loops
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.failure: BaseException | None = None

    async def on_start(self) -> None:
        event_loop = asyncio.get_running_loop()
        for loop in self.loops:
            def target(loop: BatchLoop = loop) -> None:
                try:
                    loop.run(self.stopping)
                except BaseException as exc:
                    log.exception("%s loop stopped: the worker stops", loop.role)
                    self.stopping.set()
                    event_loop.call_soon_threadsafe(self._crash_soon, exc)
            thread = threading.Thread(target=target, name=f"museflow-{loop.role}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def _crash_soon(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
            self.add_future(self.crash(exc))

    async def on_stop(self) -> None:
        """Let every loop finish its batch, wait for its deliveries and commit, then return."""
        self.stopping.set()
        event_loop = asyncio.get_running_loop()
        for thread in self.threads:
            await event_loop.run_in_executor(None, thread.join, 60.0)
