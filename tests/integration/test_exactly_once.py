"""Exactly-once mode (Kafka transactions) on the real broker: kill -9 mid-stream, nothing twice.

Two workers run the router and scorer as transactional loops (``processing_guarantee=exactly_once``).
One is killed with SIGKILL mid-stream, the survivor takes over, the killed instance restarts
under the same ``instance_id`` (fencing its predecessor's open transaction). A tenant reading
with ``isolation.level=read_committed`` must see every event exactly once; a
``read_uncommitted`` reader shows what the aborted transactions left behind. A second test
makes sure the kill lands inside an open transaction, with outputs already on the broker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from museflow.config import Settings
from museflow.contracts.topics import TopicSpec
from museflow.demo.supervise import WorkerProcess
from museflow.errors import BrokerError
from museflow.kafka.admin import ensure_topics
from museflow.kafka.clients import make_producer, read_topic
from museflow.kafka.schema_registry import serdes_from_settings
from tests.integration.test_faults import (
    Traffic,
    account,
    running,
    settled,
    steady_latency,
    takeover_seconds,
    worker,
)

pytestmark = pytest.mark.slow


def test_kill_9_mid_stream_read_committed_tenant_sees_each_event_exactly_once(
        settings: Settings, deployed: dict[str, Path], tmp_path: Path, workers: list[WorkerProcess]) -> None:
    eos = settings.replace(processing_guarantee="exactly_once", transaction_timeout_seconds=10.0)
    a, b = running(workers, worker(eos.replace(instance_id="a"), tmp_path, "a").start(),
                   worker(eos.replace(instance_id="b"), tmp_path, "b").start())
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


HOLD_APP = Path(__file__).with_name("transactional_hold_app.py")


class HoldApp:
    """``transactional_hold_app.py`` as a subprocess with its own settings and log."""

    def __init__(self, settings: Settings, source: str, target: str, tmp_path: Path, name: str, hold_at: int) -> None:
        self.marker = tmp_path / f"{name}.held"
        self.log = tmp_path / f"{name}.log"
        env = {**os.environ, **settings.to_env()}
        self.proc = subprocess.Popen([sys.executable, str(HOLD_APP), source, target, str(self.marker), str(hold_at)],
                                     env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)

    def wait_held(self, timeout: float) -> tuple[int, int]:
        """Wait until the transaction is held open: (messages in the held batch, in all batches)."""
        deadline = time.monotonic() + timeout
        while not self.marker.exists():
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the held transaction never opened:\n" + self.log.read_text()[-3000:]
            time.sleep(0.1)
        time.sleep(0.1)
        held, total = self.marker.read_text().split()
        return int(held), int(total)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def values(settings: Settings, topic: str, isolation: str) -> list[bytes]:
    return [r.value for r in read_topic(settings, topic, isolation_level=isolation, timeout=10) if r.value is not None]


def dead_values(settings: Settings, isolation: str) -> list[bytes]:
    serde = serdes_from_settings(settings).dead_letters
    return [serde.decode(v)["original_value"] for v in values(settings, settings.topics.dlq, isolation)]


@pytest.mark.parametrize("restart", ["same instance id", "new instance id"])
def test_kill_9_inside_an_open_transaction_aborts_it_and_each_output_is_committed_once(
        settings: Settings, create_topic: Callable[..., str], tmp_path: Path, restart: str) -> None:
    """The mid-stream kill above rarely lands inside a transaction; this one always does.

    The loop is stopped after its batch's outputs and dead letters are on the broker but before
    its offsets and commit. A restart with the same instance id fences and aborts the open
    transaction at once; one with a new id waits for the broker to abort it on timeout.
    """
    source = create_topic("eos-in", partitions=3)
    target = create_topic("eos-out", partitions=3)
    ensure_topics(settings, [TopicSpec(settings.topics.dlq, 1, {})])
    sent = [(b"bad-%d" if i % 25 == 0 else b"ok-%d") % i for i in range(600)]
    producer = make_producer(settings)
    for i, value in enumerate(sent):
        producer.produce(source, key=str(i).encode(), value=value)
    assert producer.flush(30) == 0
    eos = settings.replace(batch_size=50, transaction_timeout_seconds=6.0)

    killed = HoldApp(eos.replace(instance_id="a"), source, target, tmp_path, "killed", hold_at=3)
    try:
        held, total = killed.wait_held(90)
        on_broker = len(values(settings, target, "read_uncommitted")) + len(
            dead_values(settings, "read_uncommitted"))
        killed.proc.kill()
        killed.proc.wait()
    finally:
        killed.stop()
    assert held > 0 and on_broker == total, "the held batch's outputs were not on the broker"

    restarted = HoldApp(eos.replace(instance_id="a" if restart == "same instance id" else "b"),
                        source, target, tmp_path, "restarted", hold_at=-1)
    try:
        started = time.monotonic()
        deadline = started + 120
        committed: list[bytes] = []
        dead: list[bytes] = []
        while len(committed) + len(dead) < len(sent):
            assert restarted.proc.poll() is None, restarted.log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"only {len(committed) + len(dead)} of {len(sent)} committed"
            time.sleep(1)
            try:
                committed, dead = values(settings, target, "read_committed"), dead_values(settings, "read_committed")
            except BrokerError:  # the open transaction holds read_committed readers back until it is aborted
                continue
        took = time.monotonic() - started
        uncommitted = values(settings, target, "read_uncommitted") + dead_values(settings, "read_uncommitted")
    finally:
        restarted.stop()

    print(f"\nkill -9 inside a transaction of {held} messages, restart with {restart}: all committed "
          f"{took:.1f}s after the restart, read_committed {len(committed)} out + {len(dead)} dead letters; "
          f"read_uncommitted {len(uncommitted)}")
    assert sorted(committed) == sorted(v for v in sent if v.startswith(b"ok")), "each output exactly once"
    assert sorted(dead) == sorted(v for v in sent if v.startswith(b"bad")), "each dead letter exactly once"
    assert len(uncommitted) == len(sent) + held, "the aborted batch is in the log, filtered by read_committed"
