"""The router and scorer steps as pure functions over batches (the hot loop calls these).

The router stamps every forwarded event with the decision it made (route version, serving
model version and role, shadow model versions) in message headers, so the scorer applies
exactly that decision even if the route changes in between: no event is scored by a
half-applied configuration, and every output names the versions it used. The router never reads
an incoming event's headers: ``mf-*`` headers a producer put on ``museflow.events`` are dropped,
and every forward carries only the router's own stamp. The scorer checks the stamp it reads and
dead-letters a record whose stamp is malformed (``invalid_headers``) instead of guessing.

An event read from tenant T's ingest topic (``museflow.events.T``, which only T may write) must
name T: the topic is the authenticated fact, so any other ``tenant`` is a ``tenant_mismatch``
dead letter, never routed. Events on the shared events topic (platform producers) are trusted.

An event's clock-skew check is judged against the broker's clock when the record carries its
append time (the events topic is created with ``message.timestamp.type=LogAppendTime``), and
otherwise against the later of the worker's clock and the record's create time, so a worker
whose own clock is slow never rejects good traffic as ``clock_skew``.

:func:`drop_oversize` turns outputs larger than their topic's limit into one ``oversize`` dead
letter per source event (its other outputs withheld), so the rest of the batch goes on.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from museflow.config import TopicNames
from museflow.contracts.serde import Serdes
from museflow.contracts.topics import ingest_tenant
from museflow.contracts.validation import event_key
from museflow.control.routing import ModelRef
from museflow.control.state import PipelineState, rejection_key
from museflow.errors import MuseflowError, SerializationError, ValidationError
from museflow.model.features import source_value
from museflow.model.scoring import LoadedModel

__all__ = [
    "H_INGEST",
    "H_ROLE",
    "H_ROUTE",
    "H_SERVE",
    "H_SHADOW",
    "DeadLetterRequest",
    "FusedStep",
    "InMessage",
    "OutMessage",
    "RouterStep",
    "ScorerStep",
    "StepResult",
    "Validate",
    "drop_oversize",
    "record_size",
]

H_ROUTE, H_SERVE, H_ROLE, H_SHADOW, H_INGEST = "mf-route", "mf-serve", "mf-role", "mf-shadow", "mf-ingest-ms"
_SERVED_ROLES = ("champion", "canary")
_MAX_LONG = 2**63 - 1
_BATCH_OVERHEAD, _RECORD_OVERHEAD, _HEADER_OVERHEAD = 61, 21, 10
"""Bytes a Kafka record batch v2 adds around a record and each header, at most (varints at full width)."""
_HEADERS_ALLOWANCE = 1024
"""Room left for the router's stamp before a record's headers are counted exactly (they are ~100 bytes)."""
_LOG_RECORD_BUDGET = 256 * 1024
"""Largest score-log record the scorer builds; a group of more events is split over several records."""


@dataclass(frozen=True)
class InMessage:
    """A consumed message: bytes plus where it came from."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int = 0
    headers: Mapping[str, bytes] = field(default_factory=dict)
    log_append_time: bool = False
    """``timestamp_ms`` is the broker's clock when it appended the record (not the producer's)."""


@dataclass(frozen=True)
class OutMessage:
    """A message to produce; ``source`` is the event it carries (for an ``oversize`` dead letter)."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    source: InMessage | None = None
    primary: bool = False
    """Counted in :attr:`StepResult.primary` (the forward or scored event that serves the event)."""


@dataclass(frozen=True)
class DeadLetterRequest:
    """An input that cannot go on, with its reason code and detail."""

    message: InMessage
    reason: str
    detail: str
    tenant: str | None = None


@dataclass
class StepResult:
    """What a step produced from one batch.

    ``in_place`` holds the forwards a router kept for its own worker's scorer (fused mode):
    the message exactly as it would have gone to the model topic, and its decoded event.
    """

    out: list[OutMessage] = field(default_factory=list)
    dead: list[DeadLetterRequest] = field(default_factory=list)
    primary: int = 0
    in_place: list[tuple[InMessage, Mapping[str, Any]]] = field(default_factory=list)


class Validate(Protocol):
    """The router's accept/reject check (:func:`museflow.contracts.validation.validate_event`)."""

    def __call__(self, event: Mapping[str, Any], *, now_ms: int | None = None) -> None: ...


