"""The hot path's one batch loop on librdkafka: consume a batch, run a role, deliver, commit.

Router and scorer run on this loop in both delivery guarantees; the guarantee switches only
the commit (quix-streams keeps one processing loop and one checkpoint the same way):

- **at-least-once** (:class:`OrderedCommit`): a batch's outputs are produced and the loop goes on
  with the next batch; a batch's source offsets are committed only once every output of that
  batch *and of every earlier batch* is acknowledged, so the committed offset never passes an
  unfinished batch. A delivery that fails for good stops the loop after committing the fully
  delivered prefix. Before partitions are given up (rebalance, stop) every pending delivery is
  waited for and the finished offsets are committed, so a graceful stop or a rebalance
  redelivers nothing.
- **exactly-once** (:class:`TransactionalCommit`): one Kafka transaction per batch holding its
  outputs, its dead letters and its source offsets, sent with the consumer's group metadata
  (KIP-447) so a zombie's commit is fenced. The transactional id is
  ``<app_id>-<role>-<instance_id>``: a restarted instance with the same id aborts its crashed
  predecessor's open transaction at ``init_transactions``. After a commit whose outcome is
  unknown the producer is replaced, not reused, and the batch is read again from the committed
  offsets.

Before delivery every output is checked against its topic's limit (:mod:`museflow.kafka.limits`):
an event whose output would be refused as too large becomes one ``oversize`` dead letter and the
batch goes on (:func:`~museflow.runtime.pipeline.drop_oversize`). The producer takes records up to
:data:`~museflow.contracts.topics.DEAD_LETTER_MAX_BYTES`, so the dead letter of any event the events topic
took fits the dead-letter topic.

Batching is adaptive: the loop waits for the first message, then takes what has already been
fetched, up to ``batch_size``, within ``batch_window_seconds`` (about a millisecond): small
batches and low latency at low rates, full batches under load.

A step that raises stops the loop (and the worker) with nothing of that batch committed, except
:class:`~museflow.errors.DependencyUnavailable` (e.g. the schema registry answering 503): then the
loop pauses its partitions and runs the step on the same batch again, backing off from
:data:`PAUSE_FIRST_SECONDS` to :data:`PAUSE_MAX_SECONDS`, with nothing of the batch produced,
committed or dead-lettered meanwhile. It keeps polling the paused consumer, so it stays in its
group however long the outage lasts; earlier batches' deliveries and commits go on; a stop leaves
the batch uncommitted, and a rebalance drops it (it is read again). One warning marks the start of
a pause and one its end; :attr:`LoopHooks.on_paused` / :attr:`LoopHooks.on_resumed` feed the metrics.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka import KafkaError as RdKafkaError

from museflow.config import Settings
from museflow.contracts.deadletter import DeadLetterMessage, DeadLetterWriter
from museflow.contracts.topics import DEAD_LETTER_MAX_BYTES
from museflow.errors import BrokerError, DependencyUnavailable
from museflow.kafka.clients import make_consumer, make_producer
from museflow.kafka.limits import TopicLimits
from museflow.observe.metrics import PipelineMetrics
from museflow.runtime.pipeline import DeadLetterRequest, InMessage, StepResult, drop_oversize, record_size

__all__ = [
    "PAUSE_FIRST_SECONDS",
    "PAUSE_MAX_SECONDS",
    "BatchLoop",
    "CommitStrategy",
    "DeliveryFailed",
    "LoopHooks",
    "OrderedCommit",
    "TransactionalCommit",
    "default_instance_id",
    "to_in_message",
]

log = logging.getLogger(__name__)

Process = Callable[[list[InMessage]], StepResult]
_TIMEOUT = 30.0
_IDLE_POLL = 0.1
_COMMIT_INTERVAL = 1.0
PAUSE_FIRST_SECONDS = 0.5
"""The wait before the first retry of a batch whose dependency is unavailable; it doubles per retry."""
PAUSE_MAX_SECONDS = 10.0
"""The longest wait between two retries of a paused batch."""


class DeliveryFailed(BrokerError):
    """An output the broker refused for good; the loop stops before committing past its batch."""


def default_instance_id() -> str:
    """Host and pid: unique per process (set ``MUSEFLOW_INSTANCE_ID`` for fencing across restarts)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def to_in_message(msg: Message) -> InMessage:
    """A confluent-kafka message as the core's message type."""
    headers: dict[str, bytes] = {}
    raw_headers = msg.headers() or []
    for name, raw in raw_headers.items() if isinstance(raw_headers, dict) else raw_headers:
        headers[name] = raw.encode() if isinstance(raw, str) else (raw or b"")
    kind, stamp = msg.timestamp()
    return InMessage(msg.key(), msg.value(), str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0),
                     int(stamp or 0), headers, kind == TIMESTAMP_LOG_APPEND_TIME)


