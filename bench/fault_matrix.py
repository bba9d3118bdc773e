"""Fault matrix on a local three-broker Kafka cluster: every event id checked after every fault.

Not a test: it prints a table. CI runs one short seeded schedule per guarantee
(``tests/integration/test_cluster_faults.py``, which calls :func:`run_one` from here).

It starts a :class:`~museflow.kafka.broker.LocalCluster` (three combined KRaft nodes, RF 3,
``min.insync.replicas=2``) under ``--home``, trains the demo models, and for each delivery
guarantee x fault: fresh topics at RF 3, three ``router,scorer`` workers with stable instance
ids (``w0``..``w2``) under a supervisor that restarts an exited worker as an orchestrator would
(backoff 2 s doubling to 30 s; every unplanned exit is counted, three of one worker is a crash
loop), steady traffic of unique event ids (1% malformed) at ``--rate``, the fault's schedule,
then it waits until every event is out and checks each event id against the tenant topics and
the dead-letter topic: lost, duplicates (outputs beyond the event's copies in the events topic;
exactly-once: as a ``read_committed`` tenant reads; events the load generator's own producer
wrote twice are counted apart),
aborted reads (records a ``read_committed`` reader returned that belong to an aborted
transaction according to the partition leader's log segments, parsed here), the time from the
end of the fault until the workers' lag is under 1,000 again, and worker exits.

    python bench/fault_matrix.py --quick              # shorter outages (all brokers down 60 s), 1 random schedule
    python bench/fault_matrix.py --seed 7             # the whole matrix (all down 3 min, 3 random schedules)
    python bench/fault_matrix.py --faults leader-kill,random --guarantees exactly_once
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from museflow.config import Settings
from museflow.demo.loadgen import TransactionGenerator
from museflow.demo.models import SHOWCASE_ROUTES
from museflow.demo.producing import ProduceSummary, produce_events
from museflow.demo.supervise import WorkerProcess
from museflow.errors import BrokerError
from museflow.kafka.broker import LocalCluster
from museflow.kafka.clients import Record, make_producer, read_topic
from museflow.kafka.lag import list_groups, read_lag
from museflow.kafka.schema_registry import serdes_from_settings

TENANTS = ("acme-bank", "globex-pay", "initech-fin")
GUARANTEES = ("at_least_once", "exactly_once")
FAULTS = ("worker-kill", "worker-pause", "leader-kill", "controller-kill", "all-down", "outage-gt-txn-timeout",
          "rolling-workers", "random")
LAG_OK = 1000
ROLES = ("router", "scorer")


@dataclass(frozen=True)
class Timing:
    """How long things last in one mode of the matrix."""

    warmup_s: float = 15.0
    tail_s: float = 15.0
    node_down_s: float = 20.0
    all_down_s: float = 180.0
    pause_s: float = 20.0
    worker_restart_delay_s: float = 5.0
    settle_timeout_s: float = 420.0
    random_steps: tuple[int, int] = (3, 5)


FULL = Timing()
QUICK = Timing(warmup_s=10.0, tail_s=10.0, node_down_s=15.0, all_down_s=60.0, random_steps=(2, 3))
CI = Timing(warmup_s=8.0, tail_s=6.0, node_down_s=10.0, all_down_s=30.0, random_steps=(1, 1))
"""Every mode waits up to 7 minutes for the last event: an exactly-once loop can block in
``send_offsets_to_transaction`` after a broker dies until the consumer's ``max.poll.interval.ms``
(5 min) evicts it; such an event is late, not lost (the lag column shows the stall)."""


# ---- schedules ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One fault action. ``target``: worker slot, node id or events partition (-1 = chosen at run time)."""

    action: str
    target: int = -1
    seconds: float = 0.0
    gap_s: float = 0.0

    def describe(self) -> str:
        what = self.action if self.target < 0 else f"{self.action}({self.target})"
        return f"+{self.gap_s:g}s {what}" + (f" {self.seconds:.0f}s" if self.seconds else "")


@dataclass(frozen=True)
class Schedule:
    name: str
    steps: tuple[Step, ...]

    def describe(self) -> str:
        return "; ".join(step.describe() for step in self.steps)