class RouterStep:
    """Decoded events in; forwards to model topics and dead-letter requests out."""

    def __init__(self, state: PipelineState, topics: TopicNames, validate: Validate,
                 clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.topics = topics
        self.validate = validate
        self.clock = clock
        self._model_topics: dict[str, str] = {}
        self._owners: dict[str, str | None] = {}

    def _model_topic(self, model: str) -> str:
        topic = self._model_topics.get(model)
        if topic is None:
            topic = self._model_topics[model] = self.topics.model(model)
        return topic

    def _owner(self, topic: str) -> str | None:
        """The tenant whose ingest topic ``topic`` is (None: the shared events topic)."""
        if topic not in self._owners:
            self._owners[topic] = ingest_tenant(self.topics, topic)
        return self._owners[topic]

    def run(self, messages: Sequence[InMessage], decoded: Sequence[Mapping[str, Any] | Exception],
            now_ms: int | None = None, *, in_place: Callable[[str], bool] | None = None) -> StepResult:
        """Route a batch; forwards to a model for which ``in_place(model)`` holds go to ``result.in_place``."""
        result = StepResult()
        metrics = self.state.metrics
        routes = self.state.routes
        now = now_ms if now_ms is not None else int(self.clock() * 1000)
        ingest = str(now).encode()
        arrived: Counter[tuple[str, str]] = Counter()  # counted once per batch: a counter inc costs ~2 µs
        routed: Counter[tuple[str, str, str]] = Counter()
        for message, event in zip(messages, decoded, strict=True):
            if isinstance(event, Exception):
                reason = getattr(event, "reason", "undecodable")
                result.dead.append(DeadLetterRequest(message, reason, str(event)))
                arrived["_invalid", "_invalid"] += 1
                continue
            tenant, intent = str(event.get("tenant")), str(event.get("intent"))
            owner = self._owner(message.topic)
            arrived[metrics.tenant_label(owner or tenant), metrics.intent_label(intent)] += 1
            if owner is not None and tenant != owner:
                result.dead.append(DeadLetterRequest(
                    message, "tenant_mismatch",
                    f"{message.topic}[{message.partition}]@{message.offset} is tenant {owner!r}'s ingest topic but "
                    f"the event names tenant {tenant[:80]!r}; only {owner!r} may write it, so the event is not "
                    "routed (publish each tenant's events to its own ingest topic)", owner))
                continue
            try:
                self.validate(event, now_ms=_reference_ms(message, now))
            except (ValidationError, SerializationError) as exc:
                result.dead.append(DeadLetterRequest(message, exc.reason, str(exc), None))
                continue
            route = routes.get(tenant, intent)
            if route is None:
                if routes.has_tenant(tenant):
                    result.dead.append(DeadLetterRequest(
                        message, "unknown_intent",
                        f"tenant {tenant!r} has no route for intent {intent!r}; known intents: "
                        f"{sorted(r.intent for r in routes if r.tenant == tenant)}", tenant))
                else:
                    result.dead.append(DeadLetterRequest(
                        message, "unknown_tenant", f"no route for tenant {tenant!r}; set one with "
                        "`museflow routes set`", None))
                continue
            decision = route.decide(str(event["event_id"]))
            key = message.key or event_key(event)
            base = ((H_ROUTE, str(route.version).encode()), (H_INGEST, ingest))
            same = [s for s in decision.shadows if s.name == decision.serve.name]
            headers = (*base, (H_SERVE, str(decision.serve).encode()), (H_ROLE, decision.role.encode()),
                       (H_SHADOW, ",".join(map(str, same)).encode()))
            value = message.value or b""
            serve = decision.serve.name
            if in_place is not None and in_place(serve):
                result.in_place.append((_forwarded(message, key, headers), event))
            else:
                result.out.append(OutMessage(self._model_topic(serve), key, value, headers, message, True))
                result.primary += 1
            routed[tenant, intent, serve] += 1
            others: dict[str, list[ModelRef]] = defaultdict(list)
            for shadow in decision.shadows:
                if shadow.name != serve:
                    others[shadow.name].append(shadow)
            for model, refs in others.items():
                shadow_headers = (*base, (H_SERVE, b""), (H_ROLE, b"shadow"),
                                  (H_SHADOW, ",".join(map(str, refs)).encode()))
                if in_place is not None and in_place(model):
                    result.in_place.append((_forwarded(message, key, shadow_headers), event))
                else:
                    result.out.append(OutMessage(self._model_topic(model), key, value, shadow_headers, message))
        for labels, n in arrived.items():
            metrics.child(metrics.events_in, *labels).inc(n)
        for routed_labels, n in routed.items():
            metrics.child(metrics.events_routed, *routed_labels).inc(n)
        return result


def _reference_ms(message: InMessage, now_ms: int) -> int:
    """What "now" is for the clock-skew check: the broker's append time, else the later of two clocks.

    The worker's clock alone would reject good traffic whenever it runs slow; a record's create
    time is the producer's clock, so without append times a producer whose clock runs ahead is
    caught only when ``event_time`` is ahead of its own record's timestamp.
    """
    if message.timestamp_ms > 0 and message.log_append_time:
        return message.timestamp_ms
    return max(now_ms, message.timestamp_ms)


def _forwarded(message: InMessage, key: bytes, headers: tuple[tuple[str, bytes], ...]) -> InMessage:
    """The message a scorer would have consumed from the model topic (source coordinates kept)."""
    return InMessage(key, message.value, message.topic, message.partition, message.offset,
                     message.timestamp_ms, dict(headers), message.log_append_time)


class FusedStep:
    """Router and scorer in one pass: events whose model this worker serves are scored in place.

    The same records come out as from a split deployment (router -> model topic -> scorer),
    without the model-topic hop; forwards to models served elsewhere still go to their topics.
    ``before_score`` sees the in-place messages first (the worker waits there for a model that
    is still loading).
    """

    def __init__(self, router: RouterStep, scorer: ScorerStep, serves: Callable[[str], bool],
                 before_score: Callable[[Sequence[InMessage]], None] | None = None) -> None:
        self.router, self.scorer, self.serves, self.before_score = router, scorer, serves, before_score

    def run(self, messages: Sequence[InMessage], decoded: Sequence[Mapping[str, Any] | Exception]) -> StepResult:
        routed = self.router.run(messages, decoded, in_place=self.serves)
        if not routed.in_place:
            return routed
        local = [m for m, _ in routed.in_place]
        if self.before_score is not None:
            self.before_score(local)
        scored = self.scorer.run(local, [e for _, e in routed.in_place])
        return StepResult(out=routed.out + scored.out, dead=routed.dead + scored.dead,
                          primary=routed.primary + scored.primary)


@dataclass
class _Task:
    """Rows of one batch that one model version scores."""

    rows: list[int] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)


