"""TLS end to end: an SSL listener whose certificate a CA made in the test signed.

A dedicated broker with an SSL listener (``LocalKafka(..., tls=TlsFiles(...))``; the controller
and inter-broker traffic stay on PLAINTEXT) and a stub schema registry on https, both presenting a
certificate for 127.0.0.1 from a CA made here (``tests/tls.py``). With ``security_protocol="SSL"``
and ``ssl_cafile`` every client kind — confluent producer, consumer and admin, the control
follower, the lag reader, the Faust/aiokafka app of a real worker, the CLI and the registry
client — connects; with a second, unrelated CA, with no CA (the system's trust store), and as
PLAINTEXT on the SSL port, each fails: never a silent fallback. A worker on TLS everywhere scores
every event id, and no private key's content appears in its log, its ``/metrics`` or a ``repr``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from museflow.cli.main import cli
from museflow.config import Settings
from museflow.control.state import PipelineState
from museflow.demo.supervise import WorkerProcess
from museflow.errors import BrokerError
from museflow.kafka.broker import BrokerInstance, LocalKafka, TlsFiles
from museflow.observe.metrics import PipelineMetrics
from tests.integration.test_faults import Traffic, _deploy, settled
from tests.integration.test_security import exercise_every_client
from tests.registry_stub import StubRegistry
from tests.tls import TestCa, make_ca

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    return make_ca(tmp_path_factory.mktemp("tls-ca"))


@pytest.fixture(scope="module")
def unrelated_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    return make_ca(tmp_path_factory.mktemp("tls-unrelated-ca"), name="unrelated-ca")


@pytest.fixture(scope="module")
def ssl_broker(ca: TestCa, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInstance]:
    broker = LocalKafka(f"ssl-{time.time_ns()}", home=tmp_path_factory.mktemp("kafka-ssl"),
                        tls=TlsFiles(certfile=ca.certfile, keyfile=ca.keyfile))
    inst = broker.start(timeout=120)
    try:
        yield inst
    finally:
        broker.destroy()


@pytest.fixture
def registry(ca: TestCa) -> Iterator[StubRegistry]:
    stub = StubRegistry(ssl_context=ca.server_context()).start()
    yield stub
    stub.stop()


def tls_settings(inst: BrokerInstance, tmp_path: Path, cafile: Path | None, **more: Any) -> Settings:
    tag = f"s{time.time_ns() % 10**10}"
    return Settings(bootstrap_servers=inst.ssl_bootstrap, security_protocol="SSL",
                    ssl_cafile=None if cafile is None else str(cafile), topic_prefix=f"{tag}.",
                    app_id=f"mf-{tag}", data_dir=str(tmp_path / "data"), model_dir=str(tmp_path / "models"),
                    metrics_enabled=False, broker_session_timeout_seconds=6.0, new_group_start="earliest", **more)


FAIL_WITHIN = 3.0
"""Seconds a refused client is given: a handshake fails at once, so this only bounds the test's time."""


def every_client_fails(settings: Settings, tmp_path: Path) -> None:
    """Admin, producer, consumer, lag reader and control follower each fail with ``settings``."""
    from museflow.contracts.serde import Serdes
    from museflow.kafka.admin import existing_topics
    from museflow.kafka.clients import read_topic
    from museflow.kafka.control import ControlFollower, control_decoder, publish_control
    from museflow.kafka.lag import read_lag

    with pytest.raises(BrokerError):
        existing_topics(settings, timeout=FAIL_WITHIN)
    with pytest.raises(BrokerError):
        publish_control(settings, settings.topics.routes, "k", b"v", timeout=FAIL_WITHIN)
    with pytest.raises(Exception, match=r"(?i)ssl|transport|timed out"):
        read_topic(settings, settings.topics.routes, timeout=FAIL_WITHIN)
    with pytest.raises(Exception, match=r"(?i)ssl|transport|timed out"):
        read_lag(settings, [settings.app_id], timeout=FAIL_WITHIN)
    state = PipelineState(model_dir=tmp_path, metrics=PipelineMetrics())
    follower = ControlFollower(settings, state, control_decoder(settings, Serdes())).start()
    try:
        assert not follower.wait_caught_up(FAIL_WITHIN)
    finally:
        follower.stop()


