"""What every role of one worker shares: settings, state, codec, dead letters, metrics, readiness."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust

from museflow.config import Settings
from museflow.contracts.deadletter import DeadLetterWriter
from museflow.contracts.serde import Serdes
from museflow.control.state import PipelineState
from museflow.errors import BrokerError
from museflow.kafka.control import ControlFollower, control_decoder
from museflow.kafka.schema_registry import serdes_from_settings
from museflow.observe.metrics import PipelineMetrics

__all__ = ["ROLES", "Reject", "WorkerContext", "agent_rejecter", "readable"]

log = logging.getLogger(__name__)

ROLES = ("router", "scorer", "refit", "label-join", "lag")

Reject = Callable[[Any, Exception], Awaitable[bool]]
"""``await reject(event, error)``: a Faust agent's record that cannot be read becomes a dead letter."""


def agent_rejecter(app: faust.App, writer: DeadLetterWriter, stage: str) -> Reject:
    """How a Faust agent dead-letters a record: ``writer`` builds and counts, the app's producer sends.

    The reason code is the error's (``undecodable`` when it has none); the dead letter keeps the
    original key and bytes and the record's topic, partition and offset.
    """
    dlq = app.topic(writer.topic)

    async def send(topic: str, key: bytes | None, value: bytes) -> None:
        await dlq.send(key=key, value=value)

    async def reject(event: Any, error: Exception) -> bool:
        msg = event.message
        return await writer.awrite(send, msg.value, reason=getattr(error, "reason", "undecodable"),
                                   detail=str(error), key=msg.key, stage=stage, source_topic=msg.topic,
                                   source_partition=msg.partition, source_offset=msg.offset)
    return reject


async def readable(batch: Sequence[Any], decode_many: Callable[[list[bytes | None]], list[Any]],
                   reject: Reject) -> list[Mapping[str, Any]]:
    """The records of a Faust batch that decode; each one that does not is rejected (a dead letter)."""
    good: list[Mapping[str, Any]] = []
    for event, record in zip(batch, decode_many([e.message.value for e in batch]), strict=True):
        if isinstance(record, Exception):
            await reject(event, record)
        else:
            good.append(record)
    return good


@dataclass
class WorkerContext:
    """One worker's shared parts; built before the Faust app starts, used by every role."""

    settings: Settings
    roles: tuple[str, ...]
    models: Collection[str] | None
    start_from: str | int | None = None
    """``--from``: where the hot groups are moved before joining (None: resume / take over / new)."""
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
        """Readiness: control state caught up, every role started, every model a route serves here loaded."""
        if not (self.follower.caught_up and set(self.roles) <= self.ready_roles):
            return False
        return "scorer" not in self.roles or not self.state.unloaded()

    def control_caught_up(self) -> bool:
        """True once the control topics are applied (routes, models); raises if they cannot be read."""
        if not self.follower.caught_up:
            if self.follower.error is not None:
                raise BrokerError(f"control topics could not be read: {self.follower.error}")
            return False
        return True

    def mark_ready(self, role: str) -> None:
        self.ready_roles.add(role)
        self.metrics.child(self.metrics.worker_ready, role).set(1)

    async def wait_control(self, role: str) -> None:
        """Hold a Faust agent's first batch until the control topics are applied, then mark it ready."""
        while not self.control_caught_up():
            await asyncio.sleep(0.05)
        self.mark_ready(role)

    def wait_control_blocking(self) -> None:
        """Hold a hot loop (on its own thread) until the control topics are applied."""
        while not self.control_caught_up():
            time.sleep(0.05)
