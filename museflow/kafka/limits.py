"""How large a record each output topic takes: the hot loops check every output against it.

A topic's limit is the smaller of its ``max.message.bytes`` (read from the broker with
``describe_configs``) and the producer's ``message.max.bytes``. Limits are cached for a minute
(a raised limit is seen within a minute). A topic that cannot be described (not created yet, no
DescribeConfigs right) is assumed to have the limit museflow creates it with
(:func:`~museflow.contracts.topics.configured_max_bytes`) until it is asked again a minute later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]  # not in its __all__

from museflow.config import Settings
from museflow.contracts.topics import configured_max_bytes

__all__ = ["ConfigDescriber", "TopicLimits"]

log = logging.getLogger(__name__)

_REFRESH_SECONDS = 60.0
_TIMEOUT = 10.0


class ConfigDescriber(Protocol):
    """What :class:`TopicLimits` needs of an admin client (confluent-kafka's ``AdminClient``)."""

    def describe_configs(self, resources: list[Any], *, request_timeout: float) -> dict[Any, Any]: ...


class TopicLimits:
    """``limits(topic)`` -> the largest record (bytes, before compression) the topic and the producer take."""

    def __init__(self, settings: Settings, producer_max_bytes: int, *, admin: ConfigDescriber | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.producer_max_bytes = producer_max_bytes
        self._clock = clock
        self._admin = admin
        self._owns_admin = admin is None
        self._cache: dict[str, tuple[int, float]] = {}

    def __call__(self, topic: str) -> int:
        found = self._cache.get(topic)
        now = self._clock()
        if found is None or found[1] < now:
            self.prefetch([topic, *(name for name, (_, due) in self._cache.items() if due < now)])
            found = self._cache[topic]
        return found[0]

    def prefetch(self, topics: Iterable[str]) -> None:
        """Describe ``topics`` in one request and cache their limits."""
        names = sorted(set(topics))
        if not names:
            return
        described = self._describe(names)
        self._admin = None if self._owns_admin else self._admin
        now = self._clock()
        for name in names:
            topic_max = described.get(name)
            if topic_max is None:
                assumed = min(configured_max_bytes(self.settings, name), self.producer_max_bytes)
                self._cache[name] = (assumed, now + _REFRESH_SECONDS)
            else:
                self._cache[name] = (min(topic_max, self.producer_max_bytes), now + _REFRESH_SECONDS)

    def _describe(self, names: list[str]) -> dict[str, int]:
        if self._admin is None:
            self._admin = AdminClient(self.settings.librdkafka_config())
        try:
            futures = self._admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, n) for n in names],
                                                   request_timeout=_TIMEOUT)
        except KafkaException as exc:
            log.warning("cannot describe %s (%s); assuming the limits museflow creates them with", names, exc)
            return {}
        out: dict[str, int] = {}
        for resource, future in futures.items():
            try:
                entry = future.result(_TIMEOUT).get("max.message.bytes")
                if entry is not None and entry.value is not None:
                    out[resource.name] = int(entry.value)
            except (KafkaException, ValueError, TimeoutError) as exc:
                log.info("no max.message.bytes for %s (%s); assuming %d bytes until it is known",
                         resource.name, exc, configured_max_bytes(self.settings, resource.name))
        return out
