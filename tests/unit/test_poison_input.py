"""Poison input in the core: oversize outputs, forged internal headers, a worker clock that runs slow.

- An event whose output would exceed its topic's limit becomes exactly one ``oversize`` dead
  letter with its original bytes, none of its outputs is sent, and the rest of the batch goes on.
- ``mf-*`` headers on an incoming event change nothing: the router stamps its own; a model-topic
  record with a malformed stamp is an ``invalid_headers`` dead letter, never a crash.
- A worker whose clock is 10 minutes slow does not reject good traffic as ``clock_skew``: the
  check is judged against the broker's append time (or the record's create time).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from museflow.config import TopicNames
from museflow.contracts.serde import Serdes
from museflow.contracts.validation import validate_event
from museflow.control.state import PipelineState
from museflow.demo.loadgen import TransactionGenerator
from museflow.runtime.pipeline import (
    H_INGEST,
    H_ROLE,
    H_ROUTE,
    H_SERVE,
    H_SHADOW,
    DeadLetterRequest,
    FusedStep,
    InMessage,
    OutMessage,
    RouterStep,
    ScorerStep,
    StepResult,
    drop_oversize,
    record_size,
)

TOPICS = TopicNames("u.")
TIMING = ("scored_at", "latency_ms", "timings")
NOW_MS = int(time.time() * 1000)
SLOW = 600.0  # the worker's clock is 10 minutes behind


@dataclass
class Core:
    state: PipelineState
    serdes: Serdes

    def router(self, clock_offset: float = 0.0) -> RouterStep:
        return RouterStep(self.state, TOPICS, validate_event, clock=lambda: NOW_MS / 1000 + clock_offset)

    def scorer(self) -> ScorerStep:
        return ScorerStep(self.state, TOPICS, self.serdes)


@pytest.fixture(scope="module")
def core(showcase_state: PipelineState) -> Iterator[Core]:
    yield Core(showcase_state, Serdes())


def events(n: int, seed: int = 11, **changes: Any) -> list[dict[str, Any]]:
    out = []
    for g in TransactionGenerator(seed=seed).generate(n, start_ms=NOW_MS - 60_000):
        out.append({**g.event, **changes})
    return out


def messages(values: list[bytes], headers: dict[str, bytes] | None = None, timestamp_ms: int = 0,
             log_append_time: bool = False) -> list[InMessage]:
    return [InMessage(b"card-%d" % i, v, TOPICS.events, 0, i, timestamp_ms, dict(headers or {}), log_append_time)
            for i, v in enumerate(values)]


def scored_records(core: Core, result: StepResult) -> list[dict[str, Any]]:
    out = [core.serdes.scored.decode(o.value) for o in result.out if o.topic.startswith("u.museflow.scores.")]
    return sorted(({k: v for k, v in r.items() if k not in TIMING} for r in out), key=lambda r: r["event_id"])


def route_then_score(core: Core, msgs: list[InMessage], router: RouterStep | None = None
                     ) -> tuple[StepResult, StepResult]:
    routed = (router or core.router()).run(msgs, core.serdes.events.decode_many([m.value for m in msgs]))
    forwarded = [InMessage(o.key, o.value, o.topic, 0, i, 0, dict(o.headers)) for i, o in enumerate(routed.out)]
    scored = core.scorer().run(forwarded, core.serdes.events.decode_many([m.value for m in forwarded]))
    return routed, scored


# ---- oversize -----------------------------------------------------------------------------------------

def _source(offset: int, value: bytes = b"v") -> InMessage:
    return InMessage(b"k", value, TOPICS.events, 0, offset)


def test_an_oversize_forward_becomes_one_dead_letter_and_withholds_the_events_other_outputs() -> None:
    big, small = _source(1, b"x" * 5000), _source(2)
    result = StepResult(out=[
        OutMessage("model.a", b"k", big.value or b"", ((H_SERVE, b"a@1"),), big, True),
        OutMessage("model.b", b"k", big.value or b"", ((H_SHADOW, b"b@1"),), big),  # its shadow forward
        OutMessage("model.a", b"k", b"v", (), small, True),
        OutMessage("u.museflow.score-log", b"log", b"l" * 100),
    ], primary=2)
    checked = drop_oversize(result, lambda topic: 4096)
    assert [(o.topic, o.source) for o in checked.out] == [("model.a", small), ("u.museflow.score-log", None)]
    assert checked.primary == 1
    [dead] = checked.dead
    assert (dead.reason, dead.message.value, dead.message.offset) == ("oversize", b"x" * 5000, 1)
    assert "4,096" in dead.detail and "museflow dlq replay" in dead.detail


def test_the_limit_is_per_topic_and_counts_key_headers_and_batch_overhead() -> None:
    src = _source(1, b"x" * 1000)
    fits = record_size(b"k", b"x" * 1000, ((H_SERVE, b"a@1"),))
    out = OutMessage("t", b"k", b"x" * 1000, ((H_SERVE, b"a@1"),), src, True)
    assert drop_oversize(StepResult(out=[out], primary=1), lambda t: fits).out == [out]
    assert [d.reason for d in drop_oversize(StepResult(out=[out], primary=1), lambda t: fits - 1).dead] == ["oversize"]
    assert fits > 1000 + 1 + len(H_SERVE) + 3  # overhead is counted, not just the payload


def test_an_event_already_dead_lettered_gets_no_second_dead_letter_and_a_built_record_is_dead_lettered_itself(
        ) -> None:
    src = _source(3, b"y" * 9000)
    result = StepResult(out=[OutMessage("model.b", b"k", b"y" * 9000, (), src),
                             OutMessage("u.museflow.score-log", b"log", b"z" * 9000)],
                        dead=[DeadLetterRequest(src, "model_unavailable", "not loaded")])
    checked = drop_oversize(result, lambda topic: 4096)
    assert checked.out == []
    assert [(d.reason, d.message.topic, d.message.offset) for d in checked.dead] == [
        ("model_unavailable", TOPICS.events, 3), ("oversize", "u.museflow.score-log", -1)]


def test_nothing_changes_when_everything_fits() -> None:
    result = StepResult(out=[OutMessage("t", b"k", b"v" * 100, (), _source(1), True)], primary=1)
    assert drop_oversize(result, lambda topic: 1_000_000) is result


def test_a_real_oversize_event_is_dead_lettered_by_the_router_path_and_its_neighbours_are_scored(core: Core) -> None:
    batch = events(20)
    batch[7] = {**batch[7], "attributes": {f"a{i}": float(i) for i in range(3000)}}
    values = core.serdes.events.encode_many(batch)
    msgs = messages(values)
    routed = drop_oversize(core.router().run(msgs, core.serdes.events.decode_many(values)), lambda t: 16_384)
    assert [(d.reason, d.message.value) for d in routed.dead] == [("oversize", values[7])]
    assert routed.primary == 19 and all(o.source is not msgs[7] for o in routed.out)


def test_score_log_records_are_split_so_a_large_batch_never_builds_an_oversize_one(core: Core) -> None:
    batch = events(4000, seed=12, tenant="initech-fin", intent="card-not-present", event_id=None)
    for i, e in enumerate(batch):
        e["event_id"] = f"e{i:04d}-" + "x" * 100
    values = core.serdes.events.encode_many(batch)
    router = core.router()
    result = FusedStep(router, core.scorer(), core.state.wants).run(messages(values),
                                                                   core.serdes.events.decode_many(values))
    logs = [o for o in result.out if o.topic == TOPICS.score_log]
    assert len(logs) > 1 and max(len(o.value) for o in logs) <= 256 * 1024
    ids = [i for o in logs for i in core.serdes.score_log.decode(o.value)["event_ids"]]
    assert sorted(ids) == sorted(e["event_id"] for e in batch)


# ---- forged internal headers ------------------------------------------------------------------------

FORGED = [
    {H_ROUTE: b"not-a-number"},
    {H_ROUTE: b"7"},  # a route version that does not exist
    {H_ROUTE: b"9" * 40, H_INGEST: b"9" * 40},  # numbers too large for a long
    {H_SERVE: b"\xff\xfe\xfa", H_ROLE: b"\x80", H_SHADOW: b"\xc3\x28"},  # not UTF-8
    {H_SERVE: b"ato@1", H_ROLE: b"canary", H_SHADOW: b"fraud-cnp@2,ato@1"},  # a plausible forged decision
    {H_SERVE: b"", H_ROLE: b"shadow", H_SHADOW: b""},
]


@pytest.mark.parametrize("forged", FORGED, ids=[",".join(f) + f"-{i}" for i, f in enumerate(FORGED)])
def test_forged_mf_headers_on_events_change_no_decision(core: Core, forged: dict[str, bytes]) -> None:
    values = core.serdes.events.encode_many(events(200))
    clean_routed, clean_scored = route_then_score(core, messages(values))
    routed, scored = route_then_score(core, messages(values, forged))
    assert not routed.dead and not scored.dead and routed.primary == clean_routed.primary == 200

    def stamps(result: StepResult) -> list[tuple[str, bytes | None, bytes, dict[str, bytes]]]:
        return [(o.topic, o.key, o.value, {k: v for k, v in o.headers if k != H_INGEST}) for o in result.out]
    assert stamps(routed) == stamps(clean_routed)
    assert scored_records(core, scored) == scored_records(core, clean_scored)


def test_forged_mf_headers_change_no_decision_when_scored_in_place(core: Core) -> None:
    values = core.serdes.events.encode_many(events(200, seed=13))
    fused = FusedStep(core.router(), core.scorer(), core.state.wants)
    clean = fused.run(messages(values), core.serdes.events.decode_many(values))
    for forged in FORGED:
        result = fused.run(messages(values, forged), core.serdes.events.decode_many(values))
        assert not result.dead and scored_records(core, result) == scored_records(core, clean)


MALFORMED_STAMPS = [
    ({H_SERVE: b"\xff\xfe", H_ROLE: b"champion"}, "not UTF-8"),
    ({H_SERVE: b"nonsense", H_ROLE: b"champion"}, "malformed"),
    ({H_SERVE: b"fraud-cnp@1", H_ROLE: b"admin"}, "is not one of"),
    ({H_SERVE: b"fraud-cnp@1", H_ROUTE: b"abc"}, "not a route version"),
    ({H_SERVE: b"fraud-cnp@1", H_ROUTE: b"9" * 25}, "not a route version"),
    ({H_SERVE: b"fraud-cnp@1", H_ROUTE: b"-1"}, "not a route version"),
    ({H_SERVE: b"", H_SHADOW: b"fraud-cnp@2,../../etc"}, "malformed"),
    ({}, "names a model"),
]


def test_a_malformed_stamp_on_a_model_topic_is_an_invalid_headers_dead_letter(core: Core) -> None:
    good = core.serdes.events.encode_many(events(len(MALFORMED_STAMPS) + 2, seed=14, tenant="initech-fin",
                                                 intent="card-not-present"))
    stamped = [{H_SERVE: b"fraud-cnp@1", H_ROLE: b"champion", H_ROUTE: b"1", H_INGEST: b"garbage"}]
    all_headers = [*stamped, *(h for h, _ in MALFORMED_STAMPS), {H_SERVE: b"fraud-cnp@1"}]
    msgs = [InMessage(b"k", v, TOPICS.model("fraud-cnp"), 0, i, 0, h) for i, (v, h) in enumerate(
        zip(good, all_headers, strict=True))]
    scorer = core.scorer()
    assert scorer.missing_models(msgs) == set()
    result = scorer.run(msgs, core.serdes.events.decode_many(good))
    assert result.primary == 2  # the well-stamped first and last (a garbage ingest time only drops a timing)
    assert [d.reason for d in result.dead] == ["invalid_headers"] * len(MALFORMED_STAMPS)
    for dead, (_, why) in zip(result.dead, MALFORMED_STAMPS, strict=True):
        assert why in dead.detail and dead.message.value is not None


# ---- clock skew ---------------------------------------------------------------------------------------

def test_a_worker_10_minutes_slow_scores_good_traffic_judged_by_the_brokers_clock(core: Core) -> None:
    values = core.serdes.events.encode_many(events(100, seed=15, event_time=NOW_MS))
    slow = core.router(clock_offset=-SLOW)
    appended = slow.run(messages(values, timestamp_ms=NOW_MS, log_append_time=True),
                        core.serdes.events.decode_many(values))
    created = slow.run(messages(values, timestamp_ms=NOW_MS), core.serdes.events.decode_many(values))
    assert not appended.dead and not created.dead and appended.primary == created.primary == 100
    # without any record timestamp the worker's own clock is all there is, and it is 10 minutes behind:
    unstamped = slow.run(messages(values), core.serdes.events.decode_many(values))
    assert {d.reason for d in unstamped.dead} == {"clock_skew"}


def test_an_event_from_the_future_is_still_clock_skew_by_the_brokers_clock(core: Core) -> None:
    values = core.serdes.events.encode_many(events(5, seed=16, event_time=NOW_MS + 3_600_000))
    fast_worker = core.router(clock_offset=+7200.0)  # a worker clock running ahead does not hide it either
    result = fast_worker.run(messages(values, timestamp_ms=NOW_MS, log_append_time=True),
                             core.serdes.events.decode_many(values))
    assert [d.reason for d in result.dead] == ["clock_skew"] * 5
