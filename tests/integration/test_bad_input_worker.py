"""The bad-input table of tests/unit/test_bad_input.py, through a real worker on the real broker.

Every case is published raw to the events topic between good events; each must end as a scored
event or a dead letter with its reason, the worker must keep running, and conservation holds
(inputs = scored events + dead letters).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from museflow.config import Settings
from museflow.demo.supervise import WorkerProcess
from museflow.kafka.clients import DeliveryReport, make_producer
from tests.integration.test_faults import TENANTS, Traffic, account
from tests.unit.test_bad_input import CASES, encoded

pytestmark = pytest.mark.slow


def test_every_bad_input_case_through_a_running_worker(
        settings: Settings, deployed: dict[str, Path], start_worker: Callable[..., WorkerProcess]) -> None:
    worker = start_worker(roles=("router", "scorer"))
    cases = [*CASES, ("oversize attributes map (~900 KB)",
                      lambda: encoded(attributes={f"a{i}": float(i) for i in range(45_000)}), "scored")]
    values = [make() for _, make, _ in cases]
    expected_dead = Counter(b"" if v is None else v for v, (_, _, r) in zip(values, cases, strict=True)
                            if r != "scored")
    expected_reasons = Counter(r for _, _, r in cases if r != "scored")
    before = Traffic(settings, 300, rate=300, seed=71).join()
    producer = make_producer(settings, **{"message.max.bytes": 1_000_000})
    report = DeliveryReport()
    for i, value in enumerate(values):
        producer.produce(settings.topics.events, key=f"bad-{i}".encode(), value=value, on_delivery=report)
    assert producer.flush(30) == 0 and report.failed == 0, report.errors
    after = Traffic(settings, 300, rate=300, seed=72).join()

    good = {e["event_id"] for e in (*before.events, *after.events)}
    scored_cases = sum(1 for c in cases if c[2] == "scored")
    acc = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        acc = account(settings, before, tenants=TENANTS)
        if len(good - set(acc.scored)) == 0 and sum(acc.dead.values()) >= sum(expected_dead.values()) \
                and sum(acc.scored.values()) >= len(good) + scored_cases:
            break
        time.sleep(2)
    assert acc is not None
    assert not good - set(acc.scored), "good events around the bad ones went missing"
    assert sum(acc.scored.values()) == len(good) + scored_cases
    assert acc.dead == expected_dead
    from museflow.kafka.clients import read_topic
    from museflow.kafka.schema_registry import serdes_from_settings

    serde = serdes_from_settings(settings).dead_letters
    reasons = Counter(serde.decode(r.value)["reason"] for r in read_topic(settings, settings.topics.dlq))
    assert reasons == expected_reasons
    inputs = len(good) + len(values)
    assert inputs == sum(acc.scored.values()) + sum(acc.dead.values()), "conservation"
    assert worker.alive(), worker.log_tail()
    metrics = worker.metrics()
    assert "museflow_dead_letters_total" in metrics
