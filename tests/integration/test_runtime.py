"""The hot path's batch loop on the real broker: ordered commits, fused scoring, partitioning, new models."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # exported, but not in its __all__
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
)

from museflow.agents.hot import hot_group
from museflow.config import Settings
from museflow.contracts.scorelog import rows
from museflow.contracts.topics import core_topics, model_topic
from museflow.contracts.validation import event_key
from museflow.demo.loadgen import TransactionGenerator
from museflow.demo.producing import produce_events
from museflow.demo.supervise import WorkerProcess
from museflow.kafka.admin import admin_client, ensure_topics
from museflow.kafka.broker import locate_distribution
from museflow.kafka.clients import DeliveryReport, make_consumer, make_producer, read_topic
from museflow.kafka.plane import deploy
from museflow.kafka.schema_registry import serdes_from_settings
from tests.integration.conftest import wait_for
from tests.integration.test_faults import TENANTS, account, settled
from tests.unit.test_bad_input import encoded

# Fields that depend on when and where an event was scored, not on what was decided.
TIMING_FIELDS = ("scored_at", "latency_ms", "timings")


def _set_max_message_bytes(settings: Settings, topic: str, size: int) -> None:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("max.message.bytes", str(size), incremental_operation=AlterConfigOpType.SET)])
    admin = admin_client(settings)
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


def _forwarded_ids(settings: Settings, models: tuple[str, ...]) -> Counter[str]:
    serde = serdes_from_settings(settings).events
    ids: Counter[str] = Counter()
    for model in models:
        for record in read_topic(settings, settings.topics.model(model), timeout=60):
            decoded = serde.decode_many([record.value])[0]
            assert not isinstance(decoded, Exception), decoded
            if dict(record.headers).get("mf-role") != b"shadow":
                ids[str(decoded["event_id"])] += 1
    return ids


def test_a_delivery_that_fails_for_good_stops_the_worker_with_nothing_past_its_batch_committed(
        settings: Settings, deployed: dict[str, Path], tmp_path: Path) -> None:
    """Batch N's forward is refused for good (too large for the model topic) while later ones succeed:
    the worker exits non-zero, the committed offset never passes N, and a restart loses nothing.

    The router checks records against the limits it read at start (cached for a minute), so the
    limit is lowered after it started: the broker, not the check, refuses the record. (Lowered
    before the start, the record is an ``oversize`` dead letter: tests/integration/test_poison_input.py.)"""
    topic = settings.topics.model("fraud-cnp")
    ensure_topics(settings, [model_topic(settings, "fraud-cnp"), model_topic(settings, "ato")])
    router = WorkerProcess(settings, roles=("router",), log_path=tmp_path / "router-1.log").start()
    try:
        router.wait_ready(90)
        _set_max_message_bytes(settings, topic, 20_000)
        producer = make_producer(settings)
        report = DeliveryReport()
        placed: dict[str, tuple[int, int]] = {}

        def send(event_id: str, value: bytes) -> None:
            def delivered(err: Any, msg: Any) -> None:
                report(err, msg)
                if err is None:
                    placed[event_id] = (msg.partition(), msg.offset())
            producer.produce(settings.topics.events, key=b"one-card", value=value, on_delivery=delivered)

        ids = [f"runtime-{i}" for i in range(600)]
        for i, event_id in enumerate(ids):
            if i == 300:
                big = encoded(event_id="runtime-big", attributes={f"a{k}": float(k) for k in range(6000)})
                send("runtime-big", big)
            send(event_id, encoded(event_id=event_id))
            if i % 100 == 99:
                producer.flush(30)  # several fetches, so the big event's batch has batches before and after it
        assert producer.flush(30) == 0 and report.failed == 0, report.errors
        big_partition, big_offset = placed["runtime-big"]

        wait_for(lambda: not router.alive(), 120, "the router to stop on the refused delivery", poll=0.5)
        assert router.proc is not None and router.proc.returncode != 0, router.log_tail()
        assert "failed for good" in router.log_path.read_text(), router.log_tail()
    finally:
        router.stop()

    consumer = make_consumer(settings, hot_group(settings, "router"))
    try:
        [committed] = consumer.committed([TopicPartition(settings.topics.events, big_partition)], timeout=30)
    finally:
        consumer.close()
    assert committed.offset <= big_offset, f"committed {committed.offset} past the refused event at {big_offset}"
    before_restart = _forwarded_ids(settings, ("fraud-cnp", "ato"))
    assert "runtime-big" not in before_restart

    _set_max_message_bytes(settings, topic, 2_000_000)
    with WorkerProcess(settings, roles=("router",), log_path=tmp_path / "router-2.log") as again:
        again.wait_ready(90)
        want = {*ids, "runtime-big"}
        wait_for(lambda: want <= set(_forwarded_ids(settings, ("fraud-cnp", "ato"))), 120,
                 "every event forwarded after the restart", poll=2)
        assert again.alive(), again.log_tail()


def test_fused_and_split_deployments_emit_the_same_records(
        settings: Settings, demo_models: dict[str, Path], tmp_path: Path) -> None:
    """One worker scoring in place and a router -> model topic -> scorer split give identical outputs."""
    from museflow.control.routing import load_routes_yaml
    from museflow.kafka.plane import publish_route
    from tests.integration.conftest import ROUTES

    serde_events = serdes_from_settings(settings).events
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    logs: dict[str, dict[str, dict[str, Any]]] = {}
    for name, roles in (("fused", (("router", "scorer"),)), ("split", (("router",), ("scorer",)))):
        s = settings.replace(topic_prefix=f"{settings.topic_prefix}{name}.", app_id=f"{settings.app_id}-{name}")
        ensure_topics(s, core_topics(s))
        for spec in demo_models.values():
            deploy(s, str(spec))
        for route in load_routes_yaml(text=ROUTES):
            publish_route(s, replace(route, version=1))
        if name == "fused":
            summary = produce_events(s, TransactionGenerator(seed=3), 3000, keep=True, seed=3)
        else:  # the very same events (event_time included) as the fused run
            producer = make_producer(s)
            for event in summary.events:
                producer.produce(s.topics.events, key=event_key(event), value=serde_events.encode(event))
            assert producer.flush(30) == 0
        workers = [WorkerProcess(s, roles=r, log_path=tmp_path / f"{name}-{i}.log").start()
                   for i, r in enumerate(roles)]
        try:
            for w in workers:
                w.wait_ready(90)
            acc = settled(s, summary)
            assert acc.lost == 0 and acc.duplicates == 0, acc.line(name)
        finally:
            for w in workers:
                w.stop()
        runs[name] = {r["event_id"]: {k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in acc.records}
        serde = serdes_from_settings(s).score_log
        logs[name] = {}
        for entry in rows(serde.decode(record.value) for record in read_topic(s, s.topics.score_log, timeout=60)):
            logs[name][f"{entry['event_id']}/{entry['model_version']}/{entry['role']}"] = {
                k: v for k, v in entry.items() if k not in TIMING_FIELDS}
    assert len(runs["fused"]) == 3000 and set(runs["fused"]) == set(runs["split"])
    differing = Counter(k for event_id, record in runs["fused"].items() for k, v in record.items()
                        if runs["split"][event_id][k] != v)
    assert not differing, f"fields that differ between fused and split (events): {dict(differing)}"
    assert set(logs["fused"]) == set(logs["split"])
    differing = Counter(k for key, entry in logs["fused"].items() for k, v in entry.items()
                        if repr(logs["split"][key][k]) != repr(v))  # repr: a missing feature is NaN in both
    assert not differing, f"fields that differ between fused and split (score log): {dict(differing)}"
    assert any(entry["role"] == "shadow" for entry in logs["fused"].values())


def test_a_model_name_deployed_while_the_scorer_runs_is_scored_without_restart(
        settings: Settings, demo_models: dict[str, Path], start_worker: Callable[..., WorkerProcess]) -> None:
    """A split scorer subscribes to model topics by pattern: a new model name needs no restart."""
    from museflow.control.routing import load_routes_yaml
    from museflow.kafka.plane import publish_route

    ensure_topics(settings, core_topics(settings))
    deploy(settings, str(demo_models["fraud-cnp@1"]))
    cnp_only = "\n".join(f"  - {{tenant: {t}, intent: card-not-present, champion: fraud-cnp@1}}" for t in TENANTS)
    for route in load_routes_yaml(text="routes:\n" + cnp_only):
        publish_route(settings, replace(route, version=1))
    start_worker(roles=("router",))
    scorer = start_worker(roles=("scorer",))
    first = produce_events(settings, TransactionGenerator(seed=11), 300, keep=True, seed=11)
    wait_for(lambda: len(account(settings, first).scored) == sum(
        1 for e in first.events if e["intent"] == "card-not-present"), 90, "card-not-present events scored")

    deploy(settings, str(demo_models["ato@1"]))
    ato = "\n".join(f"  - {{tenant: {t}, intent: account-takeover, champion: ato@1}}" for t in TENANTS)
    for route in load_routes_yaml(text="routes:\n" + ato):
        publish_route(settings, replace(route, version=1))
    time.sleep(2)
    second = produce_events(settings, TransactionGenerator(seed=12), 600, keep=True, seed=12)
    takeover = [e["event_id"] for e in second.events if e["intent"] == "account-takeover"]
    assert takeover
    wait_for(lambda: set(takeover) <= set(account(settings, second).scored), 120,
             "account-takeover events scored by the new model")
    assert scorer.alive()
    records = [r for r in account(settings, second).records if r["event_id"] in set(takeover)]
    assert {r["model"] for r in records} == {"ato"}


JAVA_PARTITIONER = """
import java.nio.charset.StandardCharsets;
import org.apache.kafka.common.utils.Utils;
public class KeyPartition {
    public static void main(String[] args) {
        int n = Integer.parseInt(args[0]);
        for (int i = 1; i < args.length; i++) {
            byte[] key = args[i].getBytes(StandardCharsets.UTF_8);
            System.out.println(Utils.toPositive(Utils.murmur2(key)) % n);
        }
    }
}
"""


def test_keys_land_on_the_partition_the_java_client_picks(settings: Settings, create_topic: Callable[..., str],
                                                           tmp_path: Path) -> None:
    """Every museflow producer uses the Java client's murmur2 partitioner."""
    topic = create_topic("keys", partitions=12)
    keys = ["card-1", "card-42", "acct-7", "x", "0123456789abcdef", "tenant/acme-bank", *(f"k{i}" for i in range(40))]
    source = tmp_path / "KeyPartition.java"
    source.write_text(JAVA_PARTITIONER)
    java = subprocess.run(["java", "-cp", locate_distribution(fetch=False).classpath(), str(source), "12", *keys],
                          capture_output=True, text=True, timeout=120, check=True)
    expected = dict(zip(keys, map(int, java.stdout.split()), strict=True))
    producer = make_producer(settings)
    landed: dict[str, int] = {}
    for key in keys:
        producer.produce(topic, key=key.encode(), value=b"v", on_delivery=lambda err, msg: landed.__setitem__(
            (msg.key() or b"").decode(), msg.partition() or 0))
    assert producer.flush(30) == 0
    assert landed == expected
    assert len(set(expected.values())) > 6  # the table exercises many partitions