@dataclass
class _Pending:
    """Records of one batch waiting for their one encode call, with their (topic, key)."""

    log: list[dict[str, Any]] = field(default_factory=list)
    log_to: list[tuple[str, bytes]] = field(default_factory=list)
    scored: list[dict[str, Any]] = field(default_factory=list)
    scored_to: list[tuple[str, bytes | None, InMessage]] = field(default_factory=list)


class ScorerStep:
    """Forwarded events in; scored events (tenant topics) and batched score-log records out."""

    def __init__(self, state: PipelineState, topics: TopicNames, serdes: Serdes,
                 monitor: Any | None = None, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.topics = topics
        self._encode_scored = serdes["ScoredEvent"].encode_many
        self._encode_log = serdes["ScoreLogBatch"].encode_many
        self.monitor = monitor
        self.clock = clock
        self._tenant_topics: dict[str, str] = {}
        self._watch: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}
        self._stamps: dict[tuple[bytes, bytes, bytes, bytes | None], tuple[str, str, tuple[str, ...]] | str] = {}

    def _tenant_topic(self, tenant: str) -> str:
        topic = self._tenant_topics.get(tenant)
        if topic is None:
            topic = self._tenant_topics[tenant] = self.topics.scores(tenant)
        return topic

    def missing_models(self, messages: Sequence[InMessage]) -> set[ModelRef]:
        """Serving model versions named by ``messages`` that this worker has not loaded."""
        wanted = {m.headers.get(H_SERVE, b"") for m in messages}
        missing = set()
        for raw in wanted:
            if raw:
                try:
                    ref = ModelRef.parse(raw.decode())
                except (MuseflowError, ValueError):
                    continue  # run() dead-letters it as invalid_headers
                if self.state.registry.find(ref.name, ref.version) is None:
                    missing.add(ref)
        return missing

    def run(self, messages: Sequence[InMessage], decoded: Sequence[Mapping[str, Any] | Exception]) -> StepResult:
        result = StepResult()
        tasks: dict[str, _Task] = defaultdict(_Task)
        events: list[Mapping[str, Any]] = []
        index: list[int] = []
        for i, (message, event) in enumerate(zip(messages, decoded, strict=True)):
            if isinstance(event, Exception):
                result.dead.append(DeadLetterRequest(message, getattr(event, "reason", "undecodable"), str(event)))
                continue
            stamp = self._stamp(message.headers)
            if isinstance(stamp, str):
                result.dead.append(DeadLetterRequest(
                    message, "invalid_headers", f"{message.topic}[{message.partition}]@{message.offset}: {stamp}; "
                    "only a museflow router writes model topics (check who else has Write on them)"))
                continue
            serve, role, shadows = stamp
            row = len(events)
            events.append(event)
            index.append(i)
            if serve:
                task = tasks[serve]
                task.rows.append(row)
                task.roles.append(role)
            for shadow in shadows:
                task = tasks[shadow]
                task.rows.append(row)
                task.roles.append("shadow")
        scored_at = self.clock()
        scored_ms = int(scored_at * 1000)
        pending = _Pending()
        for ref_text, task in tasks.items():
            self._score_task(ref_text, task, messages, events, index, scored_ms, result, pending)
        # One encode call per record type and batch (a call costs ~60 µs before any record); the
        # order within each topic is the order the records were built in.
        result.out.extend(OutMessage(topic, key, value) for (topic, key), value in zip(
            pending.log_to, self._encode_log(pending.log), strict=True))
        result.out.extend(OutMessage(topic, key, value, (), source, True) for (topic, key, source), value in zip(
            pending.scored_to, self._encode_scored(pending.scored), strict=True))
        return result

    def _stamp(self, headers: Mapping[str, bytes]) -> tuple[str, str, tuple[str, ...]] | str:
        """(serving model, its role, shadow models) from the router's headers, or what is wrong with them."""
        raw = (headers.get(H_SERVE, b""), headers.get(H_ROLE, b"champion"), headers.get(H_SHADOW, b""),
               headers.get(H_ROUTE))
        found = self._stamps.get(raw)
        if found is None:
            found = _read_stamp(*raw)
            if len(self._stamps) >= 4096:
                self._stamps.clear()
            self._stamps[raw] = found
        return found

    def _score_task(self, ref_text: str, task: _Task, messages: Sequence[InMessage],
                    events: Sequence[Mapping[str, Any]], index: Sequence[int], scored_ms: int,
                    result: StepResult, pending: _Pending) -> None:
        state, metrics = self.state, self.state.metrics
        ref = ModelRef.parse(ref_text)
        model = state.registry.find(ref.name, ref.version)
        rows = task.rows
        if model is None:
            why = state.rejected.get(rejection_key("deployment", ref), "not deployed")
            for row, role in zip(rows, task.roles, strict=True):
                if role != "shadow":
                    result.dead.append(DeadLetterRequest(
                        messages[index[row]], "model_unavailable", f"model {ref} is not loaded in this worker ({why})",
                        str(events[row].get("tenant"))))
            return
        batch_events = [events[r] for r in rows]
        try:
            scores = model.score(batch_events)
        except MuseflowError as exc:
            for row, role in zip(rows, task.roles, strict=True):
                if role != "shadow":
                    result.dead.append(DeadLetterRequest(messages[index[row]], "scoring_failed", str(exc),
                                                         str(events[row].get("tenant"))))
            return
        for feature, count in scores.defaults_by_feature().items():
            metrics.child(metrics.feature_values, ref.name, feature).inc(len(rows))
            if count:
                metrics.child(metrics.feature_defaults, ref.name, feature).inc(count)
        # Grouped by the route version the router stamped: the map is the one onto that version's
        # reference, even while a backlog routed before a reference change drains.
        groups: dict[tuple[str, str, int], list[int]] = defaultdict(list)
        for j, event in enumerate(batch_events):
            stamped = _route_version(messages[index[rows[j]]].headers)
            groups[(str(event["tenant"]), str(event["intent"]), stamped)].append(j)
        watch = self._watched(model)
        per_log_record = max(1, _LOG_RECORD_BUDGET // (170 + 9 * len(watch)))  # an event's bytes in a log record
        score_log = self.topics.score_log
        for (tenant, intent, route_version), positions in groups.items():
            route = state.routes.at(tenant, intent, route_version) or state.routes.get(tenant, intent)
            qmap = state.maps.resolve(ref.name, ref.version, tenant, intent,
                                      reference=route.reference if route is not None else None)
            pos = np.asarray(positions)
            mapped = qmap.apply(scores.probability[pos])
            if self.monitor is not None and route is not None and ref != route.champion:
                self.monitor.observe_candidate(tenant, intent, ref_text, mapped, scores.probability[pos],
                                               route.watch_thresholds)
            # the fields a ScoredEvent and its ScoreLogBatch share, built once per group
            shared = {"tenant": tenant, "intent": intent, "model": ref.name, "model_version": ref.version,
                      "route_version": route_version, "map_version": qmap.version,
                      "reference": f"{qmap.reference_name}@{qmap.reference_version}", "scored_at": scored_ms}
            tenant_topic = self._tenant_topic(tenant)
            log_key = f"{ref}/{tenant}".encode()
            latency = metrics.child(metrics.end_to_end_latency, tenant)
            roles: dict[str, int] = defaultdict(int)
            log_batches: dict[tuple[str, int], dict[str, Any]] = {}
            scored_records, scored_to = pending.scored, pending.scored_to
            n_served = 0
            served_mapped: list[float] = []
            served_raw: list[float] = []
            served_corrected: list[float] = []
            for k, j in enumerate(positions):
                row = rows[j]
                role = task.roles[j]
                message = messages[index[row]]
                event = batch_events[j]
                event_time = _millis(event["event_time"])
                raw, corrected, score = float(scores.raw[j]), float(scores.probability[j]), float(mapped[k])
                served = role != "shadow"
                log = log_batches.get((role, route_version))
                if log is None or len(log["event_ids"]) >= per_log_record:
                    if log is not None:
                        pending.log_to.append((score_log, log_key))
                        pending.log.append(log)
                    log = log_batches[(role, route_version)] = {
                        **shared, "role": role, "served": served, "event_ids": [], "event_times": [],
                        "raw_scores": [], "corrected_scores": [], "scores": [],
                        "features": {name: [] for name, _ in watch}}
                log["event_ids"].append(event["event_id"])
                log["event_times"].append(event_time)
                log["raw_scores"].append(raw)
                log["corrected_scores"].append(corrected)
                log["scores"].append(score)
                for name, source in watch:
                    log["features"][name].append(_feature(event, source))
                roles[role] += 1
                if not served:
                    continue
                ingest = _ingest_ms(message.headers)
                timings = {"route_to_score_ms": float(scored_ms - ingest)} if ingest else {}
                n_served += 1
                scored_to.append((tenant_topic, message.key, message))
                scored_records.append({
                    **shared, "role": role, "event_id": event["event_id"], "raw_score": raw,
                    "corrected_score": corrected, "score": score, "event_time": event_time,
                    "latency_ms": float(scored_ms - event_time), "timings": timings,
                })
                latency.observe(max(0.0, (scored_ms - event_time) / 1000))
                served_mapped.append(score)
                served_raw.append(raw)
                served_corrected.append(corrected)
            for log in log_batches.values():
                pending.log_to.append((score_log, log_key))
                pending.log.append(log)
            for role, count in roles.items():
                metrics.child(metrics.events_scored, tenant, intent, ref.name, role).inc(count)
            if n_served:
                result.primary += n_served
                metrics.child(metrics.events_out, tenant, intent).inc(n_served)
            if self.monitor is not None and served_mapped and route is not None:
                self.monitor.observe(tenant, np.asarray(served_mapped), np.asarray(served_raw),
                                     route.watch_thresholds, state.reference(route.reference), intent=intent,
                                     corrected=np.asarray(served_corrected))

    def _watched(self, model: LoadedModel) -> tuple[tuple[str, str], ...]:
        """(feature name, event source field) of the features the spec asks to monitor."""
        found = self._watch.get(model.key)
        if found is None:
            watched = set(model.spec.monitoring.features)
            found = self._watch[model.key] = tuple((f.name, f.source) for f in model.spec.features
                                                   if f.name in watched)
        return found


def record_size(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]] = ()) -> int:
    """Bytes a record takes in a Kafka record batch of its own, at most, before compression."""
    size = _BATCH_OVERHEAD + _RECORD_OVERHEAD + len(key or b"") + len(value or b"")
    for name, raw in headers:
        size += _HEADER_OVERHEAD + len(name.encode()) + len(raw)
    return size


