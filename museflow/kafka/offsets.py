"""Where a hot loop's consumer group starts, decided before it joins and said out loud.

A group with committed offsets resumes from them. A group that has none is new: it starts
from the offsets of the groups it replaces (a scorer whose ``--models`` changed), else from
``MUSEFLOW_NEW_GROUP_START`` (``latest`` by default: a fresh deployment does not re-score the
retention). ``museflow worker --from earliest|latest|<ISO time>`` moves the group on purpose
(refused while other members of the group run). Seeded offsets are written with the admin API
before the group is joined, so every member starts from the same place.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from museflow.config import Settings
from museflow.errors import BrokerError, ConfigError

__all__ = ["StartPlan", "parse_start", "plan_start", "seed_offsets"]

log = logging.getLogger(__name__)

_TIMEOUT = 30.0
_LIST_PATIENCE = 180.0
"""How long a starting worker keeps asking for the consumer groups before it gives up."""
_ORIGINS = ("earliest", "latest")


def parse_start(text: str | None) -> str | int | None:
    """``earliest``, ``latest`` or an ISO-8601 time (-> epoch milliseconds); None stays None."""
    if text is None or text in _ORIGINS:
        return text
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"--from {text!r}: use earliest, latest or an ISO-8601 time such as "
                          "2026-12-01T10:00:00Z") from exc
    if moment.tzinfo is None:
        raise ConfigError(f"--from {text!r}: give the time zone (e.g. 2026-12-01T10:00:00Z)")
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class StartPlan:
    """How a group starts: ``resume``, ``replaces`` (other groups' offsets), ``new`` or ``from``."""

    group: str
    how: str
    detail: str
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    def describe(self) -> str:
        return f"group {self.group}: {self.detail}"


def plan_start(settings: Settings, group: str, topics: Sequence[str], *, replaces: Callable[[str], bool],
               start_from: str | int | None = None) -> StartPlan:
    """Decide where ``group`` starts on ``topics`` (topic names or ``^regex`` patterns)."""
    admin = AdminClient(settings.librdkafka_config())
    probe = Consumer({**settings.librdkafka_config(), "group.id": f"{settings.app_id}-start-probe",
                      "enable.auto.commit": False})
    try:
        partitions = _partitions(probe, topics)
        if start_from is not None:
            offsets = _positions(probe, partitions, start_from)
            where = start_from if isinstance(start_from, str) else _iso(start_from)
            return StartPlan(group, "from", f"moved to {where} on purpose (--from), {len(offsets)} partition(s)",
                             offsets)
        committed = _committed(admin, group, partitions)
        if committed:
            return StartPlan(group, "resume", f"resuming from committed offsets ({len(committed)} partition(s))")
        donors = sorted(g for g in _groups(admin) if g != group and replaces(g))
        inherited: dict[tuple[str, int], int] = {}
        used = []
        for donor in donors:
            found = _committed(admin, donor, partitions)
            if found:
                used.append(donor)
            for tp, offset in found.items():
                inherited[tp] = max(offset, inherited.get(tp, -1))
        if inherited:
            return StartPlan(group, "replaces", f"new; starting where {', '.join(used)} left off "
                             f"({len(inherited)} partition(s); the rest from the start)", inherited)
        origin = settings.new_group_start
        offsets = _positions(probe, partitions, origin)
        return StartPlan(group, "new", f"new, nothing to take over; starting at {origin} (MUSEFLOW_NEW_GROUP_START)",
                         offsets if origin == "latest" else {})
    finally:
        probe.close()


def seed_offsets(settings: Settings, plan: StartPlan) -> None:
    """Write ``plan``'s offsets for its group (before it is joined). A group whose members already
    run keeps its offsets; with ``--from`` that is an error, otherwise another member won the race."""
    if not plan.offsets:
        return
    admin = AdminClient(settings.librdkafka_config())
    request = ConsumerGroupTopicPartitions(plan.group, [TopicPartition(t, p, o) for (t, p), o in
                                                        sorted(plan.offsets.items())])
    try:
        admin.alter_consumer_group_offsets([request])[plan.group].result(_TIMEOUT)
    except KafkaException as exc:
        if plan.how == "from":
            raise BrokerError(f"--from: cannot move group {plan.group} ({exc.args[0] if exc.args else exc}); "
                             "stop the group's other workers first") from exc
        log.info("group %s: offsets not seeded (%s); another member started it first", plan.group, exc)


def _partitions(consumer: Consumer, topics: Sequence[str]) -> list[tuple[str, int]]:
    metadata = consumer.list_topics(timeout=_TIMEOUT)
    names = sorted(metadata.topics)
    chosen: list[str] = []
    for topic in topics:
        if topic.startswith("^"):
            pattern = re.compile(topic)
            chosen += [n for n in names if pattern.match(n)]
        elif topic in metadata.topics:
            chosen.append(topic)
    return [(t, p) for t in dict.fromkeys(chosen) for p in sorted(metadata.topics[t].partitions)]


def _committed(admin: AdminClient, group: str, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    if not partitions:
        return {}
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for t, p in partitions])
    try:
        result = admin.list_consumer_group_offsets([request])[group].result(_TIMEOUT)
    except KafkaException as exc:
        raise BrokerError(f"cannot read the committed offsets of group {group}: {exc}") from exc
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions if tp.offset >= 0}


def _groups(admin: AdminClient, patience: float = _LIST_PATIENCE, pause: float = 2.0) -> list[str]:
    """Every consumer group, asked again while a broker does not answer (a broker being restarted, the
    controller moving): a partial listing could miss the group this one replaces, and a worker that
    gave up would exit and be restarted into the same outage."""
    deadline = time.monotonic() + patience
    while True:
        try:
            listing = admin.list_consumer_groups(request_timeout=_TIMEOUT).result(_TIMEOUT + 5)
            if not listing.errors:
                return [g.group_id for g in listing.valid]
            problem = "; ".join(str(e) for e in listing.errors)
        except (KafkaException, TimeoutError) as exc:
            problem = str(exc) or type(exc).__name__
        if time.monotonic() + pause > deadline:
            raise BrokerError(f"cannot list consumer groups (needed to find the group this one replaces) within "
                             f"{patience:.0f}s: {problem}")
        log.warning("listing consumer groups failed (%s); asking again", problem)
        time.sleep(pause)


def _positions(consumer: Consumer, partitions: list[tuple[str, int]], where: str | int) -> dict[tuple[str, int], int]:
    if isinstance(where, int):
        found = consumer.offsets_for_times([TopicPartition(t, p, where) for t, p in partitions], timeout=_TIMEOUT)
        ends = {(t, p): consumer.get_watermark_offsets(TopicPartition(t, p), timeout=_TIMEOUT)[1]
                for t, p in partitions}
        return {(tp.topic, tp.partition): tp.offset if tp.offset >= 0 else ends[(tp.topic, tp.partition)]
                for tp in found}
    index = 0 if where == "earliest" else 1
    return {(t, p): consumer.get_watermark_offsets(TopicPartition(t, p), timeout=_TIMEOUT)[index]
            for t, p in partitions}


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))
