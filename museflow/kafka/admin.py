"""Topic provisioning with explicit partitions and configs (idempotent)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # re-exported without __all__

from museflow.config import Settings
from museflow.contracts.topics import TopicSpec
from museflow.errors import BrokerError

__all__ = ["admin_client", "delete_topics", "ensure_topics", "existing_topics"]

log = logging.getLogger(__name__)


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient(settings.librdkafka_config())


def existing_topics(settings: Settings, timeout: float = 10.0) -> dict[str, int]:
    """Topic name -> partition count, as the broker reports it."""
    try:
        metadata = admin_client(settings).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerError(f"cannot list topics on {settings.bootstrap_servers}: {exc}") from exc
    return {name: len(t.partitions) for name, t in metadata.topics.items()}


def ensure_topics(settings: Settings, specs: Iterable[TopicSpec], timeout: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    An existing topic with fewer partitions than asked is reported, not altered: changing the
    partition count would move keys between partitions and break per-entity order.
    """
    wanted = {spec.name: spec for spec in specs}
    present = existing_topics(settings)
    for name, spec in wanted.items():
        if name in present and present[name] < spec.partitions:
            log.warning("topic %s has %d partitions, fewer than the %d configured",
                        name, present[name], spec.partitions)
    missing = [spec for name, spec in wanted.items() if name not in present]
    if not missing:
        return []
    admin = admin_client(settings)  # held until the futures resolve: a destroyed client fails them
    futures = admin.create_topics(
        [NewTopic(s.name, s.partitions, s.replication_factor, config=dict(s.config)) for s in missing],
        operation_timeout=timeout, request_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args and getattr(exc.args[0], "name", lambda: "")() == "TOPIC_ALREADY_EXISTS":
                continue
            raise BrokerError(f"creating topic {name} on {settings.bootstrap_servers} failed: {exc}") from exc
    _wait_for_leaders(admin, created, timeout)
    return created


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout: float) -> None:
    """A created topic serves requests only once every partition has a leader."""
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        metadata = admin.list_topics(timeout=timeout)
        for name in list(pending):
            topic = metadata.topics.get(name)
            if topic is not None and topic.error is None and topic.partitions and all(
                    p.leader >= 0 and p.error is None for p in topic.partitions.values()):
                pending.discard(name)
        if pending:
            time.sleep(0.1)
    if pending:
        raise BrokerError(f"topics {sorted(pending)} have no partition leader {timeout:.0f}s after creation")


def delete_topics(settings: Settings, names: Iterable[str], timeout: float = 30.0) -> None:
    names = list(names)
    if not names:
        return
    admin = admin_client(settings)
    for name, future in admin.delete_topics(names, operation_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            raise BrokerError(f"deleting topic {name} failed: {exc}") from exc