def named_schedule(fault: str, timing: Timing, txn_timeout_s: float, workers: int) -> Schedule:
    """The matrix's fixed faults."""
    if fault == "worker-kill":
        return Schedule(fault, (Step("worker-kill", 0),))
    if fault == "worker-pause":
        return Schedule(fault, (Step("worker-pause", 0, timing.pause_s),))
    if fault == "leader-kill":
        return Schedule(fault, (Step("leader-kill", 0, timing.node_down_s),))
    if fault == "controller-kill":
        return Schedule(fault, (Step("controller-kill", -1, timing.node_down_s),))
    if fault == "all-down":
        return Schedule(fault, (Step("all-stop", -1, timing.all_down_s),))
    if fault == "outage-gt-txn-timeout":
        return Schedule(fault, (Step("all-kill", -1, max(3 * txn_timeout_s, 30.0)),))
    if fault == "rolling-workers":
        return Schedule(fault, tuple(Step("worker-restart", i, gap_s=0.0 if i == 0 else 5.0)
                                     for i in range(workers)))
    raise SystemExit(f"unknown fault {fault!r}; choose from {', '.join(FAULTS)}")


_RANDOM_ACTIONS = ("worker-kill", "worker-pause", "worker-restart", "leader-kill", "controller-kill",
                   "node-kill", "node-stop")


def random_schedule(seed: int, timing: Timing, workers: int = 3, partitions: int = 6) -> Schedule:
    """A reproducible schedule: 2-5 faults (one at a time; at most one broker down) with random gaps."""
    rng = random.Random(seed)
    steps = []
    for _ in range(rng.randint(*timing.random_steps)):
        action = rng.choice(_RANDOM_ACTIONS)
        gap = round(rng.uniform(2.0, 10.0), 1)
        if action.startswith("worker"):
            seconds = round(rng.uniform(5.0, 25.0)) if action == "worker-pause" else 0.0
            steps.append(Step(action, rng.randrange(workers), seconds, gap))
        else:
            target = (rng.randrange(partitions) if action == "leader-kill"
                      else -1 if action == "controller-kill" else rng.randint(1, 3))
            steps.append(Step(action, target, round(rng.uniform(5.0, 30.0)), gap))
    return Schedule(f"random seed {seed}", tuple(steps))


def leader_kill_schedule(seed: int, timing: Timing, partitions: int = 6) -> Schedule:
    """The CI schedule: kill -9 the leader of a (seeded) events partition mid-stream, restart it."""
    rng = random.Random(seed)
    step = Step("leader-kill", rng.randrange(partitions), round(rng.uniform(0.8, 1.2) * timing.node_down_s))
    return Schedule(f"leader-kill seed {seed}", (step,))


# ---- workers under a supervisor ---------------------------------------------------------------------

@dataclass
class Slot:
    index: int
    worker: WorkerProcess
    held: bool = False
    exits: list[tuple[float, int | None]] = field(default_factory=list)
    restart_at: float | None = None


class Fleet:
    """Workers with stable instance ids, restarted when they exit unplanned (counted, with backoff)."""

    def __init__(self, settings: Settings, count: int, logs: Path) -> None:
        self.slots = [Slot(i, WorkerProcess(settings.replace(instance_id=f"w{i}"), roles=ROLES,
                                            log_path=logs / f"worker-w{i}.log")) for i in range(count)]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="fleet", daemon=True)

    def start(self, timeout: float = 180.0) -> None:
        for slot in self.slots:
            slot.worker.start()
        for slot in self.slots:
            slot.worker.wait_ready(timeout)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                for slot in self.slots:
                    if slot.held:
                        continue
                    now = time.monotonic()
                    if slot.restart_at is None and not slot.worker.alive():
                        proc = slot.worker.proc
                        slot.exits.append((now, proc.returncode if proc else None))
                        backoff = min(30.0, 2.0 * 2 ** (len(slot.exits) - 1))
                        slot.restart_at = now + backoff
                        say(f"  worker w{slot.index} exited (code {slot.exits[-1][1]}); restart in {backoff:.0f}s")
                    elif slot.restart_at is not None and now >= slot.restart_at:
                        slot.restart_at = None
                        slot.worker.start()

    def kill(self, i: int) -> None:
        with self._lock:
            self.slots[i].held = True
        self.slots[i].worker.kill()

    def release(self, i: int) -> None:
        """Start a held worker again (what the orchestrator does after a planned kill or stop)."""
        with self._lock:
            slot = self.slots[i]
            if not slot.worker.alive():
                slot.worker.start()
            slot.held = False

    def signal(self, i: int, sig: signal.Signals) -> None:
        proc = self.slots[i].worker.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)

    def restart(self, i: int, timeout: float = 180.0) -> None:
        """Graceful stop (SIGTERM) and start again, ready before returning."""
        with self._lock:
            self.slots[i].held = True
        self.slots[i].worker.stop(60)
        self.release(i)
        self.slots[i].worker.wait_ready(timeout)

    @property
    def unplanned_exits(self) -> int:
        return sum(len(s.exits) for s in self.slots)

    @property
    def crash_looped(self) -> bool:
        return any(len(s.exits) >= 3 for s in self.slots)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        for slot in self.slots:
            self.signal(slot.index, signal.SIGCONT)
            slot.worker.stop(30)

    def log_tails(self) -> str:
        return "\n".join(f"--- w{s.index}\n{s.worker.log_tail(15)}" for s in self.slots if s.exits)