def drop_oversize(result: StepResult, max_bytes: Callable[[str], int]) -> StepResult:
    """``result`` with every output larger than ``max_bytes(topic)`` turned into an ``oversize`` dead letter.

    All or nothing per event: an event with one output too large gets exactly one dead letter
    (its original bytes) and none of its outputs is sent, so conservation holds. An output that
    carries no single event (a score-log record) becomes a dead letter of its own bytes. Sizes are
    counted before compression (librdkafka checks ``message.max.bytes`` the same way).
    """
    limits: dict[str, int] = {}
    over: dict[tuple[str, int, int], tuple[OutMessage, int, int]] = {}
    orphans: dict[int, tuple[OutMessage, int, int]] = {}
    for out in result.out:
        limit = limits.get(out.topic)
        if limit is None:
            limit = limits[out.topic] = max_bytes(out.topic)
        rough = _BATCH_OVERHEAD + _RECORD_OVERHEAD + len(out.value) + (len(out.key) if out.key else 0)
        if rough + _HEADERS_ALLOWANCE <= limit:
            continue
        size = record_size(out.key, out.value, out.headers)
        if size <= limit:
            continue
        if out.source is None:
            orphans[id(out)] = (out, size, limit)
        else:
            over.setdefault(_coordinates(out.source), (out, size, limit))
    if not over and not orphans:
        return result
    kept: list[OutMessage] = []
    primary = result.primary
    for out in result.out:
        if id(out) in orphans or (out.source is not None and _coordinates(out.source) in over):
            primary -= out.primary
        else:
            kept.append(out)
    dead = list(result.dead)
    already = {_coordinates(d.message) for d in dead}
    for coordinates, (out, size, limit) in over.items():
        if coordinates not in already and out.source is not None:
            dead.append(DeadLetterRequest(out.source, "oversize", _oversize_detail(out.topic, size, limit)))
    for out, size, limit in orphans.values():
        dead.append(DeadLetterRequest(InMessage(out.key, out.value, out.topic, -1, -1), "oversize",
                                      _oversize_detail(out.topic, size, limit) + " (a record museflow built)"))
    return StepResult(out=kept, dead=dead, primary=primary, in_place=result.in_place)


