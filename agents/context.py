"""What every agent of one worker shares: settings, state, codec, dead letters, metrics, sending."""

from __future__ import annotations

import asyncio
import logging
import time
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

__all__ = ["ROLES", "WorkerContext", "to_in_messages"]

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

    async def send(self, app: faust.App, result: StepResult, stage: str) -> None:
        """Produce a step's output and dead letters; return once the broker acknowledged all.

        A worker stopping meanwhile (Faust cancels its agents) lets the batch finish first: its
        events are then acked and committed on the way out instead of being scored again by the
        next owner of the partitions (a graceful stop should leave no duplicates).
        """
        task = asyncio.ensure_future(self._send(app, result, stage))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task
            raise

    async def _send(self, app: faust.App, result: StepResult, stage: str) -> None:
        started = time.perf_counter()
        producer = app.producer
        futures = []
        for out in result.out:
            futures.append(await producer.send(out.topic, out.key, out.value, None, None, list(out.headers)))
        for dead in result.dead:
            futures.append(await self._dead_letter(app, dead, stage))
        if futures:
            await asyncio.gather(*futures)
        self.metrics.child(self.metrics.stage_latency, f"{stage}_send").observe(time.perf_counter() - started)

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
