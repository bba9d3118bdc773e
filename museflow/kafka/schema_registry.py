"""The Confluent Schema Registry behind :class:`museflow.contracts.serde.SchemaIdResolver`.

This is the only place museflow talks to a schema registry: confluent-kafka's
``SchemaRegistryClient`` (``mock://`` URLs give its in-memory mock, for tests). The core serde
gets the resolver injected and never imports confluent-kafka. Errors never show the
credentials of a ``https://user:password@host`` URL.

A registry that is down for now (5xx, 429, 408, connection refused, timeout) raises
:class:`~museflow.errors.DependencyUnavailable`: the hot loop pauses and retries the batch rather
than dead-lettering good events. A refusal (other 4xx) is a plain :class:`~museflow.errors.BrokerError`
and an unknown id (404) is None. The client's own retries are kept short (:data:`CLIENT_DEFAULTS`):
the loop does the long waiting, with backoff, while it keeps its consumer group membership.
"""

from __future__ import annotations

import ssl
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from museflow.config import Settings, mask_url
from museflow.contracts.serde import Serdes
from museflow.errors import BrokerError, DependencyUnavailable

__all__ = ["CLIENT_DEFAULTS", "DEPENDENCY", "ConfluentSchemaIdResolver", "resolver_from_settings",
           "serdes_from_settings"]

DEPENDENCY = "schema-registry"
CLIENT_DEFAULTS: dict[str, Any] = {"timeout": 10, "max.retries": 2, "retries.wait.ms": 200,
                                   "retries.max.wait.ms": 2000}
"""One call gives up within about 30 s (3 attempts of at most 10 s): well inside max.poll.interval.ms."""
_TRANSIENT_STATUS = frozenset({408, 429})


def _unavailable(exc: BaseException) -> bool:
    """A 5xx/408/429 answer, or no answer at all (httpx's TransportError, whichever httpx the client bundles).

    A TLS handshake the client refused (an untrusted certificate) is a misconfiguration, not an outage:
    waiting would not fix it.
    """
    if _untrusted(exc):
        return False
    status = getattr(exc, "http_status_code", None)
    if isinstance(exc, SchemaRegistryError) and isinstance(status, int):
        return status >= 500 or status in _TRANSIENT_STATUS
    return isinstance(exc, OSError) or any(c.__name__ == "TransportError" for c in type(exc).__mro__)


def _untrusted(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


class ConfluentSchemaIdResolver:
    """Registers museflow schemas and looks writer schemas up by id (the client caches both)."""

    def __init__(self, client: Any, url: str = "") -> None:
        self.client = client
        self.url = mask_url(url)

    @classmethod
    def from_config(cls, conf: dict[str, Any]) -> ConfluentSchemaIdResolver:
        """From ``SchemaRegistryClient`` options, e.g. ``{"url": "mock://test"}`` (over :data:`CLIENT_DEFAULTS`)."""
        return cls(SchemaRegistryClient.new_client({**CLIENT_DEFAULTS, **conf}), str(conf.get("url", "")))

    def _down(self, what: str, exc: BaseException) -> DependencyUnavailable:
        return DependencyUnavailable(
            f"the schema registry at {self.url} is unavailable {what}: {mask_url(str(exc))}; processing waits "
            "for it", dependency=DEPENDENCY, where=self.url)

    def register(self, subject: str, schema_json: str) -> int:
        try:
            return int(self.client.register_schema(subject, Schema(schema_json, "AVRO")))
        except Exception as exc:  # transport errors surface as the bundled httpx's types
            if _unavailable(exc):
                raise self._down(f"registering {subject}", exc) from exc
            if isinstance(exc, SchemaRegistryError):
                raise BrokerError(
                    f"the schema registry at {self.url} refused {subject}: {mask_url(str(exc))}; check the "
                    "subject's compatibility setting") from exc
            raise BrokerError(f"cannot register {subject} with the schema registry at {self.url}: "
                             f"{mask_url(str(exc))}") from exc

    def lookup(self, schema_id: int) -> str | None:
        try:
            schema = self.client.get_schema(schema_id)
        except Exception as exc:
            if getattr(exc, "http_status_code", None) == 404:
                return None
            if _unavailable(exc):
                raise self._down(f"looking up id {schema_id}", exc) from exc
            raise BrokerError(f"the schema registry at {self.url} failed looking up id {schema_id}: "
                             f"{mask_url(str(exc))}") from exc
        text = getattr(schema, "schema_str", None)
        return None if text is None else str(text)


def resolver_from_settings(settings: Settings) -> ConfluentSchemaIdResolver | None:
    """A resolver when ``schema_registry_url`` is set, else None (single-object framing)."""
    conf = settings.schema_registry_config()
    return None if conf is None else ConfluentSchemaIdResolver.from_config(conf)


def serdes_from_settings(settings: Settings) -> Serdes:
    """Every museflow serde, framed as the settings ask (registry wire format or single-object)."""
    return Serdes(resolver_from_settings(settings))