def _coordinates(message: InMessage) -> tuple[str, int, int]:
    return message.topic, message.partition, message.offset


def _oversize_detail(topic: str, size: int, limit: int) -> str:
    return (f"the record for {topic} would take {size:,} bytes, over the {limit:,} that topic (max.message.bytes) "
            "and the producer (message.max.bytes) take; none of the event's outputs was sent. Shrink the event "
            "(e.g. its attributes) or raise the topic's limit, then `museflow dlq replay --reason oversize`")


def _read_stamp(serve_raw: bytes, role_raw: bytes, shadow_raw: bytes,
                route_raw: bytes | None) -> tuple[str, str, tuple[str, ...]] | str:
    """Parse and check a router's stamp: model references, a served role, a route version that is a long."""
    try:
        serve, role, shadow = serve_raw.decode(), role_raw.decode(), shadow_raw.decode()
    except UnicodeDecodeError:
        return "an mf-* header is not UTF-8"
    shadows = tuple(filter(None, shadow.split(",")))
    try:
        for text in (serve, *shadows) if serve else shadows:
            ModelRef.parse(text)
    except (MuseflowError, ValueError) as exc:
        return f"a model named in {H_SERVE}/{H_SHADOW} is malformed ({exc})"
    if not serve and not shadows:
        return f"neither {H_SERVE} nor {H_SHADOW} names a model"
    if serve and role not in _SERVED_ROLES:
        return f"{H_ROLE} {role[:40]!r} is not one of {_SERVED_ROLES}"
    if route_raw is not None and _stamped_version(route_raw) is None:
        return f"{H_ROUTE} {route_raw[:40]!r} is not a route version (a decimal from 0 to 2^63-1)"
    return serve, role, shadows


def _stamped_version(raw: bytes) -> int | None:
    if not raw.isdigit() or len(raw) > 19:
        return None
    version = int(raw)
    return version if version <= _MAX_LONG else None


def _route_version(headers: Mapping[str, bytes]) -> int:
    """The route version the router stamped (0 when absent: the route in force)."""
    return _stamped_version(headers.get(H_ROUTE, b"0")) or 0


def _ingest_ms(headers: Mapping[str, bytes]) -> int:
    raw = headers.get(H_INGEST, b"")
    return int(raw) if raw.isdigit() and len(raw) <= 19 else 0


def _millis(value: Any) -> int:
    if isinstance(value, int):
        return value
    timestamp = getattr(value, "timestamp", None)
    if timestamp is not None:
        return int(timestamp() * 1000)
    return int(value)


def _feature(event: Mapping[str, Any], source: str) -> float:
    """A watched feature's raw value as the score log stores it (NaN when missing or not a number)."""
    value = source_value(event, source)
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value) if value is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")