def _next_offsets(messages: Sequence[InMessage]) -> dict[tuple[str, int], int]:
    offsets: dict[tuple[str, int], int] = {}
    for m in messages:
        key = (m.topic, m.partition)
        if m.offset + 1 > offsets.get(key, -1):
            offsets[key] = m.offset + 1
    return offsets


def _partitions(offsets: dict[tuple[str, int], int]) -> list[TopicPartition]:
    return [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())]


def _produce(producer: Producer, topic: str, key: bytes | None, value: bytes,
             headers: Sequence[tuple[str, bytes]] | None, on_delivery: Any = None) -> None:
    sent: Any = list(headers) if headers else None
    while True:
        try:
            if on_delivery is None:
                producer.produce(topic, value=value, key=key, headers=sent)
            else:
                producer.produce(topic, value=value, key=key, headers=sent, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.05)


def _produce_batch(producer: Producer, result: StepResult, letters: Sequence[DeadLetterMessage],
                   on_delivery: Any = None) -> None:
    """Hand a batch's outputs and then its dead letters to the producer (in its transaction, if one is open).

    The one place a hot loop sends dead letters, in both guarantees.
    """
    for out in result.out:
        _produce(producer, out.topic, out.key, out.value, out.headers, on_delivery)
    for letter in letters:
        _produce(producer, letter.topic, letter.key, letter.value, None, on_delivery)


def _rewind(consumer: Consumer, messages: Sequence[InMessage]) -> None:
    """Seek every partition of a batch back to its first message (the batch is read again)."""
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


class CommitStrategy(Protocol):
    """What a delivery guarantee decides: how a batch's outputs and offsets reach Kafka."""

    def producer_config(self, loop: BatchLoop) -> dict[str, Any]: ...

    def consumer_config(self, loop: BatchLoop) -> dict[str, Any]: ...

    def start(self, loop: BatchLoop) -> None: ...

    def deliver(self, loop: BatchLoop, messages: list[InMessage], result: StepResult,
                letters: list[DeadLetterMessage]) -> None: ...

    def tick(self, loop: BatchLoop) -> None: ...

    def revoke(self, loop: BatchLoop) -> None: ...


@dataclass
class _Batch:
    """One delivered-or-delivering batch of the at-least-once loop."""

    offsets: dict[tuple[str, int], int]
    letters: list[DeadLetterMessage]
    started: float
    pending: int = 0
    error: Any = None
    failed_topic: str = ""

    def ack(self, err: Any, msg: Message) -> None:
        self.pending -= 1
        if err is not None and self.error is None:
            self.error, self.failed_topic = err, str(msg.topic())


