"""Security settings reach every Kafka client museflow creates; secrets never leak.

A dedicated broker with a SASL_PLAINTEXT listener (PLAIN and SCRAM-SHA-256 users; the controller
and inter-broker traffic stay on PLAINTEXT). Each client — confluent producer, consumer and
admin, the control follower, the lag reader, and the Faust/aiokafka app of a real worker — must
connect with the credentials from :class:`Settings` and fail with wrong ones. A worker on the
SASL listener scores events end to end, and the password appears nowhere: not in ``repr``,
not in its log file (run at ``info``), not on ``/metrics``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from museflow.config import Settings
from museflow.control.state import PipelineState
from museflow.demo.supervise import WorkerProcess
from museflow.errors import BrokerError, MuseflowError
from museflow.kafka.broker import BrokerInstance, LocalKafka
from museflow.observe.metrics import PipelineMetrics
from tests.integration.test_faults import Traffic, _deploy, settled

PASSWORD = "s3cr3t-Pa55-for-museflow"
USER = "museflow"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInstance]:
    broker = LocalKafka(f"sasl-{time.time_ns()}", home=tmp_path_factory.mktemp("kafka-sasl"),
                        sasl_users={USER: PASSWORD})
    inst = broker.start(timeout=120)
    try:
        yield inst
    finally:
        broker.destroy()


def sasl_settings(inst: BrokerInstance, tmp_path: Path, mechanism: str, password: str = PASSWORD) -> Settings:
    tag = f"s{time.time_ns() % 10**10}"
    return Settings(bootstrap_servers=inst.sasl_bootstrap, security_protocol="SASL_PLAINTEXT",
                    sasl_mechanism=mechanism, sasl_username=USER, sasl_password=password,
                    topic_prefix=f"{tag}.", app_id=f"mf-{tag}", data_dir=str(tmp_path / "data"),
                    model_dir=str(tmp_path / "models"), metrics_enabled=False, broker_session_timeout_seconds=6.0,
                    new_group_start="earliest")


def exercise_every_client(settings: Settings) -> None:
    """Admin, producer, consumer, control follower and lag reader, each with ``settings``."""
    from museflow.contracts.topics import core_topics
    from museflow.control.routing import ModelRef, Route
    from museflow.kafka.admin import ensure_topics, existing_topics
    from museflow.kafka.clients import read_topic
    from museflow.kafka.control import ControlFollower, control_decoder, publish_control
    from museflow.kafka.lag import read_lag
    from museflow.kafka.schema_registry import serdes_from_settings

    ensure_topics(settings, core_topics(settings))
    assert settings.topics.routes in existing_topics(settings)
    serdes = serdes_from_settings(settings)
    route = Route("acme-bank", "card-not-present", ModelRef("fraud-cnp", "1"), version=1)
    publish_control(settings, settings.topics.routes, route.key, serdes["Route"].encode(route.to_record()))
    assert len(read_topic(settings, settings.topics.routes, timeout=20)) == 1
    state = PipelineState(model_dir=Path(settings.model_dir), metrics=PipelineMetrics())
    follower = ControlFollower(settings, state, control_decoder(settings, serdes)).start()
    try:
        assert follower.wait_caught_up(30), follower.error
        assert state.routes.get("acme-bank", "card-not-present") is not None
    finally:
        follower.stop()
    read_lag(settings, [settings.app_id])


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_every_confluent_client_connects_with_sasl_and_fails_with_a_wrong_password(
        mechanism: str, sasl_broker: BrokerInstance, tmp_path: Path) -> None:
    exercise_every_client(sasl_settings(sasl_broker, tmp_path, mechanism))

    wrong = sasl_settings(sasl_broker, tmp_path, mechanism, password="not-the-password")
    from museflow.kafka.admin import existing_topics
    from museflow.kafka.clients import read_topic
    from museflow.kafka.control import ControlFollower, control_decoder, publish_control
    from museflow.kafka.lag import read_lag
    from museflow.kafka.schema_registry import serdes_from_settings

    with pytest.raises(BrokerError, match=r"(?i)auth|transport"):
        existing_topics(wrong, timeout=10)
    with pytest.raises(BrokerError):
        publish_control(wrong, wrong.topics.routes, "k", b"v", timeout=10)
    with pytest.raises(Exception, match=r"(?i)auth|transport|timed out"):
        read_topic(wrong, wrong.topics.routes, timeout=10)
    with pytest.raises(Exception, match=r"(?i)auth|transport|timed out"):
        read_lag(wrong, [wrong.app_id], timeout=10)
    state = PipelineState(model_dir=tmp_path, metrics=PipelineMetrics())
    follower = ControlFollower(wrong, state, control_decoder(wrong, serdes_from_settings(wrong))).start()
    try:
        assert not follower.wait_caught_up(10)
    finally:
        follower.stop()
    # the plaintext listener of the same broker is not the SASL one: PLAIN creds there do not help
    assert sasl_broker.sasl_bootstrap != sasl_broker.bootstrap


def test_a_worker_on_the_sasl_listener_scores_end_to_end_and_never_shows_the_password(
        sasl_broker: BrokerInstance, demo_models: dict[str, Path], tmp_path: Path) -> None:
    settings = sasl_settings(sasl_broker, tmp_path, "SCRAM-SHA-256")
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)
    _deploy(settings, demo_models)
    worker = WorkerProcess(settings, roles=("all",), log_path=tmp_path / "worker.log", loglevel="info").start()
    try:
        worker.wait_ready(120)
        summary = Traffic(settings, 600, rate=300, seed=61, bad_fraction=0.02).join()
        acc = settled(settings, summary, timeout=120)
        print(f"\n{acc.line('worker on SASL_PLAINTEXT/SCRAM-SHA-256')}")
        assert acc.lost == 0 and len(acc.scored) == summary.good
        metrics = worker.metrics()
        assert "museflow_events_out_total" in metrics
        assert PASSWORD not in metrics
    finally:
        worker.stop()
    log = worker.log_path.read_text(errors="replace")
    assert log.strip(), "the worker wrote no log at info level; the grep would prove nothing"
    assert PASSWORD not in log, "the SASL password appears in the worker log"


def test_a_worker_with_a_wrong_password_never_becomes_ready_and_does_not_log_it(
        sasl_broker: BrokerInstance, demo_models: dict[str, Path], tmp_path: Path) -> None:
    good = sasl_settings(sasl_broker, tmp_path, "PLAIN")
    _deploy(good, demo_models)
    wrong_password = "wrong-" + PASSWORD[::-1]
    wrong = good.replace(sasl_password=wrong_password)
    worker = WorkerProcess(wrong, roles=("router",), log_path=tmp_path / "wrong.log", loglevel="info").start()
    try:
        with pytest.raises(MuseflowError):
            worker.wait_ready(30)
    finally:
        worker.kill() if worker.alive() else None
    log = worker.log_path.read_text(errors="replace")
    assert wrong_password not in log and PASSWORD not in log


def test_tenant_topic_names_cannot_reach_another_tenant() -> None:
    """Topic-name injection through a tenant id is refused before any topic name is built."""
    from museflow.control.routing import ModelRef, Route
    from museflow.errors import RouteError

    for evil in ("acme/../globex-pay", "acme.bank", "globex-pay.x", "acme\u00e9", "a" * 64, "", "Acme", "-x"):
        with pytest.raises(RouteError):
            Route(evil, "card-not-present", ModelRef("fraud-cnp", "1"))