# ---- lag ---------------------------------------------------------------------------------------------

class LagMonitor:
    """Total lag of the run's consumer groups every ``interval`` seconds (``None`` while unreadable).

    Sampled in a child process (``--sample-lag``): while brokers die, librdkafka's admin client
    can abort its process (``rd_kafka_enq_once_del_source_return: Assertion `eonce->refcnt > 0'
    failed`` took a whole matrix run down during the all-brokers-down fault); a sampler that dies
    is started again and counted.
    """

    def __init__(self, settings: Settings, interval: float = 2.0) -> None:
        self.settings, self.interval = settings, interval
        self.samples: list[tuple[float, int | None]] = []
        self.sampler_restarts = 0
        self._stop = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._thread = threading.Thread(target=self._run, name="lag", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        env = {**os.environ, **self.settings.to_env()}
        while not self._stop.is_set():
            self._proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--sample-lag", str(self.interval)],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                at, lag = line.split()
                self.samples.append((float(at), None if lag == "-" else int(lag)))
            self._proc.wait()
            if not self._stop.is_set():
                self.sampler_restarts += 1
                self.samples.append((time.monotonic(), None))
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
        self._thread.join(30)

    def last(self) -> int | None:
        return self.samples[-1][1] if self.samples else None

    def recovery(self, since: float) -> float | None:
        """Seconds from ``since`` to the first sample with lag under :data:`LAG_OK` (``None``: never)."""
        return next((t - since for t, lag in self.samples if t >= since and lag is not None and lag < LAG_OK), None)

    def peak(self, since: float) -> int:
        return max((lag for t, lag in self.samples if t >= since and lag is not None), default=0)


def sample_lag(interval: float) -> None:
    """The sampler child: ``<monotonic time> <total lag or ->`` per line until killed (settings from ``MUSEFLOW_*``)."""
    settings = Settings.from_env()
    logging.getLogger("museflow.librdkafka").setLevel(logging.CRITICAL)
    while True:
        at = time.monotonic()
        try:
            groups = [g for g in list_groups(settings, timeout=5) if g.startswith(settings.app_id)]
            lag = str(sum(r.lag for r in read_lag(settings, groups, timeout=5))) if groups else "-"
        except Exception:  # a cluster that is down answers nothing; the gap is the data
            lag = "-"
        print(at, lag, flush=True)
        time.sleep(max(0.0, interval - (time.monotonic() - at)))


# ---- faults ------------------------------------------------------------------------------------------

def wait_healthy(cluster: LocalCluster, timeout: float = 120.0) -> None:
    """Every node up and listed, no under-replicated partition: the next broker fault is a fair one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(cluster.live_brokers()) == len(cluster.node_ids) and cluster.under_replicated() == 0:
            return
        time.sleep(1)
    say(f"  cluster not fully replicated after {timeout:.0f}s "
        f"({cluster.under_replicated()} partitions under-replicated); going on")


class Chaos:
    """Runs a schedule's steps against the cluster and the fleet, one at a time."""

    def __init__(self, cluster: LocalCluster, fleet: Fleet, events_topic: str, timing: Timing) -> None:
        self.cluster, self.fleet, self.events_topic, self.timing = cluster, fleet, events_topic, timing
        self.done: list[str] = []

    def run(self, schedule: Schedule) -> None:
        for step in schedule.steps:
            time.sleep(step.gap_s)
            started = time.monotonic()
            note = getattr(self, "_" + step.action.replace("-", "_"))(step)
            self.done.append(f"{step.action}{f' {note}' if note else ''} ({time.monotonic() - started:.0f}s)")
            say(f"  {self.done[-1]}")

    def _worker_kill(self, step: Step) -> str:
        self.fleet.kill(step.target)
        time.sleep(self.timing.worker_restart_delay_s)
        self.fleet.release(step.target)
        return f"w{step.target}"

    def _worker_pause(self, step: Step) -> str:
        self.fleet.signal(step.target, signal.SIGSTOP)
        time.sleep(step.seconds)
        self.fleet.signal(step.target, signal.SIGCONT)
        return f"w{step.target} {step.seconds:.0f}s"

    def _worker_restart(self, step: Step) -> str:
        self.fleet.restart(step.target)
        return f"w{step.target}"

    def _leader_kill(self, step: Step) -> str:
        wait_healthy(self.cluster)
        partition = max(step.target, 0)
        node = self.cluster.partition_leader(self.events_topic, partition)
        return self._node_down(node, step.seconds, hard=True) + f" (leader of events[{partition}])"

    def _controller_kill(self, step: Step) -> str:
        wait_healthy(self.cluster)
        node = None
        deadline = time.monotonic() + 30
        while node is None and time.monotonic() < deadline:
            node = self.cluster.active_controller()
            if node is None:
                time.sleep(0.5)
        if node is None:
            raise BrokerError("no active controller found within 30 s")
        return self._node_down(node, step.seconds, hard=True) + " (active controller)"

    def _node_kill(self, step: Step) -> str:
        wait_healthy(self.cluster)
        return self._node_down(step.target, step.seconds, hard=True)

    def _node_stop(self, step: Step) -> str:
        wait_healthy(self.cluster)
        return self._node_down(step.target, step.seconds, hard=False)

    def _node_down(self, node: int, seconds: float, *, hard: bool) -> str:
        (self.cluster.kill_node if hard else self.cluster.stop_node)(node)
        time.sleep(seconds)
        self.cluster.start_node(node, timeout=180)
        return f"node {node} {seconds:.0f}s"

    def _all_stop(self, step: Step) -> str:
        self.cluster.stop()
        time.sleep(step.seconds)
        self.cluster.start(timeout=300)
        return f"{step.seconds:.0f}s"

    def _all_kill(self, step: Step) -> str:
        self.cluster.kill()
        time.sleep(step.seconds)
        self.cluster.start(timeout=300)
        return f"{step.seconds:.0f}s"


# ---- accounting --------------------------------------------------------------------------------------

@dataclass
class Tally:
    """Every produced event id against what a tenant (and the DLQ reader) reads."""

    isolation: str
    scored: Counter[str] = field(default_factory=Counter)
    dead: Counter[bytes] = field(default_factory=Counter)
    lost_good: set[str] = field(default_factory=set)
    lost_bad: int = 0
    good_in_dlq: int = 0
    positions: set[tuple[str, int, int]] = field(default_factory=set)
    copies: dict[str, list[tuple[str, int, int, int]]] = field(default_factory=dict)
    """event id -> (topic, partition, offset, scored_at ms) of each scored copy."""

    @property
    def lost(self) -> int:
        return len(self.lost_good) + self.lost_bad

    @property
    def duplicates(self) -> int:
        """Copies beyond the first, per event id (and per dead letter's original bytes)."""
        return sum(n - 1 for n in self.scored.values() if n > 1) + sum(n - 1 for n in self.dead.values() if n > 1)

    def pipeline_duplicates(self, inputs: InputCopies) -> int:
        """Copies beyond the number of copies of the event in the events topic: what museflow added.

        The load generator's producer is idempotent, yet across a whole-cluster outage librdkafka
        can send a batch again under a new epoch and the event lands in the events topic twice;
        museflow must then score each copy once, not each event id once.
        """
        return (sum(max(0, n - inputs.ids.get(i, 1)) for i, n in self.scored.items())
                + sum(max(0, n - inputs.values.get(v, 1)) for v, n in self.dead.items()))

    def duplicate_ids(self, inputs: InputCopies) -> list[str]:
        return sorted(i for i, n in self.scored.items() if n > inputs.ids.get(i, 1))

    @property
    def records(self) -> int:
        return sum(self.scored.values()) + sum(self.dead.values())


@dataclass
class InputCopies:
    """How many times each event id, and each malformed value, is in the events topic."""

    ids: Counter[str] = field(default_factory=Counter)
    bad_values: Counter[bytes] = field(default_factory=Counter)
    values: Counter[bytes] = field(default_factory=Counter)

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.ids.values() if n > 1) + sum(n - 1 for n in self.bad_values.values() if n > 1)


