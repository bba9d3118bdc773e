"""The ACLs the README documents, enforced by a real broker (KRaft ``StandardAuthorizer``).

The platform principal runs a whole worker (every role) with only ``platform_rules``; each tenant
principal, with only ``tenant_rules``, reads its own scored topic and is refused everything else:
another tenant's topic, the events topic, the score log, the dead-letter topic, writing events,
and consumer groups not named after it. A publishing tenant writes only its own ingest topic, and
what it writes there is taken as its own: an event claiming another tenant is dead-lettered.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from museflow.cli.acls import acls_command
from museflow.cli.tail import tail_command
from museflow.config import Settings
from museflow.contracts.topics import ingest_topic_name
from museflow.control.routing import ModelRef, Route
from museflow.demo.loadgen import TransactionGenerator
from museflow.demo.supervise import WorkerProcess
from museflow.errors import ConfigError
from museflow.kafka.acls import apply_rules, platform_rules, tenant_rules
from museflow.kafka.broker import BrokerInstance, LocalKafka
from museflow.kafka.clients import make_consumer, make_producer, read_topic
from museflow.kafka.plane import publish_route
from museflow.kafka.schema_registry import serdes_from_settings
from tests.integration.conftest import topic_size, wait_for
from tests.integration.test_faults import Accounting, Traffic, _deploy, settled

PASSWORDS = {"museflow": "platform-Pa55", "acme-bank": "acme-Pa55", "globex-pay": "globex-Pa55",
             "acme": "acme-short-Pa55"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInstance]:
    broker = LocalKafka(f"acl-{time.time_ns()}", home=tmp_path_factory.mktemp("kafka-acl"),
                        sasl_users=PASSWORDS, authorizer=True)
    inst = broker.start(timeout=120)
    try:
        yield inst
    finally:
        broker.destroy()


def as_user(admin: Settings, inst: BrokerInstance, user: str) -> Settings:
    return admin.replace(bootstrap_servers=inst.sasl_bootstrap, security_protocol="SASL_PLAINTEXT",
                         sasl_mechanism="SCRAM-SHA-256", sasl_username=user, sasl_password=PASSWORDS[user])


def first_outcome(settings: Settings, topic: str, group: str, timeout: float = 20) -> str:
    """Subscribe and poll: 'message' once one arrives, else the error's code name, else 'nothing'."""
    consumer = make_consumer(settings, group)
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            return "message" if error is None else str(error.name())
        return "nothing"
    finally:
        consumer.close()


def count_records(settings: Settings, topic: str, group: str, expected: int, timeout: float = 60) -> int:
    consumer = make_consumer(settings, group)
    consumer.subscribe([topic])
    n = 0
    try:
        deadline = time.monotonic() + timeout
        while n < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            n += 1
        return n
    finally:
        consumer.close()


def produce_outcome(settings: Settings, topic: str) -> str:
    errors: list[str] = []
    producer = Producer({**settings.librdkafka_config(), "message.timeout.ms": 10000})
    producer.produce(topic, b"x", on_delivery=lambda err, _msg: errors.append(err.name() if err else "delivered"))
    producer.flush(15)
    return errors[0] if errors else "no delivery report"


def admin_settings(inst: BrokerInstance, tmp_path: Path) -> Settings:
    """The PLAINTEXT listener's principal (User:ANONYMOUS) is the broker's super user: the administrator."""
    tag = f"a{time.time_ns() % 10**10}"
    return Settings(bootstrap_servers=inst.bootstrap, topic_prefix=f"{tag}.", app_id=f"mf-{tag}",
                    data_dir=str(tmp_path / "data"), model_dir=str(tmp_path / "models"), metrics_enabled=False,
                    broker_session_timeout_seconds=6.0, new_group_start="earliest")


def score_as(platform: Settings, admin: Settings, demo_models: dict[str, Path], tmp_path: Path,
             roles: tuple[str, ...], n: int, name: str, isolation: str = "read_uncommitted") -> Accounting:
    """Deploy and run a worker as the platform principal; every event must come out, with no
    authorization error anywhere in the worker's log. Accounted by the administrator."""
    _deploy(platform, demo_models)
    worker = WorkerProcess(platform, roles=roles, log_path=tmp_path / "worker.log").start()
    try:
        worker.wait_ready(120)
        summary = Traffic(platform, n, rate=300, seed=71, bad_fraction=0.02).join()
        acc = settled(admin, summary, timeout=120, isolation=isolation)
        print(f"\n{acc.line(name)}")
        assert acc.lost == 0 and len(acc.scored) == summary.good
        assert worker.alive(), worker.log_tail()
    finally:
        worker.stop()
    assert "AUTHORIZATION_FAILED" not in worker.log_path.read_text(errors="replace")
    return acc


