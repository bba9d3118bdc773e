"""The Confluent Schema Registry behind :class:`museflow.serde.SchemaIdResolver`.

This is the only place museflow talks to a schema registry: confluent-kafka's
``SchemaRegistryClient`` (``mock://`` URLs give its in-memory mock, for tests). The core serde
gets the resolver injected and never imports confluent-kafka. Errors never show the
credentials of a ``https://user:password@host`` URL.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from museflow.config import Settings, mask_url
from museflow.errors import KafkaError
from museflow.serde import Serdes

__all__ = ["ConfluentSchemaIdResolver", "resolver_from_settings", "serdes_from_settings"]


class ConfluentSchemaIdResolver:
    """Registers museflow schemas and looks writer schemas up by id (the client caches both)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    @classmethod
    def from_config(cls, conf: dict[str, Any]) -> ConfluentSchemaIdResolver:
        """From ``SchemaRegistryClient`` options, e.g. ``{"url": "mock://test"}``."""
        return cls(SchemaRegistryClient.new_client(conf))

    def register(self, subject: str, schema_json: str) -> int:
        try:
            return int(self.client.register_schema(subject, Schema(schema_json, "AVRO")))
        except SchemaRegistryError as exc:
            raise KafkaError(
                f"the schema registry refused {subject}: {mask_url(str(exc))}; check the subject's compatibility "
                "setting") from exc
        except Exception as exc:  # transport errors (requests/httpx) surface as various types
            raise KafkaError(f"cannot register {subject} with the schema registry: {mask_url(str(exc))}") from exc

    def lookup(self, schema_id: int) -> str | None:
        try:
            schema = self.client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if getattr(exc, "http_status_code", None) == 404:
                return None
            raise KafkaError(f"the schema registry failed looking up id {schema_id}: {mask_url(str(exc))}") from exc
        except Exception as exc:
            raise KafkaError(f"cannot reach the schema registry for id {schema_id}: {mask_url(str(exc))}") from exc
        text = getattr(schema, "schema_str", None)
        return None if text is None else str(text)


def resolver_from_settings(settings: Settings) -> ConfluentSchemaIdResolver | None:
    """A resolver when ``schema_registry_url`` is set, else None (single-object framing)."""
    conf = settings.schema_registry_config()
    return None if conf is None else ConfluentSchemaIdResolver.from_config(conf)


def serdes_from_settings(settings: Settings) -> Serdes:
    """Every museflow serde, framed as the settings ask (registry wire format or single-object)."""
    return Serdes(resolver_from_settings(settings))