def input_copies(settings: Settings) -> InputCopies:
    serdes = serdes_from_settings(settings)
    out = InputCopies()
    values = [r.value for r in read_topic(settings, settings.topics.events, timeout=120) if r.value is not None]
    for value, decoded in zip(values, serdes.events.decode_many(values), strict=True):
        out.values[value] += 1
        if not isinstance(decoded, Exception) and decoded.get("event_id"):
            out.ids[str(decoded["event_id"])] += 1
        else:
            out.bad_values[value] += 1
    return out


def tally(settings: Settings, summary: ProduceSummary, isolation: str) -> Tally:
    serdes = serdes_from_settings(settings)
    out = Tally(isolation)

    def read(topic: str) -> list[Record]:
        return read_topic(settings, topic, isolation_level=isolation, timeout=60)

    for tenant in TENANTS:
        topic = settings.topics.scores(tenant)
        for r in read(topic):
            record = serdes.scored.decode(r.value)
            if record["tenant"] != tenant:
                raise AssertionError(f"{record['event_id']} of {record['tenant']} is in {tenant}'s topic")
            out.scored[str(record["event_id"])] += 1
            out.positions.add((topic, r.partition, r.offset))
            out.copies.setdefault(str(record["event_id"]), []).append(
                (topic, r.partition, r.offset, int(record["scored_at"])))
    dlq_ids: set[str] = set()
    for r in read(settings.topics.dlq):
        letter = serdes.dead_letters.decode(r.value)
        out.dead[letter["original_value"]] += 1
        out.positions.add((settings.topics.dlq, r.partition, r.offset))
        decoded = serdes.events.decode_many([letter["original_value"]])[0]
        if not isinstance(decoded, Exception) and decoded.get("event_id"):
            dlq_ids.add(str(decoded["event_id"]))
    good = {str(e["event_id"]) for e in summary.events}
    out.lost_good = good - set(out.scored) - dlq_ids
    out.good_in_dlq = len(good & dlq_ids)
    out.lost_bad = sum(1 for bad in summary.bad if bad.value not in out.dead)
    return out