@dataclass
class OrderedCommit:
    """At-least-once: commit a gap-free prefix of fully acknowledged batches, in order."""

    limit: int = 8
    pending: deque[_Batch] = field(default_factory=deque)
    done: dict[tuple[str, int], int] = field(default_factory=dict)
    last_commit: float = 0.0

    def producer_config(self, loop: BatchLoop) -> dict[str, Any]:
        return {}

    def consumer_config(self, loop: BatchLoop) -> dict[str, Any]:
        return {"on_commit": self._committed}

    def start(self, loop: BatchLoop) -> None:
        self.last_commit = time.monotonic()

    def deliver(self, loop: BatchLoop, messages: list[InMessage], result: StepResult,
                letters: list[DeadLetterMessage]) -> None:
        producer = loop.producer
        batch = _Batch(_next_offsets(messages), letters, time.perf_counter())
        self.pending.append(batch)
        batch.pending = len(result.out) + len(letters)  # set before any ack can come (acks are served by poll)
        _produce_batch(producer, result, letters, batch.ack)
        producer.poll(0)
        self._settle(loop)
        while len(self.pending) > self.limit:
            producer.poll(0.05)
            self._settle(loop)

    def tick(self, loop: BatchLoop) -> None:
        loop.producer.poll(0)
        self._settle(loop)
        if self.done and time.monotonic() - self.last_commit >= _COMMIT_INTERVAL:
            self._commit(loop, asynchronous=True)

    def revoke(self, loop: BatchLoop) -> None:
        """Wait for every pending delivery and commit what is finished (before partitions go)."""
        if self.pending:
            loop.producer.flush(_TIMEOUT)
            self._settle(loop)
        if self.pending:
            log.warning("%s: %d batches still unacknowledged after %.0fs; their events will be processed again",
                        loop.role, len(self.pending), _TIMEOUT)
            self.pending.clear()
        if self.done:
            self._commit(loop, asynchronous=False)

    def _settle(self, loop: BatchLoop) -> None:
        while self.pending and self.pending[0].pending == 0:
            batch = self.pending[0]
            if batch.error is not None:
                self._fail(loop, batch)
            self.pending.popleft()
            self.done.update(batch.offsets)
            loop.delivered(batch.letters, time.perf_counter() - batch.started)
        failed = next((b for b in self.pending if b.error is not None), None)
        if failed is not None:
            self._fail(loop, failed)

    def _fail(self, loop: BatchLoop, failed: _Batch) -> None:
        """Commit the batches before ``failed`` once they are delivered, then stop."""
        deadline = time.monotonic() + _TIMEOUT
        while self.pending[0] is not failed and time.monotonic() < deadline:
            head = self.pending[0]
            if head.pending:
                loop.producer.poll(0.05)
                continue
            if head.error is not None:
                failed = head
                break
            self.pending.popleft()
            self.done.update(head.offsets)
        if self.done:
            self._commit(loop, asynchronous=False)
        self.pending.clear()
        raise DeliveryFailed(
            f"{loop.role}: delivery to {failed.failed_topic} failed for good ({failed.error}); stopping with "
            f"nothing past the last fully delivered batch committed (the failed batch ends before "
            f"{_partitions(failed.offsets)[:3]}). Fix the cause and restart: that batch is processed again.")

    def _commit(self, loop: BatchLoop, *, asynchronous: bool) -> None:
        offsets, self.done = self.done, {}
        self.last_commit = time.monotonic()
        try:
            if asynchronous:
                loop.consumer.commit(offsets=_partitions(offsets), asynchronous=True)
            else:
                loop.consumer.commit(offsets=_partitions(offsets), asynchronous=False)
        except KafkaException as exc:
            log.warning("%s: committing %s failed (%s); those events may be processed again",
                        loop.role, sorted(offsets.items()), exc)

    @staticmethod
    def _committed(err: Any, partitions: list[TopicPartition]) -> None:
        if err is not None:
            log.warning("offset commit failed (%s); those events may be processed again", err)


@dataclass
class TransactionalCommit:
    """Exactly-once: one transaction per batch with its outputs, dead letters and source offsets."""

    transactional_id: str
    timeout_seconds: float

    def producer_config(self, loop: BatchLoop) -> dict[str, Any]:
        return {"transactional.id": self.transactional_id,
                "transaction.timeout.ms": int(self.timeout_seconds * 1000)}

    def consumer_config(self, loop: BatchLoop) -> dict[str, Any]:
        return {"isolation.level": "read_committed"}

    def start(self, loop: BatchLoop) -> None:
        producer = loop.producer
        _retry(loop.role, lambda: producer.init_transactions(_TIMEOUT), "init_transactions")

    def deliver(self, loop: BatchLoop, messages: list[InMessage], result: StepResult,
                letters: list[DeadLetterMessage]) -> None:
        producer, consumer = loop.producer, loop.consumer
        started = time.perf_counter()
        producer.begin_transaction()
        try:
            _produce_batch(producer, result, letters)
            producer.send_offsets_to_transaction(_partitions(_next_offsets(messages)),
                                                 consumer.consumer_group_metadata(), _TIMEOUT)
            _retry(loop.role, lambda: producer.commit_transaction(_TIMEOUT), "commit_transaction")
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if error is not None and error.fatal():
                raise
            loop.aborted()
            if error is not None and error.txn_requires_abort():
                log.warning("%s: transaction aborted, %d messages will be processed again: %s",
                            loop.role, len(messages), exc)
                _retry(loop.role, lambda: producer.abort_transaction(_TIMEOUT), "abort_transaction")
                _rewind(consumer, messages)
                return
            # The outcome is unknown (e.g. a commit that timed out): never reuse this producer.
            log.warning("%s: transaction outcome unknown (%s); replacing the producer and reading the batch "
                        "again from the committed offsets", loop.role, exc)
            loop.replace_producer()
            self.start(loop)
            _seek_committed(consumer, messages)
            return
        loop.delivered(letters, time.perf_counter() - started)

    def tick(self, loop: BatchLoop) -> None:
        return None

    def revoke(self, loop: BatchLoop) -> None:
        return None  # every batch's transaction is committed or aborted before the next consume


