"""Shared fixtures: one real Kafka broker per test session, unique names per test.

Set MUSEFLOW_TEST_BOOTSTRAP to use a broker that is already running (``.ci/run`` starts one
with ``museflow kafka start``); otherwise the first test that needs Kafka starts one with the
same launcher users run, in a temporary directory, and stops it at the end of the session.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from museflow.config import Settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of the session's real Kafka broker."""
    existing = os.environ.get("MUSEFLOW_TEST_BOOTSTRAP")
    if existing:
        yield existing
        return
    from museflow.kafka.broker import LocalKafka

    broker = LocalKafka(f"pytest-{os.getpid()}", home=tmp_path_factory.mktemp("kafka"))
    instance = broker.start(timeout=120)
    try:
        yield instance.bootstrap
    finally:
        broker.destroy()


@pytest.fixture
def unique() -> str:
    """A short id unique to this test, for topic prefixes and group ids."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings(kafka_bootstrap: str, unique: str, tmp_path: Path) -> Settings:
    """Settings on the session broker with this test's own topic prefix, app id and data dir."""
    return Settings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"t{unique}.",
        app_id=f"museflow-{unique}",
        data_dir=str(tmp_path / "data"),
        model_dir=str(tmp_path / "models"),
        metrics_enabled=False,
        broker_session_timeout_seconds=6.0,
        new_group_start="earliest",  # tests publish traffic before their workers start
    )


@pytest.fixture
def create_topic(settings: Settings) -> Callable[..., str]:
    """Create a topic with explicit partitions under this test's prefix; returns its name."""
    from museflow.contracts.topics import TopicSpec
    from museflow.kafka.admin import ensure_topics

    def create(base: str, partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = f"{settings.topic_prefix}{base}"
        ensure_topics(settings, [TopicSpec(name, partitions, config or {})])
        return name

    return create