_BATCH_HEADER = struct.Struct(">qiibIhiqqqhii")  # record batch v2, up to and including the record count
_TRANSACTIONAL, _CONTROL = 0x10, 0x20


def transactional_records(partition_dir: Path) -> dict[int, tuple[int, int, str]]:
    """Offset -> (producer id, producer epoch, ``commit`` | ``abort`` | ``open``) of every transactional record.

    Parsed from the partition's log segments (record batch v2): a transactional batch belongs to
    its producer's open transaction until that producer's next control batch (ABORT = type 0,
    COMMIT = type 1) in the partition — what the broker's ``read_committed`` filtering relies on,
    read here independently of it.
    """
    owners: dict[int, tuple[int, int, str]] = {}
    open_: dict[int, list[tuple[int, int, int]]] = {}
    for segment in sorted(partition_dir.glob("*.log")):
        data = segment.read_bytes()
        pos = 0
        while pos + _BATCH_HEADER.size <= len(data):
            (base, length, _epoch, magic, _crc, attributes, last_delta, _ts, _max_ts, producer_id, producer_epoch,
             _seq, _count) = _BATCH_HEADER.unpack_from(data, pos)
            end = pos + 12 + length
            if length <= 0 or end > len(data) or magic != 2:
                break
            if attributes & _CONTROL:
                marker = _control_type(data, pos + _BATCH_HEADER.size, end)
                outcome = "abort" if marker == 0 else "commit" if marker == 1 else "open"
                for first, last, epoch in open_.pop(producer_id, []):
                    owners.update({o: (producer_id, epoch, outcome) for o in range(first, last + 1)})
            elif attributes & _TRANSACTIONAL:
                open_.setdefault(producer_id, []).append((base, base + last_delta, producer_epoch))
            pos = end
    for producer_id, ranges in open_.items():
        for first, last, epoch in ranges:
            owners.update({o: (producer_id, epoch, "open") for o in range(first, last + 1)})
    return owners


def aborted_offsets(partition_dir: Path) -> tuple[set[int], int]:
    """Offsets of records in aborted transactions, and how many records are in still-open ones."""
    owners = transactional_records(partition_dir)
    return ({o for o, (_, _, outcome) in owners.items() if outcome == "abort"},
            sum(1 for _, _, outcome in owners.values() if outcome == "open"))


def _control_type(data: bytes, pos: int, end: int) -> int:
    """The type of the control record at ``pos`` (its key: version int16, type int16)."""
    _length, pos = _varint(data, pos)
    pos += 1  # attributes
    _ts, pos = _varint(data, pos)
    _offset, pos = _varint(data, pos)
    key_length, pos = _varint(data, pos)
    if key_length < 4 or pos + 4 > end:
        return -1
    return int(struct.unpack_from(">h", data, pos + 2)[0])


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (value >> 1) ^ -(value & 1), pos
        shift += 7


def aborted_reads(cluster: LocalCluster, settings: Settings, committed: Tally) -> tuple[int, int, int]:
    """(aborted records the reader returned, aborted records in the logs, records in open transactions)."""
    returned = in_log = still_open = 0
    for topic in [*(settings.topics.scores(t) for t in TENANTS), settings.topics.dlq]:
        for partition, leader in sorted(cluster.partition_leaders(topic).items()):
            inst = cluster.node(leader).instance() if leader >= 0 else None
            if inst is None:
                raise BrokerError(f"{topic}[{partition}] has no live leader to read its log from")
            offsets, open_count = aborted_offsets(Path(inst.data_dir) / f"{topic}-{partition}")
            in_log += len(offsets)
            still_open += open_count
            returned += sum(1 for t, p, o in committed.positions if t == topic and p == partition and o in offsets)
    return returned, in_log, still_open