def test_documented_acls_run_the_platform_and_confine_each_tenant_to_its_own_topic(
        acl_broker: BrokerInstance, demo_models: dict[str, Path], tmp_path: Path) -> None:
    admin = admin_settings(acl_broker, tmp_path)
    platform = as_user(admin, acl_broker, "museflow")
    acme, globex = as_user(admin, acl_broker, "acme-bank"), as_user(admin, acl_broker, "globex-pay")

    # without ACLs the platform principal may do nothing at all
    assert produce_outcome(platform, admin.topics.events) == "TOPIC_AUTHORIZATION_FAILED"

    apply_rules(admin, platform_rules(platform, "User:museflow"))
    apply_rules(admin, tenant_rules(admin, "acme-bank"))
    apply_rules(admin, tenant_rules(admin, "globex-pay"))

    acc = score_as(platform, admin, demo_models, tmp_path, ("all",), 600, "platform principal under ACLs")

    acme_scored = sum(1 for r in acc.records if r["tenant"] == "acme-bank")
    assert acme_scored > 0
    assert count_records(acme, admin.topics.scores("acme-bank"), "acme-bank.risk-engine", acme_scored) == acme_scored
    assert first_outcome(globex, admin.topics.scores("globex-pay"), "globex-pay.alerts") == "message"
    # `museflow tail` as the tenant, with a group named after it
    tail = CliRunner().invoke(tail_command, ["--tenant", "acme-bank", "--json", "--group", "acme-bank.tail"],
                              env=acme.to_env())
    assert tail.exit_code == 0, tail.output
    assert len(tail.output.splitlines()) == acme_scored
    assert CliRunner().invoke(tail_command, ["--tenant", "acme-bank", "--timeout", "10"],
                              env=acme.to_env()).exit_code != 0, "a group outside the tenant's prefix is refused"

    refused = {
        "another tenant's scores": first_outcome(acme, admin.topics.scores("globex-pay"), "acme-bank.x"),
        "the events topic": first_outcome(acme, admin.topics.events, "acme-bank.x"),
        "the score log": first_outcome(acme, admin.topics.score_log, "acme-bank.x"),
        "the dead-letter topic": first_outcome(acme, admin.topics.dlq, "acme-bank.x"),
    }
    assert refused == dict.fromkeys(refused, "TOPIC_AUTHORIZATION_FAILED"), refused
    assert first_outcome(acme, admin.topics.scores("acme-bank"), "globex-pay.spy") == "GROUP_AUTHORIZATION_FAILED"
    assert produce_outcome(acme, admin.topics.events) == "TOPIC_AUTHORIZATION_FAILED"
    assert produce_outcome(acme, admin.topics.scores("acme-bank")) == "TOPIC_AUTHORIZATION_FAILED"


def test_exactly_once_workers_need_only_the_documented_transactional_id_acl(
        acl_broker: BrokerInstance, demo_models: dict[str, Path], tmp_path: Path) -> None:
    admin = admin_settings(acl_broker, tmp_path).replace(processing_guarantee="exactly_once",
                                                         transaction_timeout_seconds=10.0, instance_id="w1")
    platform = as_user(admin, acl_broker, "museflow")
    rules = platform_rules(platform, "User:museflow")
    assert any(rule.resource == "transactional-id" for rule in rules)
    apply_rules(admin, rules)
    acc = score_as(platform, admin, demo_models, tmp_path, ("router", "scorer"), 400,
                   "exactly-once platform principal under ACLs", isolation="read_committed")
    assert acc.duplicates == 0


CNP = "card-not-present"


def tenant_events(tenant: str, claims: list[str], seed: int) -> list[tuple[bytes, bytes, dict[str, Any]]]:
    """(key, value, event) for events written by ``tenant``, each claiming the tenant in ``claims``."""
    serde = serdes_from_settings(Settings()).events
    now_ms = int(time.time() * 1000)
    out = []
    for g, claim in zip(TransactionGenerator(seed=seed).generate(len(claims), start_ms=now_ms - 60_000), claims,
                        strict=True):
        event = {**g.event, "tenant": claim, "intent": CNP, "event_id": f"{tenant}-{seed}-{g.event['event_id']}"}
        out.append((str(event["card_id"]).encode(), serde.encode(event), event))
    return out


def publish_as(settings: Settings, topic: str, records: list[tuple[bytes, bytes, dict[str, Any]]]) -> None:
    """Write ``records`` with the tenant's own credentials; every one must be acknowledged."""
    errors: list[str] = []
    producer = make_producer(settings, **{"message.timeout.ms": 20000})
    for key, value, _event in records:
        producer.produce(topic, value=value, key=key,
                         on_delivery=lambda err, _msg: errors.append(err.name()) if err else None)
    assert producer.flush(30) == 0
    assert errors == [], errors


