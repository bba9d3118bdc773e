"""Exactly-once consume -> process -> produce with Kafka transactions (confluent-kafka).

Why not Faust's own exactly-once: Faust's ``TransactionManager`` opens one transactional
producer per *source* partition, but picks the producer for each send by the *destination*
partition (``f"{app.conf.id}-{group}-{p}"``, ``p`` the partition of the topic written to) and
commits offsets under the source partition's id. The router and scorer write to many topics
(model topics, tenant topics, score log, dead letters) whose partitions have nothing to do with
the source partition, so a batch's outputs and its source offsets would land in different
transactions (or in a producer that was never started) and a crash could duplicate or lose
output. This loop keeps one transactional producer per worker instance and role, and commits
each batch's outputs, its dead letters and its source offsets in one transaction.

Fencing: the offsets are sent with the consumer's group metadata (KIP-447), so the group
coordinator refuses a commit from a member of an older generation (a zombie whose partitions
were reassigned). The transactional id is ``<app_id>-<role>-<instance_id>``: a restarted
instance with the same ``instance_id`` aborts its crashed predecessor's open transaction at
``init_transactions``; without one, the broker aborts it after ``transaction.timeout.ms``.
Input is read with ``isolation.level=read_committed`` so aborted upstream output is never
processed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka import KafkaError as _RdKafkaError

from museflow.config import Settings
from museflow.deadletter import DeadLetterMessage, DeadLetterWriter
from museflow.errors import KafkaError
from museflow.kafka.clients import make_consumer, make_producer
from museflow.pipeline import DeadLetterRequest, InMessage, StepResult

__all__ = ["LoopStats", "TransactionalLoop", "default_instance_id", "to_in_message"]

log = logging.getLogger(__name__)

Process = Callable[[list[InMessage]], StepResult]
_TIMEOUT = 30.0


def default_instance_id() -> str:
    """Host and pid: unique per process (set ``MUSEFLOW_INSTANCE_ID`` for fencing across restarts)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def to_in_message(msg: Message) -> InMessage:
    """A confluent-kafka message as the core's message type."""
    headers: dict[str, bytes] = {}
    raw_headers = msg.headers() or []
    for name, raw in raw_headers.items() if isinstance(raw_headers, dict) else raw_headers:
        headers[name] = raw.encode() if isinstance(raw, str) else (raw or b"")
    return InMessage(msg.key(), msg.value(), str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0),
                     int(msg.timestamp()[1] or 0), headers)


@dataclass
class LoopStats:
    """What a loop did: batches and input messages committed, transactions aborted."""

    batches: int = 0
    committed: int = 0
    aborted: int = 0


