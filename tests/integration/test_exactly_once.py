"""Exactly-once mode (Kafka transactions) on the real broker: kill -9 mid-stream, nothing twice.

Two workers run the router and scorer as transactional loops (``processing_guarantee=exactly_once``).
One is killed with SIGKILL mid-stream, the survivor takes over, the killed instance restarts
under the same ``instance_id`` (fencing its predecessor's open transaction). A tenant reading
with ``isolation.level=read_committed`` must see every event exactly once; a
``read_uncommitted`` reader shows what the aborted transactions left behind.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from museflow.config import Settings
from museflow.supervise import WorkerProcess
from tests.integration.test_faults import (
    Traffic,
    account,
    settled,
    steady_latency,
    takeover_seconds,
    worker,
    workers,  # noqa: F401 - fixture
)

pytestmark = pytest.mark.slow


def test_kill_9_mid_stream_read_committed_tenant_sees_each_event_exactly_once(
        settings: Settings, deployed: dict[str, Path], tmp_path: Path, workers: list[WorkerProcess]) -> None:  # noqa: F811
    eos = settings.replace(processing_guarantee="exactly_once", transaction_timeout_seconds=10.0)
    a = worker(eos.replace(instance_id="a"), tmp_path, "a").start()
    b = worker(eos.replace(instance_id="b"), tmp_path, "b").start()
    workers += [a, b]
    a.wait_ready(90)
    b.wait_ready(90)
    traffic = Traffic(settings, 6000, rate=300, seed=51, bad_fraction=0.01)
    traffic.wait_sent(2000)
    killed_ms = int(time.time() * 1000)
    a.kill()
    traffic.wait_sent(4000)
    a2 = worker(eos.replace(instance_id="a"), tmp_path, "a-restarted").start()
    workers.append(a2)
    a2.wait_ready(90)
    summary = traffic.join()

    acc = settled(settings, summary, isolation="read_committed")
    raw = account(settings, summary, isolation="read_uncommitted")
    took = takeover_seconds(acc, killed_ms, steady_latency(acc, killed_ms - 1000))
    print(f"\n{acc.line('exactly-once, kill -9, read_committed')} takeover={took:.1f}s; "
          f"a read_uncommitted reader sees {raw.duplicates} duplicates from aborted transactions")
    assert acc.lost == 0, f"lost {sorted(acc.lost_good)[:5]} and {acc.lost_bad} dead letters"
    assert acc.duplicates == 0
    assert sum(acc.scored.values()) + sum(acc.dead.values()) == summary.sent, "conservation"
    assert acc.good_in_dlq == 0
    assert b.alive() and a2.alive()
