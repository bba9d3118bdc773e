"""TLS settings reach every client kind: librdkafka keys, the Faust app's SSL context, the registry client.

The CA is made here (``tests/tls.py``); no broker: the clients' own configuration parsers
(confluent-kafka's ``SchemaRegistryClient``, Faust's credentials) are checked, and the registry client
does a real TLS handshake with the in-process stub registry on https.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from museflow.config import Settings
from museflow.errors import ConfigError, DependencyUnavailable
from tests.tls import TestCa, make_ca


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    return make_ca(tmp_path_factory.mktemp("ca"))


def tls_settings(ca: TestCa, *, client_cert: bool = False, **more: Any) -> Settings:
    """SSL trusting ``ca``; ``client_cert`` adds the client certificate and key it signed."""
    if client_cert:
        more = {"ssl_certfile": str(ca.client_certfile), "ssl_keyfile": str(ca.client_keyfile), **more}
    return Settings(security_protocol="SSL", ssl_cafile=str(ca.cafile), **more)


def test_ssl_settings_become_librdkafka_keys(ca: TestCa) -> None:
    conf = tls_settings(ca, client_cert=True).librdkafka_config()
    assert conf["security.protocol"] == "ssl"
    assert (conf["ssl.ca.location"], conf["ssl.certificate.location"], conf["ssl.key.location"]) == (
        str(ca.cafile), str(ca.client_certfile), str(ca.client_keyfile))
    assert "sasl.password" not in conf


def test_ssl_settings_survive_the_trip_to_a_worker_process(ca: TestCa) -> None:
    settings = tls_settings(ca, client_cert=True)
    assert Settings.from_env(settings.to_env()) == settings


def test_the_faust_app_gets_an_ssl_context_trusting_the_ca(ca: TestCa) -> None:
    import faust

    from museflow.agents.app import create_app

    app = create_app(tls_settings(ca, client_cert=True, data_dir=str(ca.cafile.parent / "data")))
    creds = app.conf.broker_credentials
    assert isinstance(creds, faust.SSLCredentials)
    context = creds.context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert any("museflow-test-ca" in str(c.get("subject")) for c in context.get_ca_certs())


def test_an_https_registry_is_verified_against_the_ca(ca: TestCa) -> None:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    settings = tls_settings(ca, schema_registry_url="https://127.0.0.1:8081")
    conf = settings.schema_registry_config()
    assert conf == {"url": "https://127.0.0.1:8081", "ssl.ca.location": str(ca.cafile)}
    SchemaRegistryClient(conf)  # confluent-kafka accepts the options (it loads the CA file here)


def test_an_https_registry_is_offered_the_client_certificate(ca: TestCa) -> None:
    conf = tls_settings(ca, client_cert=True,
                        schema_registry_url="https://a.example,https://b.example").schema_registry_config()
    assert conf is not None
    assert (conf["ssl.certificate.location"], conf["ssl.key.location"]) == (
        str(ca.client_certfile), str(ca.client_keyfile))


@pytest.mark.parametrize("url", ["http://schema-registry:8081", "mock://tls-test"])
def test_a_plain_http_or_mock_registry_gets_no_tls_options(ca: TestCa, url: str) -> None:
    assert tls_settings(ca, schema_registry_url=url).schema_registry_config() == {"url": url}


def test_a_key_without_its_certificate_is_refused_by_name(ca: TestCa) -> None:
    with pytest.raises(ConfigError, match="MUSEFLOW_SSL_CERTFILE"):
        Settings.from_env({"MUSEFLOW_SECURITY_PROTOCOL": "SSL", "MUSEFLOW_SSL_KEYFILE": str(ca.keyfile)})


def test_the_private_key_never_shows_in_repr(ca: TestCa) -> None:
    settings = tls_settings(ca, client_cert=True)
    assert Path(settings.ssl_keyfile or "").read_text().startswith("-----BEGIN PRIVATE KEY-----")
    for body in ca.private_key_bodies():
        assert body and body[:24] not in repr(settings) and body[:24] not in str(settings)


def test_serdes_register_and_resolve_over_https_with_the_ca_and_refuse_an_unrelated_one(
        ca: TestCa, tmp_path: Path) -> None:
    """A real TLS handshake with the stub registry: the CA is what makes it work, no fallback without it."""
    from museflow.demo.loadgen import TransactionGenerator
    from museflow.errors import BrokerError
    from museflow.kafka.schema_registry import resolver_from_settings, serdes_from_settings
    from tests.registry_stub import StubRegistry

    registry = StubRegistry(ssl_context=ca.server_context()).start()
    try:
        assert registry.url.startswith("https://127.0.0.1:")
        writer = serdes_from_settings(tls_settings(ca, client_cert=True, schema_registry_url=registry.url))
        reader = serdes_from_settings(tls_settings(ca, schema_registry_url=registry.url))
        event = dict(TransactionGenerator(seed=3).generate(1, start_ms=1_700_000_000_000)[0].event)
        value = writer.events.encode(event)
        assert reader.events.decode_many([value]) == [writer.events.decode(value)]
        served = registry.requests
        assert served > 0

        unrelated = make_ca(tmp_path / "unrelated", name="unrelated-ca")
        for cafile in (str(unrelated.cafile), None):
            wrong = Settings(security_protocol="SSL", ssl_cafile=cafile, schema_registry_url=registry.url)
            resolver = resolver_from_settings(wrong)
            assert resolver is not None
            with pytest.raises(BrokerError, match="CERTIFICATE_VERIFY_FAILED") as refused:
                resolver.register("io.museflow.events.TransactionEvent", writer.events.schema_json)
            # a misconfiguration, not an outage: the hot loop must fail, not wait for it forever
            assert not isinstance(refused.value, DependencyUnavailable)
        assert registry.requests == served, "a request got through without a verified handshake"
    finally:
        registry.stop()
