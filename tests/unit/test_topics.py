"""Topic specs (min.insync.replicas with replication >= 3, size limits, broker timestamps) and limits read back."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import ConfigEntry  # type: ignore[attr-defined]  # exported, but not in its __all__

from museflow.config import Settings
from museflow.contracts.topics import (
    DEAD_LETTER_MAX_BYTES,
    EVENT_MAX_BYTES,
    TopicSpec,
    core_topics,
    model_topic,
    tenant_topic,
    verdicts_topic,
)
from museflow.kafka.limits import TopicLimits


def _every_topic(settings: Settings) -> list[TopicSpec]:
    return [*core_topics(settings), verdicts_topic(settings), model_topic(settings, "fraud-cnp"),
            tenant_topic(settings, "acme-bank")]


@pytest.mark.parametrize(("rf", "expected"), [(1, None), (2, None), (3, "2"), (5, "2")])
def test_min_insync_replicas_is_2_wherever_the_replication_factor_is_3_or_more(rf: int, expected: str | None) -> None:
    for spec in _every_topic(Settings(replication_factor=rf)):
        assert spec.replication_factor == rf
        assert spec.config.get("min.insync.replicas") == expected, spec.name


def test_an_explicit_min_insync_replicas_is_kept_and_the_callers_dict_is_not_changed() -> None:
    config = {"cleanup.policy": "compact"}
    spec = TopicSpec("t", 1, config, 3)
    assert spec.config == {"cleanup.policy": "compact", "min.insync.replicas": "2"} and config == {
        "cleanup.policy": "compact"}
    assert TopicSpec("t", 1, {"min.insync.replicas": "3"}, 5).config == {"min.insync.replicas": "3"}


def test_the_dead_letter_of_any_event_the_events_topic_takes_fits_the_dead_letter_topic() -> None:
    specs = {s.name: s for s in core_topics(Settings())}
    events, dlq = specs[Settings().topics.events], specs[Settings().topics.dlq]
    assert events.config["message.timestamp.type"] == "LogAppendTime"
    assert int(events.config["max.message.bytes"]) == EVENT_MAX_BYTES
    assert int(dlq.config["max.message.bytes"]) == DEAD_LETTER_MAX_BYTES >= 2 * EVENT_MAX_BYTES


class FakeAdmin:
    """describe_configs answering from ``limits`` (topic -> max.message.bytes); other topics fail."""

    def __init__(self, limits: dict[str, int]) -> None:
        self.limits, self.calls = limits, 0

    def describe_configs(self, resources: list[Any], *, request_timeout: float) -> dict[Any, Any]:
        self.calls += 1
        out: dict[Any, Future[Any]] = {}
        for resource in resources:
            future: Future[Any] = Future()
            if resource.name in self.limits:
                future.set_result({"max.message.bytes": ConfigEntry("max.message.bytes",
                                                                    str(self.limits[resource.name]))})
            else:
                future.set_exception(KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)))
            out[resource] = future
        return out


def test_topic_limits_take_the_smaller_of_topic_and_producer_and_assume_museflows_own_when_unknown() -> None:
    now = [0.0]
    settings = Settings()
    admin = FakeAdmin({"small": 300_000, "huge": 50_000_000})
    limits = TopicLimits(settings, 4_194_304, admin=admin, clock=lambda: now[0])
    limits.prefetch(["small", "huge", settings.topics.dlq])
    assert (limits("small"), limits("huge")) == (300_000, 4_194_304)
    assert limits(settings.topics.dlq) == DEAD_LETTER_MAX_BYTES  # not described: as museflow creates it
    assert limits("model-topic-nobody-may-describe") == 1_048_588
    calls = admin.calls
    admin.limits["small"] = 2_000_000
    assert limits("small") == 300_000 and admin.calls == calls  # cached ...
    now[0] += 61
    assert limits("small") == 2_000_000  # ... for a minute: a raised limit is seen
