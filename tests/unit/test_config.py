from __future__ import annotations

import pytest

from museflow.config import Settings, mask_url
from museflow.errors import ConfigError


def test_environment_is_read_with_the_prefix_and_coerced() -> None:
    s = Settings.from_env({"MUSEFLOW_BOOTSTRAP_SERVERS": "h:1", "MUSEFLOW_PARTITIONS": "3",
                           "MUSEFLOW_METRICS_ENABLED": "false", "MUSEFLOW_BATCH_WINDOW_SECONDS": "0.2"})
    assert (s.bootstrap_servers, s.partitions, s.metrics_enabled, s.batch_window_seconds) == ("h:1", 3, False, 0.2)


def test_overrides_beat_the_environment() -> None:
    assert Settings.from_env({"MUSEFLOW_PARTITIONS": "3"}, partitions=9).partitions == 9


@pytest.mark.parametrize(("env", "fragment"), [
    ({"MUSEFLOW_PARTITIONS": "six"}, "MUSEFLOW_PARTITIONS='six' is not a valid int"),
    ({"MUSEFLOW_PROCESSING_GUARANTEE": "maybe"}, "processing_guarantee='maybe'"),
    ({"MUSEFLOW_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "needs MUSEFLOW_SASL_USERNAME"),
    ({"MUSEFLOW_PARTITIONS": "0"}, "partitions must be >= 1"),
])
def test_bad_settings_name_the_variable(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert fragment in str(info.value)


def test_secrets_are_masked_in_repr_but_reach_the_clients() -> None:
    s = Settings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="svc",
                 sasl_password="hunter2", schema_registry_url="http://r", schema_registry_password="pw2")
    assert "hunter2" not in repr(s) and "pw2" not in str(s)
    conf = s.librdkafka_config()
    assert conf["sasl.password"] == "hunter2" and conf["security.protocol"] == "sasl_ssl"
    assert s.faust_broker_options()["credentials"]["password"] == "hunter2"


def test_topic_names_take_the_deployment_prefix() -> None:
    t = Settings(topic_prefix="prod.").topics
    assert (t.events, t.scores("acme"), t.model("fraud")) == (
        "prod.museflow.events", "prod.museflow.scores.acme", "prod.museflow.model.fraud")


def test_librdkafka_logs_through_python_logging_at_the_worker_level() -> None:
    import logging

    for level, syslog in (("debug", 7), ("info", 6), ("warn", 4), ("error", 3)):
        conf = Settings(log_level=level).librdkafka_config()
        assert conf["log_level"] == syslog
        assert isinstance(conf["logger"], logging.Logger) and conf["logger"].name == "museflow.librdkafka"


@pytest.mark.parametrize(("url", "shown"), [
    ("https://alice:s3cr3t@registry.example:8081", "https://***@registry.example:8081"),
    ("https://KEY:p%40ss@a.example,https://KEY:p%40ss@b.example/sr", "https://***@a.example,https://***@b.example/sr"),
    ("https://user:pa@ss@registry.example", "https://***@registry.example"),
    ("http://schema-registry:8081", "http://schema-registry:8081"),
])
def test_schema_registry_url_credentials_are_masked_in_repr_but_reach_the_client(url: str, shown: str) -> None:
    s = Settings(schema_registry_url=url)
    assert f"schema_registry_url={shown!r}" in repr(s) and str(s) == repr(s)
    assert "s3cr3t" not in repr(s) and "p%40ss" not in repr(s) and "pa@ss" not in repr(s)
    assert s.schema_registry_config() == {"url": url}
    assert mask_url(url) == shown


def test_a_registry_error_names_no_credentials() -> None:
    from museflow.demo.supervise import free_port
    from museflow.errors import BrokerError
    from museflow.kafka.schema_registry import resolver_from_settings

    resolver = resolver_from_settings(Settings(schema_registry_url=f"http://alice:s3cr3t@127.0.0.1:{free_port()}"))
    assert resolver is not None
    with pytest.raises(BrokerError) as info:
        resolver.lookup(1)
    assert "s3cr3t" not in str(info.value) and "s3cr3t" not in repr(info.value.__cause__)
