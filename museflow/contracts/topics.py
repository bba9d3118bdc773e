"""The topics a museflow deployment uses, with explicit partitions and configs.

Pure data: :mod:`museflow.kafka.admin` creates them. Nothing relies on auto-creation.

- With a replication factor of 3 or more every topic gets ``min.insync.replicas=2``: an
  ``acks=all`` write is then acknowledged by at least two replicas, not by the leader alone.
- The events topic takes records of up to :data:`EVENT_MAX_BYTES` and stamps each with the
  broker's clock (``LogAppendTime``), the reference of the router's clock-skew check; the
  dead-letter topic takes :data:`DEAD_LETTER_MAX_BYTES`, so the dead letter of any event that fit
  the events topic (its original bytes plus why) fits too.
- A tenant that publishes its own events writes them to its ingest topic ``museflow.events.<tenant>``
  (same configs as the events topic), where an ACL lets only that tenant write: the topic names the
  tenant, so the router trusts the topic, not the record's ``tenant`` field. Tenant names hold no
  ``.``, so ``museflow.events`` itself and other topics never read as an ingest topic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from museflow.config import Settings, TopicNames

__all__ = [
    "COMPACTED",
    "DEAD_LETTER_MAX_BYTES",
    "EVENT_MAX_BYTES",
    "TopicSpec",
    "configured_max_bytes",
    "control_topics",
    "core_topics",
    "ingest_pattern",
    "ingest_tenant",
    "ingest_topic",
    "ingest_topic_name",
    "model_topic",
    "tenant_topic",
    "verdicts_topic",
]

COMPACTED = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": "600000"}
_WEEK_MS = str(7 * 24 * 3600 * 1000)
EVENT_MAX_BYTES = 1_048_588
"""Largest record batch the events topic takes (Kafka's default ``message.max.bytes``, pinned)."""
_KAFKA_DEFAULT_MAX_BYTES = 1_048_588
DEAD_LETTER_MAX_BYTES = 4 * 1024 * 1024
"""Largest record batch the dead-letter topic takes; the hot loops' producers allow as much."""
MIN_INSYNC_REPLICAS = 2


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create: name, partition count and topic-level configs."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    replication_factor: int = 1

    def __post_init__(self) -> None:
        if self.replication_factor >= 3 and "min.insync.replicas" not in self.config:
            object.__setattr__(self, "config", {**self.config, "min.insync.replicas": str(MIN_INSYNC_REPLICAS)})


def control_topics(settings: Settings) -> list[TopicSpec]:
    """Compacted state topics, one partition each so every worker sees one total order."""
    t, rf = settings.topics, settings.replication_factor
    return [
        TopicSpec(t.routes, 1, dict(COMPACTED), rf),
        TopicSpec(t.deployments, 1, dict(COMPACTED), rf),
        TopicSpec(t.quantile_maps, 1, dict(COMPACTED), rf),
        TopicSpec(t.references, 1, dict(COMPACTED), rf),
    ]


def core_topics(settings: Settings) -> list[TopicSpec]:
    """Every topic that does not depend on which models and tenants exist."""
    t, n, rf = settings.topics, settings.partitions, settings.replication_factor
    retained = {"retention.ms": _WEEK_MS}
    return [
        TopicSpec(t.events, n, _event_config(), rf),
        TopicSpec(t.dlq, n, {"retention.ms": str(30 * 24 * 3600 * 1000),
                             "max.message.bytes": str(DEAD_LETTER_MAX_BYTES)}, rf),
        TopicSpec(t.score_log, n, dict(retained), rf),
        TopicSpec(t.labels, n, dict(retained), rf),
        verdicts_topic(settings),
        *control_topics(settings),
    ]


def verdicts_topic(settings: Settings) -> TopicSpec:
    """The contract's verdicts: one partition (one order per deployment), kept a year for audit."""
    return TopicSpec(settings.topics.verdicts, 1, {"retention.ms": str(365 * 24 * 3600 * 1000)},
                     settings.replication_factor)


def model_topic(settings: Settings, model_name: str) -> TopicSpec:
    """The topic a model's scorers consume."""
    return TopicSpec(settings.topics.model(model_name), settings.partitions, {"retention.ms": _WEEK_MS},
                     settings.replication_factor)


def tenant_topic(settings: Settings, tenant: str) -> TopicSpec:
    """A tenant's scored-event topic."""
    return TopicSpec(settings.topics.scores(tenant), settings.partitions, {"retention.ms": _WEEK_MS},
                     settings.replication_factor)


def _event_config() -> dict[str, str]:
    return {"retention.ms": _WEEK_MS, "max.message.bytes": str(EVENT_MAX_BYTES),
            "message.timestamp.type": "LogAppendTime"}


def ingest_topic_name(names: TopicNames, tenant: str) -> str:
    """A tenant's own ingest topic: ``museflow.events.<tenant>`` (only that tenant may write it)."""
    return f"{names.events}.{tenant}"


def ingest_pattern(names: TopicNames) -> str:
    """The librdkafka regex of every tenant's ingest topic, anchored on the deployment's prefix.

    Kafka topic names hold only ``[a-zA-Z0-9._-]``, so escaping ``.`` escapes the prefix.
    """
    return "^" + ingest_topic_name(names, "").replace(".", "\\.") + "[a-z0-9][a-z0-9-]*$"


def ingest_tenant(names: TopicNames, topic: str) -> str | None:
    """The tenant whose ingest topic ``topic`` is, or None (the shared events topic, or any other)."""
    prefix = ingest_topic_name(names, "")
    return topic[len(prefix):] if topic.startswith(prefix) and len(topic) > len(prefix) else None


def ingest_topic(settings: Settings, tenant: str) -> TopicSpec:
    """A tenant's ingest topic, configured as the events topic (size limit, broker append time)."""
    return TopicSpec(ingest_topic_name(settings.topics, tenant), settings.partitions, _event_config(),
                     settings.replication_factor)


def configured_max_bytes(settings: Settings, topic: str) -> int:
    """The ``max.message.bytes`` museflow creates ``topic`` with (Kafka's default where it sets none)."""
    if ingest_tenant(settings.topics, topic) is not None:
        return EVENT_MAX_BYTES
    for spec in core_topics(settings):
        if spec.name == topic:
            return int(spec.config.get("max.message.bytes", _KAFKA_DEFAULT_MAX_BYTES))
    return _KAFKA_DEFAULT_MAX_BYTES
