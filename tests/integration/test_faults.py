"""Faults on the real broker under steady traffic: every produced event is accounted for.

Each test drives traffic with ``produce_events(rate=...)``, injects one fault, then checks every
produced event against the tenant topics and the dead-letter topic: lost = 0 always; duplicates
(at-least-once redelivery after a crash) are counted and printed. Run with ``-s`` to see the
measured numbers (takeover time, duplicates).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from museflow.config import Settings
from museflow.demo.loadgen import TransactionGenerator
from museflow.demo.producing import ProduceProgress, ProduceSummary, produce_events
from museflow.demo.supervise import WorkerProcess
from museflow.kafka.clients import read_topic
from museflow.kafka.schema_registry import serdes_from_settings
from tests.integration.conftest import topic_size, wait_for

TENANTS = ("acme-bank", "globex-pay", "initech-fin")
pytestmark = pytest.mark.slow


# ---- helpers shared with test_exactly_once / test_security / test_bad_input_worker ------------------

class Traffic:
    """``produce_events`` at a steady rate on a thread; ``sent`` is live, ``summary`` once joined."""

    def __init__(self, settings: Settings, count: int, rate: float, *, seed: int = 1, bad_fraction: float = 0.0,
                 **kw: Any) -> None:
        self.sent = 0
        self.summary: ProduceSummary | None = None
        self.error: BaseException | None = None

        def progress(p: ProduceProgress) -> None:
            self.sent = p.sent

        def target() -> None:
            try:
                self.summary = produce_events(settings, TransactionGenerator(seed=seed), count, rate=rate,
                                              bad_fraction=bad_fraction, keep=True, seed=seed, progress=progress,
                                              **kw)
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=target, name="traffic", daemon=True)
        self.thread.start()

    def wait_sent(self, n: int, timeout: float = 120) -> float:
        wait_for(lambda: self.sent >= n or not self.thread.is_alive(), timeout, f"{n} events sent", poll=0.05)
        return time.monotonic()

    def join(self, timeout: float = 300) -> ProduceSummary:
        self.thread.join(timeout)
        assert self.error is None, self.error
        assert self.summary is not None, "traffic did not finish"
        assert self.summary.ok, f"producer lost events: {self.summary.errors}"
        return self.summary


@dataclass
class Accounting:
    """Every produced event against the tenant topics and the DLQ."""

    scored: Counter[str] = field(default_factory=Counter)
    dead: Counter[bytes] = field(default_factory=Counter)
    records: list[dict[str, Any]] = field(default_factory=list)
    lost_good: set[str] = field(default_factory=set)
    lost_bad: int = 0
    good_in_dlq: int = 0

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.scored.values() if n > 1) + sum(n - 1 for n in self.dead.values() if n > 1)

    @property
    def lost(self) -> int:
        return len(self.lost_good) + self.lost_bad

    def line(self, name: str) -> str:
        return (f"[{name}] scored={sum(self.scored.values())} distinct={len(self.scored)} "
                f"dead_letters={sum(self.dead.values())} lost={self.lost} duplicates={self.duplicates}")


def account(settings: Settings, summary: ProduceSummary, *, isolation: str = "read_uncommitted",
            tenants: tuple[str, ...] = TENANTS) -> Accounting:
    serdes = serdes_from_settings(settings)
    acc = Accounting()
    for tenant in tenants:
        for r in read_topic(settings, settings.topics.scores(tenant), isolation_level=isolation, timeout=60):
            record = serdes.scored.decode(r.value)
            assert record["tenant"] == tenant, f"{record['event_id']} of {record['tenant']} is in {tenant}'s topic"
            acc.scored[record["event_id"]] += 1
            acc.records.append(record)
    dlq_ids: set[str] = set()
    for r in read_topic(settings, settings.topics.dlq, isolation_level=isolation, timeout=60):
        letter = serdes.dead_letters.decode(r.value)
        acc.dead[letter["original_value"]] += 1
        decoded = serdes.events.decode_many([letter["original_value"]])[0]
        if not isinstance(decoded, Exception) and decoded.get("event_id"):
            dlq_ids.add(str(decoded["event_id"]))
    good = {e["event_id"] for e in summary.events}
    acc.lost_good = good - set(acc.scored) - dlq_ids
    acc.good_in_dlq = len(good & dlq_ids)
    acc.lost_bad = sum(1 for bad in summary.bad if bad.value not in acc.dead)
    return acc


def settled(settings: Settings, summary: ProduceSummary, timeout: float = 180,
            isolation: str = "read_uncommitted") -> Accounting:
    """Wait until every produced event is scored or dead-lettered, then account for all of them."""
    good = {e["event_id"] for e in summary.events}
    topics = [settings.topics.scores(t) for t in TENANTS]
    if isolation == "read_uncommitted":
        wait_for(lambda: sum(topic_size(settings, t) for t in topics) >= len(good)
                 and topic_size(settings, settings.topics.dlq) >= len(summary.bad), timeout, "every event out")
        time.sleep(2)
    result: list[Accounting] = []

    def complete() -> bool:
        result[:] = [account(settings, summary, isolation=isolation)]
        return result[0].lost == 0
    with contextlib.suppress(AssertionError):
        wait_for(complete, timeout, "every event scored or dead-lettered", poll=2)
    return result[-1] if result else account(settings, summary, isolation=isolation)


def running(workers: list[WorkerProcess], *procs: WorkerProcess, timeout: float = 90) -> tuple[WorkerProcess, ...]:
    """Track started workers for teardown, then wait until each is ready; returns them."""
    workers.extend(procs)
    for proc in procs:
        proc.wait_ready(timeout)
    return procs


def worker(settings: Settings, tmp_path: Path, name: str, roles: tuple[str, ...] = ("router", "scorer"),
           **kw: Any) -> WorkerProcess:
    return WorkerProcess(settings, roles=roles, log_path=tmp_path / f"worker-{name}.log", **kw)


def takeover_seconds(acc: Accounting, after_ms: int, baseline_s: float) -> float:
    """Worst end-to-end latency of events that happened after ``after_ms``, minus the steady baseline."""
    late = [r["latency_ms"] / 1000 for r in acc.records if r["event_time"] >= after_ms]
    return max(late, default=0.0) - baseline_s


def steady_latency(acc: Accounting, before_ms: int) -> float:
    early = sorted(r["latency_ms"] / 1000 for r in acc.records if r["event_time"] < before_ms)
    return early[int(len(early) * 0.99)] if early else 0.0


# ---- the fault tests -------------------------------------------------------------------------------

def test_kill_9_of_one_of_two_workers_mid_stream_loses_nothing(
        settings: Settings, deployed: dict[str, Path], tmp_path: Path, workers: list[WorkerProcess]) -> None:
    a, b = running(workers, worker(settings, tmp_path, "a").start(), worker(settings, tmp_path, "b").start())
    traffic = Traffic(settings, 6000, rate=300, seed=41, bad_fraction=0.01)
    traffic.wait_sent(2000)
    killed_ms = int(time.time() * 1000)
    a.kill()
    summary = traffic.join()
    acc = settled(settings, summary)
    baseline = steady_latency(acc, killed_ms - 1000)
    took = takeover_seconds(acc, killed_ms, baseline)
    print(f"\n{acc.line('kill -9 one of two')} takeover={took:.1f}s (p99 latency before the kill "
          f"{baseline:.2f}s, session timeout {settings.broker_session_timeout_seconds:.0f}s)")
    assert acc.lost == 0, f"lost {sorted(acc.lost_good)[:5]} and {acc.lost_bad} dead letters"
    assert acc.good_in_dlq == 0
    assert b.alive()


def test_graceful_stop_and_restart_under_load_has_no_duplicates(
        settings: Settings, deployed: dict[str, Path], tmp_path: Path, workers: list[WorkerProcess]) -> None:
    a, _ = running(workers, worker(settings, tmp_path, "a").start(), worker(settings, tmp_path, "b").start())
    traffic = Traffic(settings, 6000, rate=300, seed=42, bad_fraction=0.01)
    traffic.wait_sent(1500)
    stop_ms = int(time.time() * 1000)
    assert a.stop(60) is not None
    stopped_ms = int(time.time() * 1000)
    traffic.wait_sent(3500)
    restart_ms = int(time.time() * 1000)
    a2 = worker(settings, tmp_path, "a2").start()
    workers.append(a2)
    a2.wait_ready(90)
    summary = traffic.join()
    acc = settled(settings, summary)
    first = {}
    for r in acc.records:
        first.setdefault(r["event_id"], r["event_time"])
    phases: Counter[str] = Counter()
    for event_id, n in acc.scored.items():
        if n > 1:
            t = first[event_id]
            phases["before the stop" if t < stop_ms else "during the stop" if t < stopped_ms
                   else "before the restart" if t < restart_ms else "after the restart"] += n - 1
    print(f"\n{acc.line('graceful stop + restart')} stop took {(stopped_ms - stop_ms) / 1000:.1f}s; "
          f"duplicates by when the event happened: {dict(phases)}")
    assert acc.lost == 0
    # A graceful stop finishes and commits its batches before leaving; both rebalances commit what the
    # other worker processed before its partitions move (museflow.agents.app.RevokeCommittingConsumer): nothing
    # is scored twice.
    assert acc.duplicates == 0, f"a graceful stop and restart redelivered: {dict(phases)}"


def test_broker_stop_and_restart_under_load_recovers_by_itself(
        demo_models: dict[str, Path], tmp_path: Path, unique: str, workers: list[WorkerProcess]) -> None:
    from museflow.demo.supervise import free_port
    from museflow.kafka.broker import LocalKafka

    broker = LocalKafka(f"faults-{unique}", home=tmp_path / "kafka", port=free_port(), controller_port=free_port())
    inst = broker.start(timeout=120)
    try:
        settings = Settings(bootstrap_servers=inst.bootstrap, topic_prefix=f"b{unique}.", app_id=f"mf-{unique}",
                            data_dir=str(tmp_path / "data"), model_dir=str(tmp_path / "models"),
                            metrics_enabled=False, broker_session_timeout_seconds=6.0, new_group_start="earliest")
        _deploy(settings, demo_models)
        w = worker(settings, tmp_path, "w").start()
        workers.append(w)
        w.wait_ready(90)
        traffic = Traffic(settings, 4500, rate=150, seed=43, bad_fraction=0.01, flush_timeout_s=240)
        traffic.wait_sent(1500)
        broker.stop()
        down = time.monotonic()
        time.sleep(5)
        restarted = LocalKafka(broker.name, home=broker.home, port=inst.port, controller_port=inst.controller_port)
        restarted.start(timeout=120)
        print(f"\nbroker down for {time.monotonic() - down:.1f}s")
        summary = traffic.join(400)
        acc = settled(settings, summary, timeout=240)
        print(acc.line("broker stop + restart"))
        assert acc.lost == 0, f"lost {sorted(acc.lost_good)[:5]} and {acc.lost_bad} dead letters"
        assert w.alive(), w.log_tail()
    finally:
        for w in workers:
            w.kill() if w.alive() else None
        broker.destroy()


def _deploy(settings: Settings, demo_models: dict[str, Path]) -> None:
    from museflow.contracts.topics import core_topics
    from museflow.control.routing import load_routes_yaml
    from museflow.kafka.admin import ensure_topics
    from museflow.kafka.plane import deploy, publish_route
    from tests.integration.conftest import ROUTES

    ensure_topics(settings, core_topics(settings))
    for spec in demo_models.values():
        deploy(settings, str(spec))
    for route in load_routes_yaml(text=ROUTES):
        publish_route(settings, replace(route, version=1))


def test_route_change_promotion_and_map_update_during_traffic_are_applied_whole(
        settings: Settings, deployed: dict[str, Path], tmp_path: Path, workers: list[WorkerProcess]) -> None:
    from museflow.control.routing import ModelRef
    from museflow.kafka.control import publish_control
    from museflow.kafka.plane import publish_route, read_state
    from museflow.transform.qmap import QuantileMap

    w = worker(settings, tmp_path, "w").start()
    workers.append(w)
    w.wait_ready(90)
    traffic = Traffic(settings, 6000, rate=400, seed=44)
    state = read_state(settings)
    traffic.wait_sent(1000)
    initech = state.routes.get("initech-fin", "card-not-present")
    assert initech is not None
    publish_route(settings, replace(initech, champion=ModelRef("fraud-cnp", "2"), version=2))
    traffic.wait_sent(2500)
    acme = state.routes.get("acme-bank", "card-not-present")
    assert acme is not None
    publish_route(settings, acme.promoted(ModelRef("fraud-cnp", "2")))
    traffic.wait_sent(4000)
    knots = [0.0, 0.25, 0.5, 0.75, 1.0]
    qmap = QuantileMap(model="fraud-cnp", model_version="1", tenant="globex-pay", intent="card-not-present",
                       version=7, knots_x=knots, knots_y=[0.0, 0.2, 0.5, 0.8, 1.0], reference_name="uniform",
                       reference_version=1, sample_count=10_000, created_at_ms=int(time.time() * 1000))
    serdes = serdes_from_settings(settings)
    publish_control(settings, settings.topics.quantile_maps, "fraud-cnp@1/globex-pay",
                    serdes.quantile_maps.encode(qmap.to_record()))
    summary = traffic.join()
    acc = settled(settings, summary)
    print(f"\n{acc.line('route change + promotion + map update')}")
    assert acc.lost == 0 and acc.good_in_dlq == 0
    expected = {("initech-fin", 1): "1", ("initech-fin", 2): "2", ("acme-bank", 1): "1", ("acme-bank", 2): "2"}
    seen: Counter[tuple[str, int, str]] = Counter()
    for r in acc.records:
        if r["intent"] != "card-not-present":
            continue
        key = (r["tenant"], r["route_version"])
        if key in expected:
            assert r["model_version"] == expected[key], f"{r['event_id']}: v{key[1]} served by {r['model_version']}"
        seen[(r["tenant"], r["route_version"], r["model_version"])] += 1
        if r["tenant"] == "globex-pay" and r["model_version"] == "1":
            assert r["map_version"] in (0, 7), r["map_version"]
    maps_seen = Counter(r["map_version"] for r in acc.records
                        if r["tenant"] == "globex-pay" and r["model_version"] == "1")
    print(f"versions seen (tenant, route version, model version): {dict(seen)}; globex maps {dict(maps_seen)}")
    assert seen[("initech-fin", 1, "1")] and seen[("initech-fin", 2, "2")]
    assert seen[("acme-bank", 1, "1")] and seen[("acme-bank", 2, "2")]
    assert maps_seen[7] > 0, "the map update never took effect"


@pytest.mark.parametrize("fault", ["corrupted-artifact", "invalid-spec"])
def test_a_bad_model_deployment_is_rejected_and_the_old_version_keeps_serving(
        fault: str, settings: Settings, deployed: dict[str, Path], tmp_path: Path,
        workers: list[WorkerProcess]) -> None:
    from museflow.kafka.control import control_decoder, publish_control
    from museflow.model.spec import load_spec

    w = worker(settings, tmp_path, "w").start()
    workers.append(w)
    w.wait_ready(90)
    traffic = Traffic(settings, 3000, rate=300, seed=45)
    traffic.wait_sent(800)
    serdes = serdes_from_settings(settings)
    decode = control_decoder(settings, serdes)
    records = [decode(settings.topics.deployments, r.value) for r in read_topic(settings, settings.topics.deployments)]
    v1 = next(dict(r) for r in records if r["model"] == "fraud-cnp" and r["version"] == "1")
    spec_path = deployed["fraud-cnp@1"]
    bad = {**v1, "version": "1", "deployed_at": int(time.time() * 1000)}
    if fault == "corrupted-artifact":
        corrupted = tmp_path / "corrupted.ubj"
        data = bytearray(Path(load_spec(spec_path).artifact.resolve(spec_path.parent)).read_bytes())
        data[len(data) // 2] ^= 0xFF
        corrupted.write_bytes(bytes(data))
        bad["artifact_uri"] = str(corrupted)
    else:
        bad["spec_yaml"] = "name: fraud-cnp\nversion: '1'\nfeatures: [{name: amount, type: complex}]\n"
    publish_control(settings, settings.topics.deployments, "fraud-cnp@1", serdes.deployments.encode(bad))
    summary = traffic.join()
    acc = settled(settings, summary)
    print(f"\n{acc.line(f'bad deployment ({fault})')}")
    assert acc.lost == 0 and acc.good_in_dlq == 0, "an event went unscored"
    assert all(r["model_version"] in ("1", "2") for r in acc.records)
    metrics = w.metrics()
    assert 'museflow_model_loads_total{model="fraud-cnp",outcome="rejected"} 1.0' in metrics \
        or "rejected" in w.log_path.read_text(), metrics[:2000]