class TransactionalLoop:
    """One role's exactly-once loop: ``run(stop)`` until ``stop`` is set (call it on its own thread)."""

    def __init__(self, settings: Settings, role: str, topics: Sequence[str], process: Process,
                 deadletters: DeadLetterWriter, *, before_start: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.role = role
        self.topics = list(topics)
        self.process = process
        self.deadletters = deadletters
        self.before_start = before_start
        instance = settings.instance_id or default_instance_id()
        self.group_id = f"{settings.app_id}-{role}"
        self.transactional_id = f"{settings.app_id}-{role}-{instance}"
        self.stats = LoopStats()

    def run(self, stop: threading.Event) -> None:
        settings = self.settings
        producer = make_producer(settings, **{
            "transactional.id": self.transactional_id,
            "transaction.timeout.ms": int(settings.transaction_timeout_seconds * 1000),
        })
        session_ms = int(settings.broker_session_timeout_seconds * 1000)
        consumer = make_consumer(settings, self.group_id, **{
            "isolation.level": "read_committed", "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": max(500, session_ms // 5)})
        try:
            self._retry(lambda: producer.init_transactions(_TIMEOUT), "init_transactions")
            if self.before_start is not None:
                self.before_start()
            consumer.subscribe(self.topics)
            log.info("%s: exactly-once loop on %s as %s (group %s)", self.role, self.topics,
                     self.transactional_id, self.group_id)
            wait = max(settings.batch_window_seconds, 0.05)
            while not stop.is_set():
                batch = [m for m in consumer.consume(settings.batch_size, timeout=wait) if self._usable(m)]
                if batch:
                    self._transact(consumer, producer, batch)
        except KafkaException as exc:
            raise KafkaError(f"{self.role} exactly-once loop ({self.transactional_id}) on "
                             f"{settings.bootstrap_servers}: {exc}") from exc
        finally:
            consumer.close()

    def _usable(self, msg: Message) -> bool:
        error = msg.error()
        if error is None:
            return True
        if error.code() != _RdKafkaError._PARTITION_EOF:
            log.warning("%s: consumer error on %s[%s]: %s", self.role, msg.topic(), msg.partition(), error)
        return False

    def _transact(self, consumer: Consumer, producer: Producer, batch: list[Message]) -> None:
        messages = [to_in_message(m) for m in batch]
        result = self.process(messages)
        letters = [self._letter(dead) for dead in result.dead]
        offsets: dict[tuple[str, int], int] = {}
        for m in messages:
            key = (m.topic, m.partition)
            offsets[key] = max(offsets.get(key, -1), m.offset + 1)
        producer.begin_transaction()
        try:
            for out in result.out:
                _produce(producer, out.topic, out.key, out.value, [(k, v) for k, v in out.headers])
            for letter in letters:
                _produce(producer, letter.topic, letter.key, letter.value, None)
            producer.send_offsets_to_transaction(
                [TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                consumer.consumer_group_metadata(), _TIMEOUT)
            self._retry(lambda: producer.commit_transaction(_TIMEOUT), "commit_transaction")
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if error is not None and error.fatal():
                raise
            log.warning("%s: transaction aborted, %d messages will be processed again: %s",
                        self.role, len(messages), exc)
            self.stats.aborted += 1
            self._retry(lambda: producer.abort_transaction(_TIMEOUT), "abort_transaction")
            _rewind(consumer, messages)
            return
        for letter in letters:
            self.deadletters.count(letter.reason, letter.stage)
        self.stats.batches += 1
        self.stats.committed += len(messages)

    def _letter(self, dead: DeadLetterRequest) -> DeadLetterMessage:
        m = dead.message
        letter = self.deadletters.build(
            m.value, reason=dead.reason, detail=dead.detail, key=m.key, stage=self.role, source_topic=m.topic,
            source_partition=m.partition, source_offset=m.offset, tenant=dead.tenant,
            timestamp_ms=m.timestamp_ms or None)
        if letter is None:
            raise KafkaError(f"could not build a dead letter for {m.topic}[{m.partition}]@{m.offset}; "
                             "stopping rather than dropping it")
        return letter

    def _retry(self, call: Callable[[], None], what: str, attempts: int = 10) -> None:
        for attempt in range(attempts):
            try:
                call()
                return
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if error is None or not error.retriable() or attempt == attempts - 1:
                    raise
                log.warning("%s: %s failed (%s); retrying", self.role, what, error)
                time.sleep(min(2.0, 0.2 * (attempt + 1)))


def _produce(producer: Producer, topic: str, key: bytes | None, value: bytes,
             headers: list[tuple[str, str | bytes | None]] | None) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=headers)
            return
        except BufferError:
            producer.poll(0.05)


def _rewind(consumer: Consumer, messages: Sequence[InMessage]) -> None:
    """Seek every partition of an aborted batch back to its first message."""
    first: dict[tuple[str, int], int] = {}
    for m in messages:
        key = (m.topic, m.partition)
        first[key] = min(first.get(key, m.offset), m.offset)
    for (topic, partition), offset in first.items():
        try:
            consumer.seek(TopicPartition(topic, partition, offset))
        except KafkaException as exc:
            log.info("not rewinding %s[%d] (no longer assigned: %s); its new owner resumes from the "
                     "last committed offset", topic, partition, exc)