def duplicate_report(cluster: LocalCluster, seen: Tally, inputs: InputCopies, limit: int = 5) -> list[str]:
    """Where the copies of duplicated event ids are and which transaction wrote each (from the leader's log)."""
    lines: list[str] = []
    for event_id in seen.duplicate_ids(inputs)[:limit]:
        copies = seen.copies[event_id]
        described = []
        for topic, partition, offset, scored_at in copies:
            owner: Any = "?"
            with contextlib.suppress(Exception):
                inst = cluster.node(cluster.partition_leader(topic, partition)).instance()
                if inst is not None:
                    owner = transactional_records(Path(inst.data_dir) / f"{topic}-{partition}").get(offset, "plain")
            described.append(f"{topic.rsplit('.', 1)[-1]}[{partition}]@{offset} scored_at={scored_at} txn={owner}")
        lines.append(f"{event_id} ({inputs.ids.get(event_id, 0)} in the events topic): " + "; ".join(described))
    return lines


# ---- one run -----------------------------------------------------------------------------------------

@dataclass
class Result:
    guarantee: str
    fault: str
    schedule: str
    events: int = 0
    producer_failures: int = 0
    lost: int = -1
    duplicates: int = -1
    """Outputs beyond the event's copies in the events topic (what museflow added)."""
    input_duplicates: int = 0
    """Events the load generator's producer wrote twice (counted, not museflow's)."""
    aborted_reads: int | None = None
    aborted_in_log: int | None = None
    open_transactions: int | None = None
    uncommitted_extra: int | None = None
    """Records a ``read_uncommitted`` reader sees beyond the ``read_committed`` one (must equal aborted_in_log)."""
    good_in_dlq: int = 0
    peak_lag: int = 0
    recovery_s: float | None = None
    settled_s: float | None = None
    exits: int = 0
    crash_loop: bool = False
    lag_sampler_restarts: int = 0
    actions: list[str] = field(default_factory=list)
    error: str = ""
    lost_sample: list[str] = field(default_factory=list)
    duplicate_sample: list[str] = field(default_factory=list)
    summary: ProduceSummary | None = field(default=None, repr=False)
    settings: Settings | None = field(default=None, repr=False)

    @property
    def passed(self) -> bool:
        exact = self.guarantee == "exactly_once"
        return (not self.error and self.lost == 0 and self.producer_failures == 0 and not self.crash_loop
                and self.good_in_dlq == 0
                and (not exact or (self.duplicates == 0 and self.aborted_reads == 0
                                   and self.aborted_in_log == self.uncommitted_extra)))


def deploy(settings: Settings, specs: Sequence[Path]) -> None:
    from museflow.contracts.topics import core_topics
    from museflow.control.routing import load_routes_yaml
    from museflow.kafka.admin import ensure_topics
    from museflow.kafka.plane import deploy as deploy_spec
    from museflow.kafka.plane import publish_route

    ensure_topics(settings, core_topics(settings))
    for spec in specs:
        deploy_spec(settings, str(spec))
    for route in load_routes_yaml(text=SHOWCASE_ROUTES):
        publish_route(settings, replace(route, version=1))


def run_settings(cluster: LocalCluster, guarantee: str, work: Path, tag: str) -> Settings:
    return Settings(
        bootstrap_servers=cluster.bootstrap, topic_prefix=f"fm{tag}.", app_id=f"fm-{tag}",
        replication_factor=3, partitions=6, processing_guarantee=guarantee, transaction_timeout_seconds=10.0,
        broker_session_timeout_seconds=6.0, new_group_start="earliest", metrics_enabled=False,
        data_dir=str(work / "data"), model_dir=str(work / "models"), log_level="critical")


