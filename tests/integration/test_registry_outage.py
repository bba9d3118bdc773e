"""A schema registry answering 503 mid-traffic: the hot loop pauses and resumes, nothing is lost or dead-lettered.

Issue 18: "a schema registry answering 503 for 2 minutes -> processing pauses and resumes, no good
event dead-lettered for a platform reason". The registry is :class:`tests.registry_stub.StubRegistry`
(a real Confluent registry cannot be installed here). The worker learns the ids it needs while
the registry is up; then a producer that registered a re-documented event schema (a new id the
worker has never looked up, as after a producer upgrade) sends events while the registry answers
503. Run with ``-s`` to see the measured pause.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from museflow.config import Settings
from museflow.contracts.serde import AvroSerde, SchemaIdResolver, Serdes
from museflow.demo.loadgen import TransactionGenerator
from museflow.demo.producing import ProduceSummary, produce_events
from museflow.demo.supervise import WorkerProcess
from museflow.kafka.clients import read_topic
from museflow.kafka.schema_registry import resolver_from_settings, serdes_from_settings
from tests.integration.conftest import wait_for
from tests.integration.test_faults import TENANTS
from tests.registry_stub import StubRegistry

OUTAGE_SECONDS = 12.0
"""The outage of the CI run; the issue's two minutes run under the ``long`` marker (``pytest -m long``)."""
ISSUE_OUTAGE_SECONDS = 120.0
EVENTS = 300


@pytest.fixture
def registry() -> Iterator[StubRegistry]:
    stub = StubRegistry().start()
    yield stub
    stub.stop()


@pytest.fixture
def settings(settings: Settings, registry: StubRegistry) -> Settings:
    """The test's settings with the stub registry: workers, producers and the control plane all use it."""
    return settings.replace(schema_registry_url=registry.url)


class Redocumented:
    """A producer's resolver registering its schemas with another ``doc``: same fields, a new registry id."""

    def __init__(self, inner: SchemaIdResolver) -> None:
        self.inner = inner

    def register(self, subject: str, schema_json: str) -> int:
        schema = json.loads(schema_json)
        schema["doc"] = f"{schema.get('doc', '')} (producer v2)"
        return self.inner.register(subject, json.dumps(schema))

    def lookup(self, schema_id: int) -> str | None:
        return self.inner.lookup(schema_id)


def scored_ids(settings: Settings, serde: AvroSerde) -> Counter[str]:
    """Event ids on the tenant topics (``serde`` has the worker's ScoredEvent id cached: no registry call)."""
    isolation = "read_committed" if settings.exactly_once else "read_uncommitted"
    return Counter(str(serde.decode(r.value)["event_id"]) for tenant in TENANTS
                   for r in read_topic(settings, settings.topics.scores(tenant), timeout=60, isolation_level=isolation)
                   if r.value is not None)


def metric(worker: WorkerProcess, name: str) -> float:
    """Sum of a metric's samples on the worker's /metrics (0 when absent)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in worker.metrics().splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


@pytest.mark.parametrize(("outage", "guarantee"), [
    pytest.param(OUTAGE_SECONDS, "at_least_once", id="ci"),
    pytest.param(OUTAGE_SECONDS, "exactly_once", id="ci-exactly-once"),
    pytest.param(ISSUE_OUTAGE_SECONDS, "at_least_once", id="issue-2min", marks=pytest.mark.long),
])
def test_a_registry_outage_pauses_the_worker_and_every_event_is_scored_once_afterwards(
        settings: Settings, registry: StubRegistry, deployed: dict[str, Path], workers: list[WorkerProcess],
        tmp_path: Path, outage: float, guarantee: str) -> None:
    settings = settings.replace(processing_guarantee=guarantee)
    worker = WorkerProcess(settings, roles=("router", "scorer"), log_path=tmp_path / "worker.log")
    workers.append(worker.start())
    worker.wait_ready(90)
    pid = worker.proc.pid if worker.proc is not None else None
    reader = serdes_from_settings(settings).scored

    before = produce_events(settings, TransactionGenerator(seed=1), EVENTS, keep=True, seed=1)
    assert before.ok
    wait_for(lambda: sum(scored_ids(settings, reader).values()) >= EVENTS, 120, "the first events scored", poll=1)

    resolver = resolver_from_settings(settings)
    assert resolver is not None
    producer_serdes = Serdes(Redocumented(resolver))
    new_id = producer_serdes.events.schema_id  # registered while the registry is up
    assert new_id != serdes_from_settings(settings).events.schema_id  # an id the worker has never looked up
    registry.unavailable()
    down_at = time.monotonic()
    during = produce_events(settings, TransactionGenerator(seed=2), EVENTS, keep=True, seed=2,
                            serdes=producer_serdes)
    assert during.ok
    log_path = worker.log_path
    wait_for(lambda: "is unavailable; pausing" in log_path.read_text(errors="replace"), 60, "the pause logged")
    wait_for(lambda: metric(worker, "museflow_dependency_paused") == 1, 30, "the pause in the metrics")
    assert not set(scored_ids(settings, reader)) & ids(during)  # the outage hit the lookup: nothing of it went through
    assert worker.alive()
    time.sleep(max(0.0, outage - (time.monotonic() - down_at)))
    registry.available()
    up_at = time.monotonic()

    wait_for(lambda: "resuming after a pause" in log_path.read_text(errors="replace"), 120, "the pause ended")
    wait_for(lambda: ids(before) | ids(during) <= set(scored_ids(settings, reader)), 120, "every event scored", poll=1)
    time.sleep(2)  # let any duplicate land before counting

    scored = scored_ids(settings, reader)
    dead = read_topic(settings, settings.topics.dlq, timeout=60)  # read_uncommitted: even an aborted letter counts
    paused = [float(s) for s in re.findall(r"resuming after a pause of ([0-9.]+)s",
                                           log_path.read_text(errors="replace"))]
    duplicates = sum(n - 1 for n in scored.values() if n > 1)
    print(f"\n[registry outage {outage:.0f}s, {guarantee}] events={2 * EVENTS} scored={sum(scored.values())} "
          f"distinct={len(scored)} duplicates={duplicates} dead_letters={len(dead)} pauses={paused} "
          f"registry requests={registry.requests} refused(503)={registry.refused} "
          f"outage {up_at - down_at:.1f}s")
    assert set(scored) == ids(before) | ids(during) and duplicates == 0, "every event scored exactly once"
    assert dead == [], "no event dead-lettered for the registry's outage"
    assert paused and registry.refused > 0
    assert metric(worker, "museflow_dependency_paused") == 0
    assert metric(worker, "museflow_dependency_pause_seconds_total") >= min(paused) - 0.05  # the log rounds to 0.1 s
    assert worker.alive() and worker.proc is not None and worker.proc.pid == pid, "the worker never exited"


def ids(summary: ProduceSummary) -> set[str]:
    return {str(e["event_id"]) for e in summary.events}
