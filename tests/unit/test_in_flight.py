"""Pipelined delivery: a batch's events are acked only once all its deliveries are acknowledged."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from agents.context import InFlight
from museflow.metrics import PipelineMetrics
from museflow.pipeline import StepResult


class Harness:
    def __init__(self, limit: int) -> None:
        self.deliveries: list[asyncio.Future[None]] = []
        self.acked: list[Any] = []
        self.crashed: list[BaseException] = []
        ctx = SimpleNamespace(metrics=PipelineMetrics(), produce=self._produce)
        app = SimpleNamespace(crash=self._crash)
        stream = SimpleNamespace(ack=self._ack)
        self.in_flight = InFlight(ctx, app, stream, "router", limit=limit)  # type: ignore[arg-type]

    async def _produce(self, app: Any, result: StepResult, stage: str) -> list[asyncio.Future[None]]:
        futures = [asyncio.get_running_loop().create_future() for _ in range(2)]
        self.deliveries += futures
        return futures

    async def _ack(self, event: Any) -> None:
        self.acked.append(event)

    async def _crash(self, exc: BaseException) -> None:
        self.crashed.append(exc)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_events_are_acked_only_when_every_delivery_of_their_batch_is_acknowledged() -> None:
    async def scenario() -> None:
        h = Harness(limit=4)
        await h.in_flight.send(StepResult(), ["e1", "e2"])   # returns without waiting for the broker
        await h.in_flight.send(StepResult(), ["e3"])
        await settle()
        assert h.acked == []
        h.deliveries[0].set_result(None)
        await settle()
        assert h.acked == [], "half of batch 1 acknowledged is not enough"
        h.deliveries[3].set_result(None)
        h.deliveries[2].set_result(None)
        await settle()
        assert h.acked == ["e3"], "batch 2 is committable on its own; Faust commits only a gap-free prefix"
        h.deliveries[1].set_result(None)
        await settle()
        assert sorted(h.acked) == ["e1", "e2", "e3"]

    asyncio.run(scenario())


def test_send_waits_once_limit_batches_are_in_flight() -> None:
    async def scenario() -> None:
        h = Harness(limit=2)
        await h.in_flight.send(StepResult(), ["a"])
        await h.in_flight.send(StepResult(), ["b"])
        third = asyncio.ensure_future(h.in_flight.send(StepResult(), ["c"]))
        await settle()
        assert not third.done(), "a third batch must wait while two are in flight"
        h.deliveries[0].set_result(None)
        h.deliveries[1].set_result(None)
        await settle()
        assert third.done() and h.acked == ["a"]

    asyncio.run(scenario())


def test_a_failed_delivery_crashes_the_worker_and_acks_nothing_of_its_batch() -> None:
    async def scenario() -> None:
        h = Harness(limit=4)
        await h.in_flight.send(StepResult(), ["x", "y"])
        h.deliveries[0].set_result(None)
        h.deliveries[1].set_exception(RuntimeError("NOT_ENOUGH_REPLICAS after retries"))
        await settle()
        assert h.acked == [] and len(h.crashed) == 1

    asyncio.run(scenario())


def test_an_agent_cancelled_while_waiting_does_not_cancel_the_acks_of_its_batches() -> None:
    async def scenario() -> None:
        h = Harness(limit=1)
        await h.in_flight.send(StepResult(), ["a"])
        waiting = asyncio.ensure_future(h.in_flight.send(StepResult(), ["b"]))
        await settle()
        waiting.cancel()   # Faust stopping the agent
        await settle()
        for delivery in h.deliveries:
            delivery.set_result(None)
        await settle()
        assert sorted(h.acked) == ["a", "b"], "both batches were delivered: both must be acked"

    asyncio.run(scenario())
