"""museflow settings: one frozen object, read from ``MUSEFLOW_*`` environment variables.

This is the only module that reads the environment. Kafka client options are translated
here, once, into librdkafka's dotted keys (confluent-kafka) and aiokafka's keyword names
(Faust), so security settings reach every client the same way. Secrets are masked in
``repr`` and never logged.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from museflow.errors import ConfigError

__all__ = ["ENV_PREFIX", "Settings", "TopicNames", "mask_url"]

ENV_PREFIX = "MUSEFLOW_"

_GUARANTEES = ("at_least_once", "exactly_once")
_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_SYSLOG_LEVELS = {"debug": 7, "info": 6, "warn": 4, "warning": 4, "error": 3, "critical": 2}
_SECRET_FIELDS = frozenset({"sasl_password", "schema_registry_password"})
_URL_FIELDS = frozenset({"schema_registry_url"})
_USERINFO = re.compile(r"(?<=//)[^/,\s]*@")


def mask_url(url: str) -> str:
    """``url`` (or comma-separated URLs) with any ``user:password@`` replaced by ``***@``."""
    return _USERINFO.sub("***@", url)


@dataclass(frozen=True)
class TopicNames:
    """The default topic names of DESIGN.md, under an optional deployment prefix."""

    prefix: str = ""

    def _name(self, base: str) -> str:
        return f"{self.prefix}museflow.{base}"

    @property
    def namespace(self) -> str:
        """What every museflow topic name starts with (a prefix ACL covers them all)."""
        return self._name("")

    @property
    def events(self) -> str:
        return self._name("events")

    @property
    def dlq(self) -> str:
        return self._name("dlq")

    @property
    def routes(self) -> str:
        return self._name("routes")

    @property
    def deployments(self) -> str:
        return self._name("deployments")

    @property
    def score_log(self) -> str:
        return self._name("score-log")

    @property
    def quantile_maps(self) -> str:
        return self._name("quantile-maps")

    @property
    def references(self) -> str:
        return self._name("references")

    @property
    def verdicts(self) -> str:
        """The alert-rate contract's verdicts (promote, hold, breach, rollback), for audit."""
        return self._name("verdicts")

    @property
    def labels(self) -> str:
        return self._name("labels")

    def model(self, model_name: str) -> str:
        """Topic a model's scorer consumes: ``museflow.model.<name>``."""
        return self._name(f"model.{model_name}")

    def scores(self, tenant: str) -> str:
        """A tenant's own scored-event topic: ``museflow.scores.<tenant>``."""
        return self._name(f"scores.{tenant}")