def _seek_committed(consumer: Consumer, messages: Sequence[InMessage]) -> None:
    parts = [TopicPartition(t, p) for t, p in _next_offsets(messages)]
    try:
        for tp in consumer.committed(parts, timeout=_TIMEOUT):
            consumer.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else 0))
    except KafkaException as exc:
        log.info("not rewinding to committed offsets (%s); a rebalance hands the partitions on", exc)


def _retry(role: str, call: Callable[[], None], what: str, attempts: int = 10) -> None:
    for attempt in range(attempts):
        try:
            call()
            return
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if error is None or not error.retriable() or attempt == attempts - 1:
                raise
            log.warning("%s: %s failed (%s); retrying", role, what, error)
            time.sleep(min(2.0, 0.2 * (attempt + 1)))


@dataclass(frozen=True)
class LoopHooks:
    """What the host of a loop provides or is told; every hook is optional and runs on the loop's thread."""

    before_start: Callable[[], None] | None = None
    """Called before subscribing (e.g. wait until the control topics are applied)."""
    output_topics: Callable[[], Sequence[str]] | None = None
    """Topics whose metadata is fetched before the first batch."""
    on_assigned: Callable[[], None] | None = None
    """A rebalance handed the loop its partitions (possibly none); counted in ``museflow_rebalances_total``."""
    on_delivered: Callable[[float], None] | None = None
    """A batch's outputs are all acknowledged (seconds since it was handed to the producer)."""
    on_paused: Callable[[str], None] | None = None
    """The loop paused because this dependency is unavailable (e.g. ``schema-registry``)."""
    on_resumed: Callable[[str, float], None] | None = None
    """A pause on this dependency ended (seconds paused), by a retry that worked, a stop or a rebalance."""


@dataclass
class _Pause:
    """A batch waiting for a dependency: since when, the next wait, the rebalance count it started under."""

    dependency: str
    where: str
    started: float
    rebalances: int
    partitions: list[TopicPartition]
    delay: float = field(default_factory=lambda: PAUSE_FIRST_SECONDS)
    retries: int = 0