def test_every_client_connects_with_the_ca_and_fails_with_an_unrelated_one(
        ssl_broker: BrokerInstance, ca: TestCa, unrelated_ca: TestCa, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    exercise_every_client(tls_settings(ssl_broker, tmp_path, ca.cafile))

    with caplog.at_level(logging.INFO, logger="museflow.librdkafka"):
        every_client_fails(tls_settings(ssl_broker, tmp_path, unrelated_ca.cafile), tmp_path)
    assert "certificate verify failed" in caplog.text, "the failure does not say the broker's certificate is untrusted"


def test_no_silent_fallback_without_the_ca_or_without_tls(
        ssl_broker: BrokerInstance, ca: TestCa, tmp_path: Path) -> None:
    from museflow.kafka.admin import existing_topics
    from museflow.kafka.control import publish_control

    system_trust = tls_settings(ssl_broker, tmp_path, None)
    plaintext_on_ssl_port = tls_settings(ssl_broker, tmp_path, None).replace(security_protocol="PLAINTEXT")
    tls_on_plaintext_port = tls_settings(ssl_broker, tmp_path, ca.cafile).replace(
        bootstrap_servers=ssl_broker.bootstrap)
    for settings in (system_trust, plaintext_on_ssl_port, tls_on_plaintext_port):
        with pytest.raises(BrokerError):
            existing_topics(settings, timeout=FAIL_WITHIN)
        with pytest.raises(BrokerError):
            publish_control(settings, settings.topics.routes, "k", b"v", timeout=FAIL_WITHIN)


def test_a_worker_on_tls_everywhere_scores_every_event_and_never_shows_a_private_key(
        ssl_broker: BrokerInstance, ca: TestCa, registry: StubRegistry, demo_models: dict[str, Path],
        tmp_path: Path) -> None:
    settings = tls_settings(ssl_broker, tmp_path, ca.cafile, ssl_certfile=str(ca.client_certfile),
                            ssl_keyfile=str(ca.client_keyfile), schema_registry_url=registry.url)
    assert registry.url.startswith("https://")
    keys = ca.private_key_bodies()
    assert not any(key[:24] in repr(settings) for key in keys)
    _deploy(settings, demo_models)
    worker = WorkerProcess(settings, roles=("all",), log_path=tmp_path / "worker.log", loglevel="info").start()
    try:
        worker.wait_ready(120)
        before = registry.requests
        summary = Traffic(settings, 600, rate=300, seed=67, bad_fraction=0.02).join()
        acc = settled(settings, summary, timeout=120)
        print(f"\n{acc.line('worker on SSL with an https schema registry')}")
        assert acc.lost == 0
        assert set(acc.scored) == {e["event_id"] for e in summary.events}
        assert registry.requests > before, "nothing was registered or resolved over https"
        metrics = worker.metrics()
        assert "museflow_events_out_total" in metrics
        assert not any(key[:24] in metrics for key in keys)
    finally:
        worker.stop()
    log = worker.log_path.read_text(errors="replace")
    assert log.strip(), "the worker wrote no log at info level; the grep would prove nothing"
    for key in keys:
        for line in key[:64], key[-64:]:
            assert line not in log, "a private key's content appears in the worker log"


def test_the_cli_works_over_tls_and_fails_with_an_unrelated_ca(
        ssl_broker: BrokerInstance, ca: TestCa, unrelated_ca: TestCa, registry: StubRegistry,
        demo_models: dict[str, Path], tmp_path: Path) -> None:
    settings = tls_settings(ssl_broker, tmp_path, ca.cafile, schema_registry_url=registry.url)
    _deploy(settings, demo_models)
    runner = CliRunner()
    env = {**settings.to_env(), "COLUMNS": "220"}

    shown = runner.invoke(cli, ["routes", "show"], env=env)
    assert shown.exit_code == 0, shown.output + repr(shown.exception)
    assert "acme-bank" in shown.output and "fraud-cnp" in shown.output

    lag = runner.invoke(cli, ["lag", "--json"], env=env)
    assert lag.exit_code == 0, lag.output + repr(lag.exception)
    assert "rows" in json.loads(lag.output.splitlines()[0])

    wrong = {**env, "MUSEFLOW_SSL_CAFILE": str(unrelated_ca.cafile)}
    for args in (["lag", "--json", "--group", settings.app_id],):
        refused = runner.invoke(cli, args, env=wrong)
        assert refused.exit_code != 0 and refused.exception is not None, refused.output
        print(f"\n`museflow {' '.join(args)}` with an unrelated CA: {refused.exception}")


def test_lag_of_every_group_fails_with_an_unrelated_ca(
        ssl_broker: BrokerInstance, unrelated_ca: TestCa, tmp_path: Path) -> None:
    wrong = tls_settings(ssl_broker, tmp_path, unrelated_ca.cafile)
    refused = CliRunner().invoke(cli, ["lag", "--json"], env=wrong.to_env())
    assert refused.exit_code != 0, refused.output
