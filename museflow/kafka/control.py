"""Every worker follows the compacted control topics from the beginning, on a thread of its own.

Control topics are broadcast, not partitioned work: each worker must see every route,
deployment, map and reference, so this uses a plain assigned consumer (no group) rather than
a Faust agent, whose consumer group would split them between workers. Model loads happen
here, off the event loop. :meth:`ControlFollower.wait_caught_up` lets agents hold their first
batch until everything published before the worker started has been applied.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from confluent_kafka import KafkaError as KafkaErrorCode

from museflow.config import Settings
from museflow.control.keys import control_key, value_digest
from museflow.control.state import PipelineState
from museflow.errors import BrokerError, ConflictError, DependencyUnavailable, MuseflowError
from museflow.kafka.clients import position_of, topic_end_offsets
from museflow.kafka.loop import PAUSE_FIRST_SECONDS, PAUSE_MAX_SECONDS

__all__ = [
    "ControlFollower",
    "ControlTransaction",
    "apply_control",
    "control_decoder",
    "control_kinds",
    "load_control_state",
    "publish_control",
    "read_control",
]

log = logging.getLogger(__name__)

Decode = Callable[[str, bytes], Mapping[str, Any]]
RETRY_ARTIFACTS_SECONDS = 5.0


def control_kinds(settings: Settings) -> dict[str, str]:
    """Control topic -> the kind of record it holds (see :data:`museflow.control.state.CONTROL_KINDS`)."""
    t = settings.topics
    return {t.references: "reference", t.deployments: "deployment", t.routes: "route", t.quantile_maps: "map"}


def apply_control(state: PipelineState, decode: Decode, kind: str, topic: str, key: bytes | None,
                  value: bytes | None, where: str) -> None:
    """Apply one control record (a tombstone when ``value`` is None) to ``state`` under its Kafka key."""
    text_key = key.decode("utf-8", "replace") if key is not None else f"<no key> {where}"
    if value is None:
        state.apply(kind, text_key, None, "")
        return
    digest = value_digest(value)
    try:
        record = decode(topic, value)
    except DependencyUnavailable:
        raise  # the record is not bad: the registry that would decode it is down (the caller waits)
    except MuseflowError as exc:
        state.apply(kind, text_key, None, digest, error=str(exc))
        return
    state.apply(kind, text_key, record, digest)


class ControlFollower:
    """Reads the control topics into a :class:`PipelineState` until stopped."""

    def __init__(self, settings: Settings, state: PipelineState, decode: Decode) -> None:
        self.settings = settings
        self.state = state
        self.decode = decode
        self.kinds = control_kinds(settings)
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._thread: threading.Thread | None = None
        self.applied = 0
        self.error: BaseException | None = None

    def start(self) -> ControlFollower:
        self._thread = threading.Thread(target=self._run, name="museflow-control", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def caught_up(self) -> bool:
        return self._caught_up.is_set()

    def wait_caught_up(self, timeout: float | None = None) -> bool:
        return self._caught_up.wait(timeout)

    def _run(self) -> None:
        consumer = Consumer({
            **self.settings.librdkafka_config(),
            "group.id": f"{self.settings.app_id}-control-{threading.get_ident()}-{time.time_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "isolation.level": "read_committed",
        })
        try:
            targets = _assign_from_start(consumer, self.kinds)
            retry_at = time.monotonic() + RETRY_ARTIFACTS_SECONDS
            while not self._stop.is_set():
                for msg in consumer.consume(500, timeout=0.2):
                    if msg.error():
                        log.warning("control topic %s: %s", msg.topic(), msg.error())
                        continue
                    self._apply(*position_of(msg), msg.key(), msg.value())
                if not self._caught_up.is_set() and _reached(consumer, targets):
                    self._caught_up.set()
                    log.info("control topics caught up (%d records applied)", self.applied)
                if time.monotonic() >= retry_at:
                    retry_at = time.monotonic() + RETRY_ARTIFACTS_SECONDS
                    if self.state.retry_artifacts():
                        log.info("a deployment whose artifact was missing or altered now loads")
        except (KafkaException, BrokerError) as exc:
            self.error = exc
            log.exception("control follower stopped")
        finally:
            consumer.close()

    def _apply(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        """Apply one record; while a dependency that decodes it is down, wait (the state does not move past it)."""
        where = f"{topic}[{partition}]@{offset}"
        delay, waited = PAUSE_FIRST_SECONDS, 0.0
        while True:
            try:
                apply_control(self.state, self.decode, self.kinds[topic], topic, key, value, where)
                self.applied += 1
                if waited:
                    log.warning("control record %s applied after waiting %.1fs for a dependency", where, waited)
                return
            except DependencyUnavailable as exc:
                if not waited:
                    log.warning("control record %s waits: %s unavailable (%s)", where, exc.dependency, exc)
                if self._stop.wait(delay):
                    return
                waited += delay
                delay = min(2 * delay, PAUSE_MAX_SECONDS)
            except Exception:
                log.exception("control record %s could not be applied", where)
                return


def _assign_from_start(consumer: Consumer, topics: Mapping[str, str]) -> dict[tuple[str, int], int]:
    """Assign every control partition from the start; return the end offsets to catch up to."""
    targets: dict[tuple[str, int], int] = {}
    assignment = []
    for topic in topics:
        try:
            ends = topic_end_offsets(consumer, topic, timeout=30)  # retries a new topic's missing leader
        except BrokerError as exc:
            raise BrokerError(f"control topic {topic}: {exc}; run `museflow topics create`") from exc
        for p, (low, high) in sorted(ends.items()):
            if high > low:
                targets[(topic, p)] = high
            assignment.append(TopicPartition(topic, p, OFFSET_BEGINNING))
    consumer.assign(assignment)
    return targets


def _reached(consumer: Consumer, targets: dict[tuple[str, int], int]) -> bool:
    """Whether the consumer's position passed every target offset (drops the ones reached).

    Positions, not the offsets of records returned: with ``read_committed`` the last offsets of
    a partition can be transaction markers, which are never returned.
    """
    if targets:
        for tp in consumer.position([TopicPartition(t, p) for t, p in targets]):
            if tp.offset >= 0 and tp.offset >= targets[(tp.topic, tp.partition)]:
                del targets[(tp.topic, tp.partition)]
    return not targets


def read_control(settings: Settings, timeout: float = 30.0) -> list[tuple[str, str, bytes | None, bytes | None, str]]:
    """Every committed record of the control topics up to their end: (kind, topic, key, value, where)."""
    kinds = control_kinds(settings)
    consumer = Consumer({
        **settings.librdkafka_config(),
        "group.id": f"{settings.app_id}-reader-{time.time_ns()}",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        "isolation.level": "read_committed",
    })
    records = []
    try:
        targets = _assign_from_start(consumer, kinds)
        deadline = time.monotonic() + timeout
        while not _reached(consumer, targets):
            if time.monotonic() > deadline:
                raise BrokerError(f"reading the control topics timed out after {timeout:.0f}s with "
                                 f"{sorted(targets)} not read to their end (an open transaction?)")
            for msg in consumer.consume(500, timeout=0.2):
                if msg.error():
                    continue
                topic, partition, offset = position_of(msg)
                records.append((kinds[topic], topic, msg.key(), msg.value(), f"{topic}[{partition}]@{offset}"))
    finally:
        consumer.close()
    return records


def publish_control(settings: Settings, topic: str, key: str, value: bytes | None, timeout: float = 30.0) -> None:
    """Publish one control record (None: a tombstone) and return once the broker acknowledged it (or raise)."""
    from museflow.kafka.clients import DeliveryReport, make_producer

    producer = make_producer(settings)
    report = DeliveryReport()
    producer.produce(topic, key=key.encode(), value=value, on_delivery=report)
    remaining = producer.flush(timeout)
    if remaining or report.failed or report.acked != 1:
        raise BrokerError(f"publishing {key!r} to {topic} on {settings.bootstrap_servers} failed: "
                         f"{report.errors or f'{remaining} message(s) not delivered within {timeout:.0f}s'}")


def load_control_state(settings: Settings, decode: Decode, *, load_models: bool | Collection[str] = False,
                       metrics: Any = None) -> PipelineState:
    """Read every control topic to its end into a fresh state (models loaded only if asked: every
    model, or those named).

    The same records and rules as a worker's, so the CLI sees the state a worker serves.
    """
    from pathlib import Path

    from museflow.observe.metrics import PipelineMetrics

    state = PipelineState(model_dir=Path(settings.model_dir), metrics=metrics or PipelineMetrics(),
                          serves=(None if load_models is True else frozenset(load_models or ())))
    for kind, topic, key, value, where in read_control(settings):
        apply_control(state, decode, kind, topic, key, value, where)
    return state


def control_decoder(settings: Settings, serdes: Any) -> Decode:
    """``decode(topic, value)`` for the control topics, from a :class:`museflow.contracts.serde.Serdes`."""
    names = {t: serdes.schema_for_topic(t, settings.topics) for t in
             (settings.topics.routes, settings.topics.deployments, settings.topics.quantile_maps,
              settings.topics.references)}

    def decode(topic: str, value: bytes) -> Mapping[str, Any]:
        return dict(serdes[names[topic]].decode(value))

    return decode


class ControlTransaction:
    """A compare-and-set on the control topics: fence other writers, read, check, write, commit.

    Every control-plane writer of one app shares the transactional id ``<app id>-control``.
    ``init_transactions`` fences the previous holder and completes its open transaction, so the
    state read next includes everything committed before; a writer fenced while it checks and
    writes fails at commit and publishes nothing (:class:`ConflictError`). Records are keyed by
    :func:`museflow.control.keys.control_key`.
    """

    def __init__(self, settings: Settings, decode: Decode, timeout: float = 30.0) -> None:
        from museflow.kafka.clients import make_producer

        self.settings = settings
        self.decode = decode
        self.timeout = timeout
        self._topics = {kind: topic for topic, kind in control_kinds(settings).items()}
        self.producer = make_producer(settings, **{"transactional.id": f"{settings.app_id}-control",
                                                   "transaction.timeout.ms": 20_000, "linger.ms": 1})
        self.state: PipelineState | None = None
        self.sent: list[str] = []

    def __enter__(self) -> ControlTransaction:
        try:
            self.producer.init_transactions(self.timeout)
        except KafkaException as exc:
            raise BrokerError(f"cannot start a control-plane transaction on {self.settings.bootstrap_servers}: "
                             f"{exc.args[0] if exc.args else exc} (the principal needs Write on transactional id "
                             f"{self.settings.app_id}-control)") from exc
        self.state = load_control_state(self.settings, self.decode)
        self.producer.begin_transaction()
        return self

    def send(self, kind: str, record: Mapping[str, Any], value: bytes) -> str:
        """Write ``record`` (encoded as ``value``) under its content key; later checks see it."""
        digest = value_digest(value)
        key = control_key(kind, record, digest)
        self.producer.produce(self._topics[kind], key=key.encode(), value=value)
        assert self.state is not None, "send() outside `with ControlTransaction(...)`"
        self.state.apply(kind, key, record, digest)
        self.sent.append(key)
        return key

    def tombstone(self, kind: str, key: str) -> None:
        """Remove the record under ``key`` (compaction drops it; workers forget it at once)."""
        self.producer.produce(self._topics[kind], key=key.encode(), value=None)
        assert self.state is not None, "tombstone() outside `with ControlTransaction(...)`"
        self.state.apply(kind, key, None, "")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is not None:
            with contextlib.suppress(KafkaException):
                self.producer.abort_transaction(self.timeout)
            return
        try:
            self.producer.commit_transaction(self.timeout)
        except KafkaException as error:
            err = error.args[0] if error.args else None
            code = err.code() if err is not None else None
            if code in _FENCED:
                raise ConflictError(
                    "another control-plane writer started while this change was checked and written; "
                    "nothing was published — run the command again to apply it on top of theirs") from error
            if err is not None and err.txn_requires_abort():
                with contextlib.suppress(KafkaException):
                    self.producer.abort_transaction(self.timeout)
            raise BrokerError(f"control-plane change not committed (nothing was published): {err}") from error


_FENCED = {KafkaErrorCode._FENCED, KafkaErrorCode.PRODUCER_FENCED, KafkaErrorCode.INVALID_PRODUCER_EPOCH}
