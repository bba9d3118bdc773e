"""faust-streaming + aiokafka work with the Kafka version museflow runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from museflow.config import Settings
from museflow.kafka.clients import make_producer, read_topic

APP = Path(__file__).with_name("faust_forward_app.py")


def settings_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "MUSEFLOW_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "MUSEFLOW_APP_ID": settings.app_id,
        "MUSEFLOW_DATA_DIR": settings.data_dir,
        "MUSEFLOW_BROKER_SESSION_TIMEOUT_SECONDS": "6",
    })
    return env


def test_factory_built_agent_forwards_every_message(settings: Settings, create_topic: Callable[..., str]) -> None:
    source = create_topic("fwd-in", partitions=6)
    target = create_topic("fwd-out", partitions=6)
    producer = make_producer(settings)
    for i in range(1000):
        producer.produce(source, key=f"k{i}".encode(), value=f"v{i}".encode())
    assert producer.flush(30) == 0

    worker = subprocess.Popen([sys.executable, str(APP), source, target], env=settings_env(settings),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        values: set[bytes] = set()
        while time.monotonic() < deadline and len(values) < 1000:
            assert worker.poll() is None, worker.stdout.read().decode()[-3000:] if worker.stdout else ""
            values = {r.value for r in read_topic(settings, target) if r.value is not None}
            time.sleep(1)
    finally:
        worker.terminate()
        worker.wait(30)
    assert values == {f"v{i}".encode() for i in range(1000)}
