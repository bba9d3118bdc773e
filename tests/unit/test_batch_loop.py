"""The batch loop on a fake librdkafka: ordered commits, failures, adaptive batches, revokes, no broker."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from museflow.config import Settings
from museflow.contracts.deadletter import DeadLetterWriter
from museflow.errors import DependencyUnavailable
from museflow.kafka import loop as batch_loop
from museflow.kafka.loop import BatchLoop, DeliveryFailed, LoopHooks
from museflow.runtime.pipeline import DeadLetterRequest, InMessage, OutMessage, StepResult

TOPIC = "in"


class FakeMessage:
    def __init__(self, partition: int, offset: int, value: bytes, topic: str = TOPIC) -> None:
        self._topic, self._partition, self._offset, self._value = topic, partition, offset, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return []

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)


class FakeConsumer:
    """Serves ``fetches`` (lists of messages already fetched) one per poll; records commits."""

    def __init__(self, fetches: list[list[FakeMessage]], stop: threading.Event) -> None:
        self.fetches = deque(fetches)
        self.buffer: deque[FakeMessage] = deque()
        self.commits: list[dict[tuple[str, int], int]] = []
        self.stop = stop
        self.on_revoke: Callable[..., None] | None = None
        self.closed = False
        self.paused = False
        self.paused_polls = 0
        self.assigned = [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]
        self.resumed: set[tuple[str, int]] = set()
        self.seeks: list[tuple[int, int]] = []

    def subscribe(self, topics: list[str], on_assign: Any = None, on_revoke: Any = None) -> None:
        self.on_revoke = on_revoke

    def poll(self, timeout: float) -> FakeMessage | None:
        if self.paused:
            self.paused_polls += 1
            return None
        if not self.buffer and self.fetches:
            self.buffer.extend(self.fetches.popleft())
        if not self.buffer:
            self.stop.set()
            return None
        return self.buffer.popleft()

    def consume(self, n: int, timeout: float) -> list[FakeMessage]:
        taken: list[FakeMessage] = []
        while self.buffer and len(taken) < n:
            taken.append(self.buffer.popleft())
        return taken

    def commit(self, offsets: list[Any], asynchronous: bool = True) -> None:
        self.commits.append({(tp.topic, tp.partition): tp.offset for tp in offsets})

    def close(self) -> None:
        self.closed = True

    def assignment(self) -> list[TopicPartition]:
        return list(self.assigned)

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused = True

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused = False
        self.resumed.update((tp.topic, tp.partition) for tp in partitions)

    def seek(self, tp: Any) -> None:
        self.seeks.append((tp.partition, tp.offset))

    def committed_offsets(self) -> dict[tuple[str, int], int]:
        merged: dict[tuple[str, int], int] = {}
        for commit in self.commits:
            for key, offset in commit.items():
                assert offset >= merged.get(key, 0), f"commit went backwards on {key}"
                merged[key] = offset
        return merged


class FakeError:
    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        return self.name


class FakeProducer:
    """Acknowledges deliveries on poll; ``refuse`` fails a value for good, reported ``refuse_after`` polls late."""

    def __init__(self, refuse: set[bytes] | None = None, hold: int = 0, refuse_after: int = 0) -> None:
        self.queue: deque[tuple[Any, bytes, str]] = deque()
        self.refuse = refuse or set()
        self.hold = hold  # deliveries kept pending on each poll (acks arrive late)
        self.refuse_after = refuse_after
        self.late: list[tuple[int, Any, bytes, str]] = []
        self.polls = 0
        self.delivered: list[bytes] = []

    def produce(self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None,
                on_delivery: Any = None) -> None:
        self.queue.append((on_delivery, value, topic))

    def poll(self, timeout: float = 0) -> int:
        self.polls += 1
        served = 0
        for due, callback, value, topic in [entry for entry in self.late if entry[0] <= self.polls]:
            self.late.remove((due, callback, value, topic))
            callback(FakeError("MSG_SIZE_TOO_LARGE"), FakeMessage(0, 0, value, topic))
            served += 1
        while len(self.queue) > self.hold:
            callback, value, topic = self.queue.popleft()
            if value in self.refuse:
                self.late.append((self.polls + self.refuse_after, callback, value, topic))
                continue
            self.delivered.append(value)
            if callback is not None:
                callback(None, FakeMessage(0, 0, value, topic))
            served += 1
        return served

    def flush(self, timeout: float = 0) -> int:
        self.hold = 0
        self.polls += 10**6
        self.poll()
        return 0


class FixedLimits:
    """Every topic takes ``max_bytes`` (the loop would otherwise describe topics on a broker)."""

    def __init__(self, settings: Settings, producer_max_bytes: int, max_bytes: int = 1_000_000) -> None:
        self.max_bytes = max_bytes

    def __call__(self, topic: str) -> int:
        return self.max_bytes


@pytest.fixture(autouse=True)
def fixed_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_loop, "TopicLimits", FixedLimits)


def forward(messages: list[InMessage]) -> StepResult:
    result = StepResult()
    for m in messages:
        if m.value == b"raise":
            raise RuntimeError("a bug in a step")
        if (m.value or b"").startswith(b"bad"):
            result.dead.append(DeadLetterRequest(m, "invalid_event", "bad"))
        else:
            result.out.append(OutMessage("out", m.key, m.value or b""))
    return result


@pytest.fixture
def run_loop(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., tuple[FakeConsumer, FakeProducer, list[int]]]]:
    def run(fetches: list[list[FakeMessage]], producer: FakeProducer | None = None,
            process: Callable[[list[InMessage]], StepResult] = forward, **settings: Any
            ) -> tuple[FakeConsumer, FakeProducer, list[int]]:
        stop = threading.Event()
        consumer = FakeConsumer(fetches, stop)
        producer = producer or FakeProducer()
        monkeypatch.setattr(batch_loop, "make_consumer", lambda *a, **kw: consumer)
        monkeypatch.setattr(batch_loop, "make_producer", lambda *a, **kw: producer)
        sizes: list[int] = []

        def counted(messages: list[InMessage]) -> StepResult:
            sizes.append(len(messages))
            return process(messages)

        loop = BatchLoop(Settings(**settings), "test", [TOPIC], counted, DeadLetterWriter("dlq"), group_id="g")
        loop.run(stop)
        return consumer, producer, sizes
    yield run


def msgs(partition: int, first: int, n: int, value: Callable[[int], bytes] = lambda i: b"v%d" % i
         ) -> list[FakeMessage]:
    return [FakeMessage(partition, o, value(o)) for o in range(first, first + n)]


def test_batches_take_what_is_fetched_up_to_the_batch_size(run_loop: Any) -> None:
    consumer, producer, sizes = run_loop([msgs(0, 0, 3), msgs(0, 3, 1200)], batch_size=500)
    assert sizes == [3, 500, 500, 200]
    assert consumer.committed_offsets() == {(TOPIC, 0): 1203}
    assert len(producer.delivered) == 1203 and consumer.closed


def test_late_acks_hold_the_commit_until_every_earlier_batch_is_delivered(run_loop: Any) -> None:
    producer = FakeProducer(hold=10**6)  # nothing acknowledged until the loop stops and flushes
    consumer, _, sizes = run_loop([msgs(0, 0, 5), msgs(1, 0, 5), msgs(0, 5, 5)], producer=producer)
    assert sizes == [5, 5, 5]
    assert consumer.commits[:-1] == []  # no commit went out while deliveries were pending
    assert consumer.committed_offsets() == {(TOPIC, 0): 10, (TOPIC, 1): 5}


def test_a_refused_delivery_after_later_batches_were_acked_commits_nothing_past_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    stop = threading.Event()
    consumer = FakeConsumer([msgs(0, 0, 10), msgs(0, 10, 10), msgs(0, 20, 10), msgs(0, 30, 10)], stop)
    producer = FakeProducer(refuse={b"v15"}, refuse_after=6)  # batch 2's refusal arrives after batches 3, 4 acked
    monkeypatch.setattr(batch_loop, "make_consumer", lambda *a, **kw: consumer)
    monkeypatch.setattr(batch_loop, "make_producer", lambda *a, **kw: producer)
    loop = BatchLoop(Settings(batch_size=10), "test", [TOPIC], forward, DeadLetterWriter("dlq"), group_id="g")
    with pytest.raises(DeliveryFailed, match="failed for good"):
        loop.run(stop)
    assert b"v35" in producer.delivered  # a later batch was acknowledged before the refusal came
    assert consumer.committed_offsets() == {(TOPIC, 0): 10}  # the batch before; never 20, 30 or 40
    assert consumer.closed


def test_a_step_that_raises_stops_the_loop_with_its_batch_uncommitted(monkeypatch: pytest.MonkeyPatch) -> None:
    stop = threading.Event()
    consumer = FakeConsumer([msgs(0, 0, 4), msgs(0, 4, 4, lambda i: b"raise" if i == 6 else b"v%d" % i)], stop)
    producer = FakeProducer()
    monkeypatch.setattr(batch_loop, "make_consumer", lambda *a, **kw: consumer)
    monkeypatch.setattr(batch_loop, "make_producer", lambda *a, **kw: producer)
    loop = BatchLoop(Settings(), "test", [TOPIC], forward, DeadLetterWriter("dlq"), group_id="g")
    with pytest.raises(RuntimeError, match="a bug in a step"):
        loop.run(stop)
    assert consumer.committed_offsets().get((TOPIC, 0), 0) <= 4
    assert consumer.closed


def test_dead_letters_are_delivered_and_counted_with_the_batch(run_loop: Any) -> None:
    consumer, producer, _ = run_loop([msgs(0, 0, 6, lambda i: b"bad" if i % 2 else b"ok%d" % i)])
    assert len(producer.delivered) == 6  # 3 forwards, 3 dead letters
    assert consumer.committed_offsets() == {(TOPIC, 0): 6}


def test_a_revoke_waits_for_pending_deliveries_and_commits_them(monkeypatch: pytest.MonkeyPatch) -> None:
    stop = threading.Event()
    consumer = FakeConsumer([msgs(0, 0, 5), msgs(0, 5, 5)], stop)
    producer = FakeProducer(hold=10**6)
    monkeypatch.setattr(batch_loop, "make_consumer", lambda *a, **kw: consumer)
    monkeypatch.setattr(batch_loop, "make_producer", lambda *a, **kw: producer)
    revoked: list[dict[tuple[str, int], int]] = []

    def process(messages: list[InMessage]) -> StepResult:
        if messages[0].offset == 5:  # a rebalance arrives while batch 1 is unacknowledged
            producer.hold = 0
            assert consumer.on_revoke is not None
            consumer.on_revoke(consumer, [])
            revoked.append(consumer.committed_offsets())
        return forward(messages)

    BatchLoop(Settings(), "test", [TOPIC], process, DeadLetterWriter("dlq"), group_id="g").run(stop)
    assert revoked == [{(TOPIC, 0): 5}]
    assert consumer.committed_offsets() == {(TOPIC, 0): 10}


class FakeTxnProducer(FakeProducer):
    """A transactional producer whose first ``commit_transaction`` fails with ``error``."""

    def __init__(self, error: Any) -> None:
        super().__init__()
        self.error = error
        self.calls: list[str] = []

    def init_transactions(self, timeout: float) -> None:
        self.calls.append("init")

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout: float) -> None:
        self.calls.append("offsets")

    def commit_transaction(self, timeout: float) -> None:
        self.calls.append("commit")
        if self.error is not None:
            error, self.error = self.error, None
            raise KafkaException(error)

    def abort_transaction(self, timeout: float) -> None:
        self.calls.append("abort")

    def purge(self) -> None:
        self.calls.append("purge")


class TxnConsumer(FakeConsumer):
    def consumer_group_metadata(self) -> object:
        return object()

    def committed(self, partitions: list[Any], timeout: float) -> list[Any]:
        return [TopicPartition(tp.topic, tp.partition, 3) for tp in partitions]


@pytest.mark.parametrize(("error", "replaced", "seek"), [
    (KafkaError(KafkaError._TIMED_OUT, "commit timed out", txn_requires_abort=False), True, (0, 3)),
    (KafkaError(KafkaError._STATE, "abortable", txn_requires_abort=True), False, (0, 0)),
])
def test_an_exactly_once_batch_whose_commit_fails_is_read_again_and_an_unknown_outcome_replaces_the_producer(
        monkeypatch: pytest.MonkeyPatch, error: Any, replaced: bool, seek: tuple[int, int]) -> None:
    stop = threading.Event()
    consumer = TxnConsumer([msgs(0, 0, 5)], stop)
    producers = [FakeTxnProducer(error), FakeTxnProducer(None)]
    made = iter(producers)
    monkeypatch.setattr(batch_loop, "make_consumer", lambda *a, **kw: consumer)
    monkeypatch.setattr(batch_loop, "make_producer", lambda *a, **kw: next(made))
    monkeypatch.setattr(batch_loop, "_retry", lambda role, call, what, attempts=10: call())
    loop = BatchLoop(Settings(processing_guarantee="exactly_once"), "test", [TOPIC], forward, DeadLetterWriter("dlq"),
                     group_id="g")
    loop.run(stop)
    first = producers[0].calls
    assert first[:4] == ["init", "begin", "offsets", "commit"]
    if replaced:  # outcome unknown: never reuse that producer; a new one is initialised, the batch read again
        assert "purge" in first and "abort" not in first and producers[1].calls == ["init"]
    else:  # abortable: abort, read the batch again with the same producer
        assert first[4:] == ["abort"] and producers[1].calls == []
    assert consumer.seeks == [seek]


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_an_oversize_output_is_one_dead_letter_and_the_batch_goes_on(
        monkeypatch: pytest.MonkeyPatch, guarantee: str) -> None:
    """Without the size check the producer refuses the record and the loop stops (a crash loop on restart)."""
    stop = threading.Event()
    consumer = TxnConsumer([msgs(0, 0, 6, lambda i: b"x" * 6000 if i == 2 else b"ok%d" % i), msgs(0, 6, 3)], stop)
    producer = FakeTxnProducer(None)
    sent: list[tuple[str, bytes]] = []

    def produce(topic: str, value: bytes, key: bytes | None = None, headers: Any = None,
                on_delivery: Any = None) -> None:
        if len(value) > (5000 if topic == "out" else 50_000):
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        sent.append((topic, value))
        FakeProducer.produce(producer, topic, value, key, headers, on_delivery)

    monkeypatch.setattr(producer, "produce", produce)
    monkeypatch.setattr(batch_loop, "make_consumer", lambda *a, **kw: consumer)
    monkeypatch.setattr(batch_loop, "make_producer", lambda *a, **kw: producer)

    def sourced(messages: list[InMessage]) -> StepResult:
        return StepResult(out=[OutMessage("out", m.key, m.value or b"", (), m, True) for m in messages],
                          primary=len(messages))

    letters = DeadLetterWriter("dlq")
    loop = BatchLoop(Settings(processing_guarantee=guarantee), "test", [TOPIC], sourced, letters, group_id="g",
                     limits=lambda topic: 5000 if topic == "out" else 50_000)
    loop.run(stop)
    assert [t for t, _ in sent].count("out") == 8 and [t for t, _ in sent].count("dlq") == 1
    [value] = [v for t, v in sent if t == "dlq"]
    assert value in producer.delivered
    letter = letters.serde.decode(value)
    assert (letter["reason"], letter["original_value"], letter["source_offset"]) == ("oversize", b"x" * 6000, 2)
    assert letters.counts == {("oversize", "_other"): 1}  # counted once, after delivery (stage "test" is unknown)
    if guarantee == "at_least_once":
        assert consumer.committed_offsets() == {(TOPIC, 0): 9}
    else:
        assert producer.calls.count("commit") == 2 and "abort" not in producer.calls


def test_a_dead_letter_larger_than_the_dlq_takes_keeps_the_start_of_the_original(run_loop: Any) -> None:
    letters = DeadLetterWriter("dlq")
    message = letters.build(b"y" * 50_000, reason="oversize", detail="too big", max_bytes=20_000)
    assert message is not None and len(message.value) <= 20_000
    record = letters.serde.decode(message.value)
    assert record["original_value"] == b"y" * len(record["original_value"]) and len(record["original_value"]) > 19_000
    assert "50,000 bytes is cut to its first" in record["detail"] and record["detail"].startswith("too big")


# ---- a dependency (the schema registry) unavailable: pause, retry the batch, never dead-letter it ----------------

class Outage:
    """A step whose batches starting at ``offset`` raise DependencyUnavailable ``failures`` times, then work."""

    def __init__(self, offset: int, failures: int) -> None:
        self.offset, self.failures = offset, failures
        self.attempts: list[int] = []
        self.paused: list[str] = []
        self.resumed: list[tuple[str, float]] = []

    def __call__(self, messages: list[InMessage]) -> StepResult:
        self.attempts.append(messages[0].offset)
        if messages[0].offset == self.offset and self.failures:
            self.failures -= 1
            raise DependencyUnavailable("registry answered 503", dependency="schema-registry", where="http://r")
        return forward(messages)

    def hooks(self, on_paused: Callable[[str], None] | None = None) -> LoopHooks:
        def paused(dependency: str) -> None:
            self.paused.append(dependency)
            if on_paused is not None:
                on_paused(dependency)

        return LoopHooks(on_paused=paused, on_resumed=lambda d, s: self.resumed.append((d, s)))


@pytest.fixture
def quick_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_loop, "PAUSE_FIRST_SECONDS", 0.001)
    monkeypatch.setattr(batch_loop, "PAUSE_MAX_SECONDS", 0.004)


def outage_loop(monkeypatch: pytest.MonkeyPatch, guarantee: str, fetches: list[list[FakeMessage]], step: Outage,
                hooks: LoopHooks) -> tuple[BatchLoop, TxnConsumer, FakeTxnProducer, threading.Event]:
    stop = threading.Event()
    consumer = TxnConsumer(fetches, stop)
    producer = FakeTxnProducer(None)
    monkeypatch.setattr(batch_loop, "make_consumer", lambda *a, **kw: consumer)
    monkeypatch.setattr(batch_loop, "make_producer", lambda *a, **kw: producer)
    loop = BatchLoop(Settings(processing_guarantee=guarantee), "test", [TOPIC], step, DeadLetterWriter("dlq"),
                     group_id="g", hooks=hooks)
    return loop, consumer, producer, stop


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_an_unavailable_dependency_pauses_the_loop_and_the_batch_is_delivered_once_when_it_is_back(
        monkeypatch: pytest.MonkeyPatch, quick_pauses: None, guarantee: str) -> None:
    step = Outage(offset=4, failures=2)
    fetches = [msgs(0, 0, 4), msgs(0, 4, 4, lambda i: b"bad" if i == 5 else b"v%d" % i), msgs(0, 8, 4)]
    loop, consumer, producer, stop = outage_loop(monkeypatch, guarantee, fetches, step, step.hooks())
    loop.run(stop)
    assert step.attempts == [0, 4, 4, 4, 8]  # the same batch, run again until the dependency answered
    assert [v for v in producer.delivered if v.startswith(b"v")] == [b"v%d" % i for i in range(12) if i != 5]
    assert len(producer.delivered) == 12  # 11 outputs and the one real dead letter, each once
    assert loop.deadletters.counts == {("invalid_event", "_other"): 1}  # the bad event only, counted once
    assert step.paused == ["schema-registry"] and [d for d, _ in step.resumed] == ["schema-registry"]
    assert step.resumed[0][1] >= 0 and consumer.paused_polls > 0 and not consumer.paused
    if guarantee == "at_least_once":
        assert consumer.committed_offsets() == {(TOPIC, 0): 12}
    else:  # one transaction per batch; the failed attempts never began one
        assert producer.calls == ["init"] + ["begin", "offsets", "commit"] * 3


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_stop_during_a_pause_returns_with_the_paused_batch_uncommitted(
        monkeypatch: pytest.MonkeyPatch, quick_pauses: None, guarantee: str) -> None:
    step = Outage(offset=4, failures=10**6)
    stopped: list[threading.Event] = []
    loop, consumer, producer, stop = outage_loop(
        monkeypatch, guarantee, [msgs(0, 0, 4), msgs(0, 4, 4), msgs(0, 8, 4)], step,
        step.hooks(on_paused=lambda d: stopped[0].set()))
    stopped.append(stop)
    loop.run(stop)  # returns: a graceful stop is not a failure
    assert step.attempts == [0, 4] and step.resumed and consumer.closed
    assert producer.delivered == [b"v0", b"v1", b"v2", b"v3"]
    if guarantee == "at_least_once":
        assert consumer.committed_offsets() == {(TOPIC, 0): 4}
    else:
        assert producer.calls == ["init", "begin", "offsets", "commit"]


def test_a_rebalance_during_a_pause_drops_the_batch_and_reads_it_again(
        monkeypatch: pytest.MonkeyPatch, quick_pauses: None) -> None:
    step = Outage(offset=4, failures=10**6)
    holder: list[TxnConsumer] = []

    def revoke(dependency: str) -> None:
        consumer = holder[0]
        assert consumer.on_revoke is not None
        consumer.on_revoke(consumer, [])
        consumer.assigned = [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 2)]  # partition 1 went elsewhere

    loop, consumer, _, stop = outage_loop(
        monkeypatch, "at_least_once", [msgs(0, 0, 4), msgs(0, 4, 4)], step, step.hooks(on_paused=revoke))
    holder.append(consumer)
    loop.run(stop)
    assert consumer.seeks == [(0, 4)]  # back to the paused batch's first offset, for the owner to read again
    assert consumer.committed_offsets() == {(TOPIC, 0): 4} and not consumer.paused
    # librdkafka keeps a revoked partition paused if it comes back later: every paused one is resumed
    assert consumer.resumed == {(TOPIC, 0), (TOPIC, 1), (TOPIC, 2)}


class AssigningConsumer(TxnConsumer):
    """A consumer whose subscription is assigned twice (a rebalance), as librdkafka calls back from poll."""

    def subscribe(self, topics: list[str], on_assign: Any = None, on_revoke: Any = None) -> None:
        super().subscribe(topics, on_assign, on_revoke)
        for _ in range(2):
            on_assign(self, self.assigned)


def test_assignments_and_aborted_transactions_are_counted_per_role_from_zero(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from museflow.observe.metrics import PipelineMetrics

    def sample(metrics: PipelineMetrics, name: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"role": "router"})

    stop = threading.Event()
    consumer = AssigningConsumer([msgs(0, 0, 5)], stop)
    producer = FakeTxnProducer(KafkaError(KafkaError._STATE, "abortable", txn_requires_abort=True))
    monkeypatch.setattr(batch_loop, "make_consumer", lambda *a, **kw: consumer)
    monkeypatch.setattr(batch_loop, "make_producer", lambda *a, **kw: producer)
    monkeypatch.setattr(batch_loop, "_retry", lambda role, call, what, attempts=10: call())
    metrics = PipelineMetrics()
    loop = BatchLoop(Settings(processing_guarantee="exactly_once"), "router", [TOPIC], forward,
                     DeadLetterWriter("dlq"), group_id="g", metrics=metrics)
    assert sample(metrics, "museflow_rebalances_total") == 0  # exported before the first rebalance
    assert sample(metrics, "museflow_transactions_aborted_total") == 0
    loop.run(stop)
    assert producer.calls.count("abort") == 1
    assert sample(metrics, "museflow_rebalances_total") == 2
    assert sample(metrics, "museflow_transactions_aborted_total") == 1