def run_one(cluster: LocalCluster, specs: Sequence[Path], guarantee: str, fault: str, schedule: Schedule,
            work: Path, *, timing: Timing = FULL, workers: int = 3, rate: float = 100.0, seed: int = 1,
            cleanup: bool = True) -> Result:
    """One (guarantee, schedule) on ``cluster``: deploy, start workers and traffic, run the faults, settle, check."""
    tag = uuid.uuid4().hex[:8]
    work = work / f"{guarantee}-{fault}-{tag}"
    work.mkdir(parents=True, exist_ok=True)
    settings = run_settings(cluster, guarantee, work, tag)
    result = Result(guarantee, fault, schedule.describe(), settings=settings)
    fleet: Fleet | None = None
    lag: LagMonitor | None = None
    try:
        wait_healthy(cluster)
        _retry(lambda: deploy(settings, specs), "deploy")
        fleet = Fleet(settings, workers, work)
        fleet.start()
        lag = LagMonitor(settings)
        stop = threading.Event()
        box: dict[str, Any] = {}

        def traffic() -> None:
            try:
                producer = make_producer(settings, **{"message.timeout.ms": 900_000})
                box["summary"] = produce_events(settings, TransactionGenerator(seed=seed), None, rate=rate,
                                                bad_fraction=0.01, keep=True, seed=seed, stop=stop,
                                                producer=producer, flush_timeout_s=900)
            except BaseException as exc:  # reported in the row
                box["error"] = exc

        sender = threading.Thread(target=traffic, name="traffic", daemon=True)
        sender.start()
        time.sleep(timing.warmup_s)
        chaos = Chaos(cluster, fleet, settings.topics.events, timing)
        fault_at = time.monotonic()
        chaos.run(schedule)
        repaired = time.monotonic()
        result.actions = chaos.done
        time.sleep(timing.tail_s)
        stop.set()
        sender.join(960)
        if "error" in box:
            raise box["error"]
        summary: ProduceSummary = box["summary"]
        result.summary = summary
        result.events = summary.sent
        result.producer_failures = summary.failed
        isolation = "read_committed" if guarantee == "exactly_once" else "read_uncommitted"
        seen = _settle(settings, summary, isolation, timing.settle_timeout_s)
        result.settled_s = time.monotonic() - repaired
        _wait_lag_zero(lag, 30)
        seen = _retally(settings, summary, isolation) or seen
        lag.stop()
        inputs = input_copies(settings)
        result.lost, result.good_in_dlq = seen.lost, seen.good_in_dlq
        result.duplicates, result.input_duplicates = seen.pipeline_duplicates(inputs), inputs.duplicates
        result.lost_sample = sorted(seen.lost_good)[:5]
        result.peak_lag, result.recovery_s = lag.peak(fault_at), lag.recovery(repaired)
        result.lag_sampler_restarts = lag.sampler_restarts
        if guarantee == "exactly_once":
            checked = aborted_reads(cluster, settings, seen)
            result.aborted_reads, result.aborted_in_log, result.open_transactions = checked
            result.uncommitted_extra = tally(settings, summary, "read_uncommitted").records - seen.records
        if result.duplicates:
            result.duplicate_sample = duplicate_report(cluster, seen, inputs)
    except Exception as exc:  # one failed run is a row of the table, not the end of the matrix
        result.error = f"{type(exc).__name__}: {exc}"[:300]
        say("".join(traceback.format_exception(exc))[-3000:])
    finally:
        if lag is not None:
            lag.stop()
        if fleet is not None:
            result.exits, result.crash_loop = fleet.unplanned_exits, fleet.crash_looped
            if fleet.unplanned_exits:
                say(fleet.log_tails())
            fleet.stop()
        if cleanup and result.passed:
            _drop_topics(settings)
        elif not result.passed:
            say(f"  kept topics {settings.topic_prefix}* and logs in {work} for a look")
    return result


def _retry(call: Callable[[], None], what: str, attempts: int = 5) -> None:
    """A topic created a moment ago can be unknown to a broker that has not caught up with the metadata yet."""
    for attempt in range(attempts):
        try:
            call()
            return
        except Exception as exc:
            if attempt == attempts - 1:
                raise
            say(f"  {what} failed ({exc}); retrying")
            time.sleep(2.0)


def _settle(settings: Settings, summary: ProduceSummary, isolation: str, timeout: float) -> Tally:
    """Wait until every produced event is scored or dead-lettered (or ``timeout``); the last tally."""
    deadline = time.monotonic() + timeout
    seen: Tally | None = None
    while True:
        seen = _retally(settings, summary, isolation) or seen
        if (seen is not None and seen.lost == 0) or time.monotonic() > deadline:
            break
        time.sleep(5)
    if seen is None:
        raise BrokerError(f"could not read the output topics within {timeout:.0f}s")
    return seen


def _retally(settings: Settings, summary: ProduceSummary, isolation: str) -> Tally | None:
    try:
        return tally(settings, summary, isolation)
    except BrokerError:  # an open transaction holds a read_committed reader back; a leader moves
        return None