def test_a_tenant_writes_only_its_own_ingest_topic_and_cannot_speak_for_another_tenant(
        acl_broker: BrokerInstance, demo_models: dict[str, Path], tmp_path: Path) -> None:
    admin = admin_settings(acl_broker, tmp_path)
    platform = as_user(admin, acl_broker, "museflow")
    acme, acme_bank = as_user(admin, acl_broker, "acme"), as_user(admin, acl_broker, "acme-bank")
    ingest = {t: ingest_topic_name(admin.topics, t) for t in ("acme", "acme-bank")}
    router_group = f"{admin.app_id}-router"
    with pytest.raises(ConfigError, match="platform"):  # its groups would sit inside the platform's
        tenant_rules(admin, router_group, publishes=True)

    apply_rules(admin, platform_rules(platform, "User:museflow"))
    granted = CliRunner().invoke(acls_command, ["--tenant", "acme", "--tenant", "acme-bank", "--tenant-publishes",
                                                "--apply"], env=admin.to_env())
    assert granted.exit_code == 0, granted.output
    assert [topic_size(admin, ingest[t]) for t in ingest] == [0, 0], "--apply creates the ingest topics"
    _deploy(platform, demo_models)  # publishing a route creates its tenant's ingest topic as well
    assert topic_size(admin, ingest_topic_name(admin.topics, "initech-fin")) == 0
    publish_route(platform, Route("acme", CNP, ModelRef("fraud-cnp", "1"), version=1))

    # Kafka, not museflow, keeps acme out of acme-bank's ingest topic and out of the shared events topic
    assert produce_outcome(acme, ingest["acme-bank"]) == "TOPIC_AUTHORIZATION_FAILED"
    assert produce_outcome(acme, admin.topics.events) == "TOPIC_AUTHORIZATION_FAILED"
    assert produce_outcome(acme_bank, ingest["acme"]) == "TOPIC_AUTHORIZATION_FAILED"

    claims = ["acme", "acme-bank", "acme", "acme", "acme-bank"] * 20  # 60 honest, 40 claiming acme-bank
    from_acme = tenant_events("acme", claims, seed=81)
    from_bank = tenant_events("acme-bank", ["acme-bank"] * 30, seed=82)
    honest = {e["event_id"] for _k, _v, e in from_acme if e["tenant"] == "acme"}
    forged = {e["event_id"]: v for _k, v, e in from_acme if e["tenant"] == "acme-bank"}
    bank = {e["event_id"] for _k, _v, e in from_bank}
    sent = [e["event_id"] for _k, _v, e in from_acme + from_bank]
    assert len(set(sent)) == len(sent) == 130

    worker = WorkerProcess(platform, roles=("all",), log_path=tmp_path / "worker.log").start()
    try:
        worker.wait_ready(120)
        publish_as(acme, ingest["acme"], from_acme)
        publish_as(acme_bank, ingest["acme-bank"], from_bank)
        wait_for(lambda: topic_size(admin, admin.topics.scores("acme")) >= len(honest)
                 and topic_size(admin, admin.topics.scores("acme-bank")) >= len(bank)
                 and topic_size(admin, admin.topics.dlq) >= len(forged), 120, "every event scored or dead-lettered")
        assert worker.alive(), worker.log_tail()
    finally:
        worker.stop()  # graceful: every output of every batch it took is acknowledged before it exits
    assert "AUTHORIZATION_FAILED" not in worker.log_path.read_text(errors="replace")

    serdes = serdes_from_settings(admin)
    scored = {t: Counter(serdes.scored.decode(r.value)["event_id"]
                         for r in read_topic(admin, admin.topics.scores(t)) if r.value)
              for t in ("acme", "acme-bank")}
    letters = [serdes.dead_letters.decode(r.value) for r in read_topic(admin, admin.topics.dlq) if r.value]
    dead: Counter[str] = Counter()
    for letter in letters:
        event = serdes.events.decode(letter["original_value"])
        dead[event["event_id"]] += 1
        assert (letter["reason"], letter["tenant"], letter["source_topic"]) == ("tenant_mismatch", "acme",
                                                                                ingest["acme"]), letter
        assert letter["original_value"] == forged[event["event_id"]], "the dead letter keeps the original bytes"
    assert set(scored["acme"]) == honest, "acme's honest events are scored into its own topic"
    assert set(scored["acme-bank"]) == bank, "nothing acme wrote reaches acme-bank's topic"
    assert set(dead) == set(forged)
    # conservation per event id: each event is scored exactly once or dead-lettered exactly once
    assert {i: scored["acme"][i] + scored["acme-bank"][i] + dead[i] for i in sent} == dict.fromkeys(sent, 1)
    print(f"\n[tenant ingest] sent={len(sent)} scored acme={len(honest)} acme-bank={len(bank)} "
          f"tenant_mismatch={len(forged)} lost=0 duplicates=0")

    # groups: acme. does not cover acme-bank.*, and neither tenant reaches the platform's groups
    assert count_records(acme, admin.topics.scores("acme"), "acme.alerts", len(honest)) == len(honest)
    assert first_outcome(acme, admin.topics.scores("acme"), "acme-bank.alerts") == "GROUP_AUTHORIZATION_FAILED"
    assert first_outcome(acme_bank, admin.topics.scores("acme-bank"), "acme.alerts") == "GROUP_AUTHORIZATION_FAILED"
    assert first_outcome(acme, admin.topics.scores("acme"), router_group) == "GROUP_AUTHORIZATION_FAILED"
    assert first_outcome(acme, admin.topics.scores("acme"), admin.app_id) == "GROUP_AUTHORIZATION_FAILED"