@dataclass(frozen=True)
class Settings:
    """Everything a museflow process needs to know; build with :meth:`from_env`."""

    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    app_id: str = "museflow"
    partitions: int = 6
    replication_factor: int = 1

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    schema_registry_url: str | None = None
    schema_registry_username: str | None = None
    schema_registry_password: str | None = field(default=None, repr=False)

    processing_guarantee: str = "at_least_once"
    instance_id: str = ""
    """Stable name of this worker instance (e.g. the pod name): with exactly_once its transactional ids
    are ``<app_id>-<role>-<instance_id>``, so a restarted instance fences its crashed predecessor at once."""
    transaction_timeout_seconds: float = 10.0
    batch_size: int = 500
    batch_window_seconds: float = 0.001
    """After a batch's first message, how long the loop waits for more (adaptive: it takes what is
    already fetched, up to ``batch_size``). Under load batches fill at once; at low rates they stay small."""
    producer_linger_seconds: float = 0.005
    batches_in_flight: int = 8
    """Batches a hot loop may have produced but not yet seen acknowledged (at-least-once); their events
    are committed only once they and every earlier batch are acknowledged. 1 = wait for each batch's acks."""
    broker_session_timeout_seconds: float = 10.0
    new_group_start: str = "latest"
    """Where a hot consumer group with no committed offsets, and no group it replaces, starts:
    ``latest`` (a fresh deployment scores new traffic only) or ``earliest`` (the whole retention)."""

    refit_interval_seconds: float = 15.0
    refit_window_seconds: float = 3600.0
    refit_min_samples: int = 5000
    refit_min_tail_samples: int = 50
    refit_max_alert_rate_shift: float = 0.25
    contract_tolerance: float = 0.10
    """The alert-rate contract: each threshold's alert rate within this relative tolerance ..."""
    contract_confidence: float = 0.95
    """... with this confidence (``museflow.control.contract``); promotion is judged against it."""
    contract_watch_pairs: int = 100
    """The (tenant, threshold) pairs the watch's 5% false-alarm level is split over: a floor; when more
    are watched at once, the split follows them (``museflow.observe.contract_watch``)."""
    contract_watch_epoch: int = 1_000_000
    """Served scores of a pair's first CUSUM epoch; later epochs double, each spending half the false-alarm
    budget left, so the level holds however long a route version is watched."""

    model_dir: str = "models"
    data_dir: str = ".museflow"
    metrics_port: int = 9108
    metrics_enabled: bool = True
    log_level: str = "info"

    def __post_init__(self) -> None:
        if self.new_group_start not in ("earliest", "latest"):
            raise ConfigError(f"new_group_start={self.new_group_start!r} is neither 'earliest' nor 'latest'; "
                              f"set {ENV_PREFIX}NEW_GROUP_START")
        if self.processing_guarantee not in _GUARANTEES:
            raise ConfigError(
                f"processing_guarantee={self.processing_guarantee!r} is not one of {_GUARANTEES}; "
                f"set {ENV_PREFIX}PROCESSING_GUARANTEE"
            )
        if self.security_protocol not in _PROTOCOLS:
            raise ConfigError(
                f"security_protocol={self.security_protocol!r} is not one of {_PROTOCOLS}; "
                f"set {ENV_PREFIX}SECURITY_PROTOCOL"
            )
        if self.security_protocol.startswith("SASL") and self.sasl_mechanism not in _MECHANISMS:
            raise ConfigError(
                f"sasl_mechanism={self.sasl_mechanism!r} is not one of {_MECHANISMS}; "
                f"set {ENV_PREFIX}SASL_MECHANISM"
            )
        if self.security_protocol.startswith("SASL") and not (self.sasl_username and self.sasl_password):
            raise ConfigError(
                f"security_protocol={self.security_protocol} needs {ENV_PREFIX}SASL_USERNAME "
                f"and {ENV_PREFIX}SASL_PASSWORD"
            )
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ConfigError(
                f"ssl_keyfile is set without the certificate it belongs to; set {ENV_PREFIX}SSL_CERTFILE "
                f"(or unset {ENV_PREFIX}SSL_KEYFILE when the broker does not ask for client certificates)"
            )
        for name in ("partitions", "replication_factor", "batch_size", "batches_in_flight", "contract_watch_pairs",
                     "contract_watch_epoch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.bootstrap_servers.strip():
            raise ConfigError(f"bootstrap_servers is empty; set {ENV_PREFIX}BOOTSTRAP_SERVERS")

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRET_FIELDS and value is not None:
                value = "***"
            elif f.name in _URL_FIELDS and value is not None:
                value = mask_url(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    __str__ = __repr__

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``MUSEFLOW_<FIELD>`` variables, then explicit ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _coerce(f.name, str(f.type), raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown settings: {sorted(unknown)}")
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """``MUSEFLOW_*`` variables that rebuild these settings in a child process (secrets included)."""
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                env[ENV_PREFIX + f.name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
        return env

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.topic_prefix)

    @property
    def exactly_once(self) -> bool:
        return self.processing_guarantee == "exactly_once"

    def librdkafka_config(self) -> dict[str, Any]:
        """Connection and security options in librdkafka's dotted keys (confluent-kafka)."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol.lower(),
        }
        if self.security_protocol.startswith("SASL"):
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username
            conf["sasl.password"] = self.sasl_password
        conf.update(self._tls_files())
        # librdkafka logs through Python logging (never raw lines on the terminal), at the worker's level.
        conf["logger"] = logging.getLogger("museflow.librdkafka")
        conf["log_level"] = _SYSLOG_LEVELS.get(self.log_level.lower(), 4)
        return conf

    def faust_broker_options(self) -> dict[str, Any]:
        """The same connection and security options as keyword arguments for ``faust.App``.

        Returns plain values; the Faust layer turns ``credentials`` into faust's own objects.
        """
        options: dict[str, Any] = {"broker": f"kafka://{self.bootstrap_servers.replace(',', ';')}"}
        if self.security_protocol != "PLAINTEXT":
            options["credentials"] = {
                "protocol": self.security_protocol,
                "mechanism": self.sasl_mechanism,
                "username": self.sasl_username,
                "password": self.sasl_password,
                "cafile": self.ssl_cafile,
                "certfile": self.ssl_certfile,
                "keyfile": self.ssl_keyfile,
            }
        return options

    def schema_registry_config(self) -> dict[str, Any] | None:
        """Options for confluent-kafka's ``SchemaRegistryClient``, or ``None`` when unset.

        An ``https://`` registry is verified against ``ssl_cafile`` (the deployment's one CA bundle;
        the system CAs when unset) and is offered ``ssl_certfile``/``ssl_keyfile`` if it asks for a
        client certificate.
        """
        if not self.schema_registry_url:
            return None
        conf: dict[str, Any] = {"url": self.schema_registry_url}
        if self.schema_registry_username:
            conf["basic.auth.user.info"] = (
                f"{self.schema_registry_username}:{self.schema_registry_password or ''}"
            )
        if any(url.strip().lower().startswith("https://") for url in self.schema_registry_url.split(",")):
            conf.update(self._tls_files())
        return conf

    def _tls_files(self) -> dict[str, str]:
        """The CA, certificate and key files under the ``ssl.*`` keys librdkafka and the registry client share
        (a key without its certificate is refused in ``__post_init__``)."""
        files = {"ssl.ca.location": self.ssl_cafile, "ssl.certificate.location": self.ssl_certfile,
                 "ssl.key.location": self.ssl_keyfile}
        return {key: path for key, path in files.items() if path}


def _coerce(name: str, type_name: str, raw: str) -> Any:
    try:
        if type_name.startswith("int"):
            return int(raw)
        if type_name.startswith("float"):
            return float(raw)
        if type_name.startswith("bool"):
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
    except ValueError as exc:
        raise ConfigError(
            f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {type_name.split(' ')[0]}"
        ) from exc
    return raw if raw != "" or not type_name.endswith("None") else None