class BatchLoop:
    """One role's loop: ``run(stop)`` until ``stop`` is set, on a thread of its own.

    ``subscription`` holds topic names or librdkafka regexes (``^...``): a scorer subscribed by
    pattern picks up a newly created model topic without a restart.
    """

    def __init__(self, settings: Settings, role: str, subscription: Sequence[str], process: Process,
                 deadletters: DeadLetterWriter, *, group_id: str, commit: CommitStrategy | None = None,
                 hooks: LoopHooks | None = None, limits: Callable[[str], int] | None = None,
                 metrics: PipelineMetrics | None = None) -> None:
        self.settings, self.role, self.subscription = settings, role, list(subscription)
        self.process, self.deadletters, self.group_id = process, deadletters, group_id
        self.hooks = hooks or LoopHooks()
        if commit is None:
            if settings.exactly_once:
                instance = settings.instance_id or default_instance_id()
                commit = TransactionalCommit(f"{settings.app_id}-{role}-{instance}",
                                             settings.transaction_timeout_seconds)
            else:
                commit = OrderedCommit(limit=settings.batches_in_flight)
        self.commit = commit
        self._limits = limits
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._rebalances = 0
        metrics = metrics if metrics is not None else PipelineMetrics()
        # children made now: both counters are exported at 0 from the start
        self._assignments_total = metrics.child(metrics.rebalances, role)
        self._aborted_total = metrics.child(metrics.transactions_aborted, role)

    @property
    def producer(self) -> Producer:
        assert self._producer is not None, "the loop is not running"
        return self._producer

    @property
    def consumer(self) -> Consumer:
        assert self._consumer is not None, "the loop is not running"
        return self._consumer

    @property
    def limits(self) -> Callable[[str], int]:
        """Topic -> the largest record it and the producer take (described from the broker by default)."""
        if self._limits is None:
            self._limits = TopicLimits(self.settings, DEAD_LETTER_MAX_BYTES)
        return self._limits

    def replace_producer(self) -> None:
        """Drop the producer (its state is unknown) and make a fresh one with the same settings."""
        old, self._producer = self._producer, None
        if old is not None:
            old.purge()
            old.flush(0)
        self._producer = self._new_producer()

    def _new_producer(self) -> Producer:
        return make_producer(self.settings, **{"message.max.bytes": DEAD_LETTER_MAX_BYTES},
                             **self.commit.producer_config(self))

    def delivered(self, letters: Sequence[DeadLetterMessage], seconds: float) -> None:
        for letter in letters:
            self.deadletters.count(letter.reason, letter.stage)
        if self.hooks.on_delivered is not None:
            self.hooks.on_delivered(seconds)

    def aborted(self) -> None:
        """An exactly-once batch's transaction was aborted (its events are processed again)."""
        self._aborted_total.inc()

    def run(self, stop: threading.Event) -> None:
        settings = self.settings
        session_ms = int(settings.broker_session_timeout_seconds * 1000)
        self._producer = self._new_producer()
        self._consumer = make_consumer(settings, self.group_id, **{
            "session.timeout.ms": session_ms, "heartbeat.interval.ms": max(500, session_ms // 5),
            "topic.metadata.refresh.interval.ms": 5000,  # a pattern subscription sees a new topic within seconds
            **self.commit.consumer_config(self)})
        consumer = self._consumer
        try:
            self.commit.start(self)
            if self.hooks.before_start is not None:
                self.hooks.before_start()
            self._warm_up()
            consumer.subscribe(self.subscription, on_assign=self._on_assign, on_revoke=self._on_revoke)
            log.info("%s: batch loop on %s (group %s, %s)", self.role, self.subscription, self.group_id,
                     settings.processing_guarantee)
            while not stop.is_set():
                messages = self._take(consumer)
                if messages:
                    processed = self._process(consumer, messages, stop)
                    if processed is not None:
                        self.commit.deliver(self, messages, *processed)
                self.commit.tick(self)
            self.commit.revoke(self)
        except KafkaException as exc:
            raise BrokerError(f"{self.role} batch loop (group {self.group_id}) on {settings.bootstrap_servers}: "
                             f"{exc}") from exc
        finally:
            try:
                consumer.close()
            finally:
                if self._producer is not None:
                    self._producer.flush(5)

    def _warm_up(self) -> None:
        """Fetch the output topics' metadata and limits before the first batch (else its first sends wait for them)."""
        topics = list(self.hooks.output_topics()) if self.hooks.output_topics is not None else []
        for topic in topics:
            try:
                self.producer.list_topics(topic, timeout=10)
            except KafkaException as exc:
                log.info("%s: no metadata for %s yet (%s); the first send will fetch it", self.role, topic, exc)
        prefetch = getattr(self.limits, "prefetch", None)
        if prefetch is not None and topics:
            prefetch([*topics, self.deadletters.topic])

    def _take(self, consumer: Consumer) -> list[InMessage]:
        """Wait for the first message, then take what is already fetched, up to the batch size.

        A rebalance served inside these calls may have revoked the partitions of messages already
        in hand: such a batch is not processed (its new owner starts from the committed offsets)
        and the partitions still assigned are sought back to its first offsets.
        """
        rebalances = self._rebalances
        first = consumer.poll(_IDLE_POLL)
        if first is None:
            return []
        batch = [first]
        size = self.settings.batch_size
        if size > 1:
            batch.extend(consumer.consume(size - 1, timeout=max(self.settings.batch_window_seconds, 0.0)))
        messages = [to_in_message(m) for m in batch if self._usable(m)]
        if rebalances != self._rebalances and messages:
            owned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
            _rewind(consumer, [m for m in messages if (m.topic, m.partition) in owned])
            log.info("%s: a rebalance came while a batch was being taken; it is read again", self.role)
            return []
        return messages

    def _process(self, consumer: Consumer, messages: list[InMessage], stop: threading.Event
                 ) -> tuple[StepResult, list[DeadLetterMessage]] | None:
        """The batch's outputs and dead letters; while a dependency is unavailable, pause and run it again.

        None when a stop or a rebalance came during a pause: the batch is left uncommitted (read again).
        """
        pause: _Pause | None = None
        try:
            while True:
                try:
                    result = drop_oversize(self.process(messages), self.limits)
                    return result, [self._letter(dead) for dead in result.dead]
                except DependencyUnavailable as exc:
                    if pause is None:
                        pause = self._pause(consumer, exc, len(messages))
                    if not self._wait_out(consumer, pause, messages, stop):
                        return None
        finally:
            if pause is not None:
                self._resume(consumer, pause)

    def _pause(self, consumer: Consumer, exc: DependencyUnavailable, size: int) -> _Pause:
        pause = _Pause(exc.dependency, exc.where, time.monotonic(), self._rebalances, consumer.assignment())
        consumer.pause(pause.partitions)
        log.warning("%s: %s%s is unavailable; pausing, and retrying the batch of %d events every %.1f-%.0fs "
                    "(nothing of it is committed or dead-lettered meanwhile): %s", self.role, exc.dependency,
                    f" at {exc.where}" if exc.where else "", size, PAUSE_FIRST_SECONDS, PAUSE_MAX_SECONDS, exc)
        if self.hooks.on_paused is not None:
            self.hooks.on_paused(exc.dependency)
        return pause

    def _wait_out(self, consumer: Consumer, pause: _Pause, messages: list[InMessage],
                  stop: threading.Event) -> bool:
        """Wait before the next retry, polling the paused consumer (group membership, rebalances) meanwhile.

        False when the batch is given up: a stop (it stays uncommitted) or a rebalance (it is read again).
        """
        deadline = time.monotonic() + pause.delay
        pause.delay = min(pause.delay * 2, PAUSE_MAX_SECONDS)
        pause.retries += 1
        while True:
            if stop.is_set():
                log.info("%s: stopping while paused; the batch of %d events is not committed and is read again",
                         self.role, len(messages))
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            msg = consumer.poll(min(_IDLE_POLL, left))
            if msg is not None and self._usable(msg):
                self._put_back(consumer, msg)
            if self._rebalances != pause.rebalances:
                owned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
                _rewind(consumer, [m for m in messages if (m.topic, m.partition) in owned])
                log.info("%s: a rebalance came while paused; the batch is read again", self.role)
                return False
            self.commit.tick(self)

    def _put_back(self, consumer: Consumer, msg: Message) -> None:
        """A message polled during a pause (from a partition assigned meanwhile) is sought back, not lost."""
        try:
            consumer.seek(TopicPartition(str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0)))
        except KafkaException as exc:
            log.info("not putting back %s[%s]@%s (%s); its owner resumes from the last committed offset",
                     msg.topic(), msg.partition(), msg.offset(), exc)

    def _resume(self, consumer: Consumer, pause: _Pause) -> None:
        seconds = time.monotonic() - pause.started
        # librdkafka keeps a partition paused across a revoke and a later re-assignment: resume those too
        assigned = consumer.assignment()
        owned = {(tp.topic, tp.partition) for tp in assigned}
        try:
            consumer.resume([*assigned, *(tp for tp in pause.partitions if (tp.topic, tp.partition) not in owned)])
        except KafkaException as exc:
            log.info("%s: resuming the assignment failed (%s); a rebalance resumes it", self.role, exc)
        log.warning("%s: %s%s: resuming after a pause of %.1fs (%d retries)", self.role, pause.dependency,
                    f" at {pause.where}" if pause.where else "", seconds, pause.retries)
        if self.hooks.on_resumed is not None:
            self.hooks.on_resumed(pause.dependency, seconds)

    def _usable(self, msg: Message) -> bool:
        error = msg.error()
        if error is None:
            return True
        if error.fatal():
            raise KafkaException(error)
        if error.code() not in (RdKafkaError._PARTITION_EOF, RdKafkaError.UNKNOWN_TOPIC_OR_PART):
            log.warning("%s: consumer error on %s[%s]: %s", self.role, msg.topic(), msg.partition(), error)
        return False

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._rebalances += 1
        self._assignments_total.inc()
        if self.hooks.on_assigned is not None:
            self.hooks.on_assigned()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._rebalances += 1
        self.commit.revoke(self)

    def _letter(self, dead: DeadLetterRequest) -> DeadLetterMessage:
        m = dead.message
        letter = self.deadletters.build(
            m.value, reason=dead.reason, detail=dead.detail, key=m.key, stage=self.role, source_topic=m.topic,
            source_partition=m.partition, source_offset=m.offset, tenant=dead.tenant,
            timestamp_ms=m.timestamp_ms or None,
            max_bytes=self.limits(self.deadletters.topic) - record_size(m.key, b""))
        if letter is None:
            _ = self.deadletters.serde.schema_id  # an unavailable registry raises DependencyUnavailable: wait
            raise BrokerError(f"could not build a dead letter for {m.topic}[{m.partition}]@{m.offset}; "
                             "stopping rather than dropping it")
        return letter
