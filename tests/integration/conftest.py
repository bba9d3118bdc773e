"""Fixtures for tests that run museflow workers on the real broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from museflow.config import Settings
from museflow.demo.models import SHOWCASE_ROUTES
from museflow.demo.supervise import WorkerProcess
from museflow.kafka.clients import read_topic
from museflow.kafka.plane import deploy
from museflow.kafka.schema_registry import serdes_from_settings

ROUTES = SHOWCASE_ROUTES


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo models (fraud-cnp v1, v2, ato v1), trained once per session: name@version -> spec."""
    from museflow.demo.models import train_demo_models

    out = tmp_path_factory.mktemp("demo-models")
    return {f"{m.name}@{m.version}": m.spec_path for m in train_demo_models(out, seed=7)}


@pytest.fixture
def deployed(settings: Settings, demo_models: dict[str, Path]) -> dict[str, Path]:
    """Every demo model deployed and the six demo routes set on this test's topics."""
    from museflow.contracts.topics import core_topics
    from museflow.control.routing import load_routes_yaml
    from museflow.kafka.admin import ensure_topics
    from museflow.kafka.plane import publish_route

    ensure_topics(settings, core_topics(settings))
    for spec in demo_models.values():
        deploy(settings, str(spec))
    for route in load_routes_yaml(text=ROUTES):
        publish_route(settings, replace(route, version=1))
    return demo_models


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers (subprocesses running `museflow worker`); all are stopped after the test."""
    workers: list[WorkerProcess] = []

    def start(roles: tuple[str, ...] = ("all",), ready: bool = True, **kw: Any) -> WorkerProcess:
        worker = WorkerProcess(settings, roles=roles, log_path=tmp_path / f"worker-{len(workers)}.log", **kw)
        workers.append(worker.start())
        return worker.wait_ready(90) if ready else worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """Workers a test starts itself (own settings, names); all are stopped after the test."""
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        w.stop()


def read_records(settings: Settings, topic: str, schema: str) -> list[dict[str, Any]]:
    serde = serdes_from_settings(settings)[schema]
    return [serde.decode(r.value) for r in read_topic(settings, topic) if r.value is not None]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, poll: float = 1.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def topic_size(settings: Settings, topic: str) -> int:
    from museflow.kafka.clients import make_consumer, topic_end_offsets

    consumer = make_consumer(settings, group_id="size-probe")
    try:
        return sum(hi - lo for lo, hi in topic_end_offsets(consumer, topic).values())
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A three-node KRaft cluster (RF 3, ``min.insync.replicas=2``) for one module; destroyed after it."""
    import os

    from museflow.kafka.broker import LocalCluster

    cluster = LocalCluster(f"cluster-{os.getpid()}", home=tmp_path_factory.mktemp("kafka-cluster"), heap="512m")
    try:
        cluster.start(timeout=300)
        yield cluster
    finally:
        cluster.destroy()