def _wait_lag_zero(lag: LagMonitor, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and lag.last() != 0:
        time.sleep(1)


def _drop_topics(settings: Settings) -> None:
    from museflow.kafka.admin import delete_topics, existing_topics

    with contextlib.suppress(Exception):
        delete_topics(settings, [t for t in existing_topics(settings) if t.startswith(settings.topic_prefix)])


# ---- the table ---------------------------------------------------------------------------------------

HEADER = ("guarantee", "fault", "events", "lost", "duplicates", "aborted reads", "dup. in input", "peak lag",
          "lag < 1k after",
          "worker exits", "crash loop", "result")


def row(r: Result) -> tuple[str, ...]:
    exact = r.guarantee == "exactly_once"
    aborted = "-" if not exact or r.aborted_reads is None else f"{r.aborted_reads} ({r.aborted_in_log} in log)"
    recovery = "-" if r.recovery_s is None else f"{r.recovery_s:.0f} s"
    verdict = "pass" if r.passed else ("error: " + r.error.split(":")[0] if r.error else "FAIL")
    return (r.guarantee.replace("_", "-"), r.fault, f"{r.events:,}", str(r.lost), f"{r.duplicates:,}", aborted,
            str(r.input_duplicates),
            f"{r.peak_lag:,}", recovery, str(r.exits), "yes" if r.crash_loop else "no", verdict)


def table(results: Sequence[Result]) -> str:
    rows = [HEADER, *(row(r) for r in results)]
    widths = [max(len(x[i]) for x in rows) for i in range(len(HEADER))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(x, widths, strict=True)) + " |" for x in rows]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=7, help="seeds the traffic and the random schedules")
    parser.add_argument("--quick", action="store_true", help="shorter outages and one random schedule")
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, from {', '.join(FAULTS)}")
    parser.add_argument("--guarantees", default=",".join(GUARANTEES))
    parser.add_argument("--random-schedules", type=int, default=None, help="default: 3, 1 with --quick")
    parser.add_argument("--rate", type=float, default=100.0, help="events/s of steady traffic")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--home", type=Path, default=None, help="cluster and work directory (default: a temp dir)")
    parser.add_argument("--heap", default="512m", help="JVM heap of each broker")
    parser.add_argument("--sample-lag", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sample_lag is not None:
        sample_lag(args.sample_lag)
        return 0
    logging.getLogger("museflow.librdkafka").setLevel(logging.CRITICAL)
    timing = QUICK if args.quick else FULL
    home = args.home or Path(f"/tmp/museflow-faults-{os.getpid()}")
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    guarantees = [g.strip() for g in args.guarantees.split(",") if g.strip()]
    randoms = args.random_schedules if args.random_schedules is not None else (1 if args.quick else 3)
    schedules: list[tuple[str, Schedule]] = []
    for fault in faults:
        if fault == "random":
            schedules += [("random", random_schedule(args.seed + i, timing, args.workers)) for i in range(randoms)]
        else:
            schedules.append((fault, named_schedule(fault, timing, 10.0, args.workers)))

    cluster = LocalCluster(f"faults-{os.getpid()}", home=home / "cluster", heap=args.heap)
    results: list[Result] = []
    started = time.monotonic()
    try:
        say(f"starting a 3-node cluster under {home / 'cluster'}")
        cluster.start(timeout=300, progress=say)
        say(f"cluster up at {cluster.bootstrap}, controller node {cluster.active_controller()}; training models")
        from museflow.demo.models import train_demo_models

        specs = [m.spec_path for m in train_demo_models(home / "models", seed=args.seed, n_events=60_000)]
        for fault, schedule in schedules:
            for guarantee in guarantees:
                say(f"[{guarantee}] {fault}: {schedule.describe()}")
                t0 = time.monotonic()
                result = run_one(cluster, specs, guarantee, fault, schedule, home / "runs", timing=timing,
                                 workers=args.workers, rate=args.rate, seed=args.seed)
                results.append(result)
                say(f"  -> {' | '.join(row(result))} ({time.monotonic() - t0:.0f}s; settled "
                    f"{result.settled_s or 0:.0f}s after the fault; lag sampler restarts "
                    f"{result.lag_sampler_restarts}; read_uncommitted extra {result.uncommitted_extra})"
                    + (f"; lost e.g. {result.lost_sample}" if result.lost_sample else ""))
                for line in result.duplicate_sample:
                    say(f"     duplicate {line}")
                if len(cluster.instance().nodes) < len(cluster.node_ids):
                    cluster.start(timeout=300)
    finally:
        cluster.destroy()
    print(f"\nFault matrix: 3-node KRaft cluster (RF 3, min.insync.replicas=2), {args.workers} router+scorer "
          f"workers, {args.rate:g} events/s, seed {args.seed}{', quick' if args.quick else ''}; "
          f"{(time.monotonic() - started) / 60:.0f} min\n")
    print(table(results))
    print("\nschedules:")
    for fault, schedule in schedules:
        print(f"- {fault}: {schedule.describe()}")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
