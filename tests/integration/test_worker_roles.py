"""Workers running a subset of roles, started on a deployment whose topics do not exist yet."""

from __future__ import annotations

from collections.abc import Callable

from museflow.config import Settings
from museflow.demo.supervise import WorkerProcess
from museflow.kafka.admin import existing_topics


def test_a_lag_only_worker_provisions_topics_and_becomes_ready(
    settings: Settings, start_worker: Callable[..., WorkerProcess]
) -> None:
    assert settings.topics.routes not in existing_topics(settings)
    worker = start_worker(roles=("lag",))  # waits for /readyz: control topics followed from birth
    assert settings.topics.routes in existing_topics(settings)
    text = worker.metrics()
    assert 'museflow_worker_ready{role="lag"} 1.0' in text
    assert "museflow_consumer_lag_refreshed_timestamp_seconds" in text
