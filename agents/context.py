"""What every agent of one worker shares: settings, state, codec, dead letters, metrics, sending."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust

from museflow.config import Settings
from museflow.deadletter import DeadLetterWriter
from museflow.errors import KafkaError
from museflow.kafka.control import ControlFollower, control_decoder
from museflow.kafka.schema_registry import serdes_from_settings
from museflow.metrics import PipelineMetrics
from museflow.pipeline import DeadLetterRequest, InMessage, StepResult
from museflow.serde import Serdes
from museflow.state import PipelineState

__all__ = ["ROLES", "InFlight", "WorkerContext", "to_in_messages"]

log = logging.getLogger(__name__)

ROLES = ("router", "scorer", "refit", "label-join", "lag")


def to_in_messages(events: Sequence[Any]) -> list[InMessage]:
    """Faust events to the core's message type (bytes and coordinates, headers as a dict)."""
    out = []
    for event in events:
        msg = event.message
        headers = msg.headers
        if headers and not isinstance(headers, dict):
            headers = {k: v for k, v in headers}
        out.append(InMessage(msg.key, msg.value, msg.topic, msg.partition, msg.offset,
                             int((msg.timestamp or 0) * 1000), headers or {}))
    return out


@dataclass
class WorkerContext:
    """One worker's shared parts; built before the Faust app starts, used by every role."""

    settings: Settings
    roles: tuple[str, ...]
    models: Collection[str] | None
    metrics: PipelineMetrics = field(init=False)
    state: PipelineState = field(init=False)
    serdes: Serdes = field(init=False)
    deadletters: DeadLetterWriter = field(init=False)
    follower: ControlFollower = field(init=False)
    ready_roles: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.metrics = PipelineMetrics()
        self.state = PipelineState(model_dir=Path(self.settings.model_dir), metrics=self.metrics,
                                   serves=self.models)
        self.serdes = serdes_from_settings(self.settings)
        self.deadletters = DeadLetterWriter(self.settings.topics.dlq, serde=self.serdes.dead_letters,
                                            registry=self.metrics.registry)
        self.follower = ControlFollower(self.settings, self.state, control_decoder(self.settings, self.serdes))

    def ready(self) -> bool:
        """Readiness: control state caught up and every role's agent started."""
        return self.follower.caught_up and set(self.roles) <= self.ready_roles

    async def wait_control(self, role: str) -> None:
        """Hold a role's first batch until the control topics are applied (routes, models)."""
        while not self.follower.caught_up:
            if self.follower.error is not None:
                raise KafkaError(f"control topics could not be read: {self.follower.error}")
            await asyncio.sleep(0.05)
        self.ready_roles.add(role)
        self.metrics.child(self.metrics.worker_up, role).set(1)

    def in_flight(self, app: faust.App, stream: Any, stage: str) -> InFlight:
        """The delivery pipeline of one agent (see :class:`InFlight`)."""
        return InFlight(self, app, stream, stage, limit=self.settings.batches_in_flight)

    async def produce(self, app: faust.App, result: StepResult, stage: str) -> list[Any]:
        """Hand a step's outputs and dead letters to the producer; their delivery futures, in order."""
        producer = app.producer
        futures = []
        for out in result.out:
            futures.append(await producer.send(out.topic, out.key, out.value, None, None, list(out.headers)))
        for dead in result.dead:
            futures.append(await self._dead_letter(app, dead, stage))
        return futures

    async def _dead_letter(self, app: faust.App, dead: DeadLetterRequest, stage: str) -> Any:
        m: InMessage = dead.message
        letter = self.deadletters.build(
            m.value, reason=dead.reason, detail=dead.detail, key=m.key, stage=stage, source_topic=m.topic,
            source_partition=m.partition, source_offset=m.offset, tenant=dead.tenant,
            timestamp_ms=m.timestamp_ms or None,
        )
        if letter is None:
            raise KafkaError(f"could not build a dead letter for {m.topic}[{m.partition}]@{m.offset}; "
                             "stopping rather than dropping it")
        future = await app.producer.send(letter.topic, letter.key, letter.value, None, None, None)
        self.deadletters.count(letter.reason, stage)
        return future


_SETTLING: set[asyncio.Future[None]] = set()


class InFlight:
    """An agent's batches whose outputs are produced but not yet all acknowledged by the broker.

    ``send`` hands a batch's outputs to the producer and returns; the batch's events are acked
    (so Faust may commit their offsets) only once every one of its deliveries is acknowledged.
    Up to ``limit`` batches stay in flight, so the agent processes the next batch while the broker
    acknowledges the last one instead of waiting for a round trip per batch. Faust commits only a
    gap-free prefix of acked offsets, and a rebalance or a stop waits for every event handed out
    to be acked (``stream_wait_empty``), so at-least-once holds and a graceful stop redelivers
    nothing. A delivery that fails for good crashes the worker before anything past it is acked.
    """

    def __init__(self, ctx: WorkerContext, app: faust.App, stream: Any, stage: str, *, limit: int) -> None:
        self.ctx, self.app, self.stream, self.stage, self.limit = ctx, app, stream, stage, limit
        self._pending: deque[asyncio.Future[None]] = deque()
        self._seconds = ctx.metrics.child(ctx.metrics.stage_latency, f"{stage}_send")

    async def send(self, result: StepResult, events: Sequence[Any]) -> None:
        """Produce ``result`` for the batch ``events``; wait only while ``limit`` batches are in flight.

        A worker stopping meanwhile (Faust cancels its agents) lets the batch's produce calls
        finish first, so no batch is left half produced and unacked.
        """
        started = time.perf_counter()
        produce = asyncio.ensure_future(self.ctx.produce(self.app, result, self.stage))
        try:
            futures = await asyncio.shield(produce)
        except asyncio.CancelledError:
            futures = await produce
            self._pending.append(self._spawn(self._settle(futures, events, started)))
            raise
        self._pending.append(self._spawn(self._settle(futures, events, started)))
        while self._pending and (self._pending[0].done() or len(self._pending) > self.limit):
            # shielded: an agent cancelled while it waits must not cancel the batch's acks
            await asyncio.shield(self._pending.popleft())

    @staticmethod
    def _spawn(coro: Any) -> asyncio.Future[None]:
        # The event loop holds tasks weakly: keep each until done, even once its agent is gone.
        task = asyncio.ensure_future(coro)
        _SETTLING.add(task)
        task.add_done_callback(_SETTLING.discard)
        return task

    async def _settle(self, futures: list[Any], events: Sequence[Any], started: float) -> None:
        try:
            if futures:
                await asyncio.gather(*futures)
        except Exception as exc:
            log.error("%s: a delivery failed, stopping the worker before its events are committed: %r",
                      self.stage, exc)
            await self.app.crash(exc)
            return
        for event in events:
            await self.stream.ack(event)
        self._seconds.observe(time.perf_counter() - started)
