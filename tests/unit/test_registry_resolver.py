"""The schema-registry resolver tells "down for now" from "refused" from "unknown id" (stub registry, no broker)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka.schema_registry.error import SchemaRegistryError

from museflow.config import Settings
from museflow.contracts.serde import AvroSerde, Serdes
from museflow.demo.loadgen import TransactionGenerator
from museflow.errors import BrokerError, DependencyUnavailable
from museflow.kafka.schema_registry import ConfluentSchemaIdResolver, resolver_from_settings
from tests.registry_stub import StubRegistry


@pytest.fixture
def registry() -> Iterator[StubRegistry]:
    stub = StubRegistry().start()
    yield stub
    stub.stop()


class Refusing:
    """A client whose every call raises ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def get_schema(self, schema_id: int) -> Any:
        raise self.error

    def register_schema(self, subject: str, schema: Any) -> int:
        raise self.error


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429, 408])
def test_a_5xx_or_throttled_answer_is_the_registry_being_unavailable(status: int) -> None:
    resolver = ConfluentSchemaIdResolver(Refusing(SchemaRegistryError(status, status * 100 + 1, "busy")), "http://r")
    with pytest.raises(DependencyUnavailable) as looked_up:
        resolver.lookup(7)
    with pytest.raises(DependencyUnavailable) as registered:
        resolver.register("io.museflow.events.TransactionEvent", '{"type": "string"}')
    for exc in (looked_up.value, registered.value):
        assert (exc.dependency, exc.where) == ("schema-registry", "http://r")


@pytest.mark.parametrize("status", [409, 422, 401, 403])
def test_a_refusal_is_a_plain_kafka_error_not_an_outage(status: int) -> None:
    resolver = ConfluentSchemaIdResolver(Refusing(SchemaRegistryError(status, status * 100 + 1, "no")), "http://r")
    for call in (lambda: resolver.lookup(7), lambda: resolver.register("s", '{"type": "string"}')):
        with pytest.raises(BrokerError) as raised:
            call()
        assert not isinstance(raised.value, DependencyUnavailable)


def test_an_unknown_id_is_none_and_the_stub_registry_round_trips(registry: StubRegistry) -> None:
    resolver = resolver_from_settings(Settings(schema_registry_url=registry.url))
    assert resolver is not None
    serde = AvroSerde.for_schema("TransactionEvent", resolver=resolver)
    assert serde.schema_id == 1
    assert resolver.lookup(1) == serde.schema_json
    assert resolver.lookup(999) is None


def test_a_503_and_a_refused_connection_are_unavailable_and_never_show_credentials(registry: StubRegistry) -> None:
    url = registry.url.replace("http://", "http://alice:s3cret@")
    resolver = ConfluentSchemaIdResolver.from_config({"url": url})
    registry.unavailable()
    with pytest.raises(DependencyUnavailable, match="503") as down:
        resolver.lookup(1)
    assert registry.refused >= 1 and "s3cret" not in str(down.value) and "s3cret" not in down.value.where
    registry.available()
    registry.stop()
    with pytest.raises(DependencyUnavailable) as refused:
        resolver.lookup(1)
    assert "s3cret" not in str(refused.value)


def test_decoding_during_an_outage_raises_instead_of_dead_lettering_the_event(registry: StubRegistry) -> None:
    """A good event whose writer id is not cached yet must not become an ``unknown_schema`` dead letter."""
    writer = Serdes(ConfluentSchemaIdResolver.from_config({"url": registry.url}))
    reader = Serdes(ConfluentSchemaIdResolver.from_config({"url": registry.url}))
    event = dict(TransactionGenerator(seed=5).generate(1, start_ms=1_700_000_000_000)[0].event)
    value = writer.events.encode(event)
    registry.unavailable()
    with pytest.raises(DependencyUnavailable):
        reader.events.decode_many([value])
    registry.available()
    assert reader.events.decode_many([value]) == [writer.events.decode(value)]
