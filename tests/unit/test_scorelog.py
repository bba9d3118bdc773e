"""The batched score log: one record per batch and group from the scorer, one row per score for readers."""

from __future__ import annotations

import math

import pytest

from museflow.config import TopicNames
from museflow.contracts.scorelog import ROW_FIELDS, rows
from museflow.contracts.serde import Serdes
from museflow.contracts.validation import validate_event
from museflow.control.state import PipelineState
from museflow.demo.loadgen import TransactionGenerator
from museflow.runtime.pipeline import FusedStep, InMessage, RouterStep, ScorerStep

TOPICS = TopicNames("u.")


@pytest.fixture(scope="module")
def fused(showcase_state: PipelineState) -> FusedStep:
    state = showcase_state
    return FusedStep(RouterStep(state, TOPICS, validate_event), ScorerStep(state, TOPICS, Serdes()), state.wants)


def test_one_score_log_record_per_model_version_tenant_intent_and_role_in_a_batch(fused: FusedStep) -> None:
    serdes = Serdes()
    events = [g.event for g in TransactionGenerator(seed=9).generate(400)]
    values = serdes.events.encode_many(events)
    messages = [InMessage(b"k", v, TOPICS.events, 0, i) for i, v in enumerate(values)]
    result = fused.run(messages, serdes.events.decode_many(values))

    batches = [serdes.score_log.decode(o.value) for o in result.out if o.topic == TOPICS.score_log]
    groups = [(b["model"], b["model_version"], b["tenant"], b["intent"], b["role"]) for b in batches]
    assert len(groups) == len(set(groups)) and len(batches) < 20  # a few records for 400 events, not 400+
    scored = [serdes.scored.decode(o.value) for o in result.out if o.topic.startswith("u.museflow.scores.")]
    assert len(scored) == len(events) == result.primary

    expanded = list(rows(batches))
    assert all(tuple(sorted(r)) == tuple(sorted(ROW_FIELDS)) for r in expanded)
    served = {r["event_id"]: r for r in expanded if r["served"]}
    assert set(served) == {e["event_id"] for e in events}
    for record in scored:  # what the tenant got is what the log says was served
        row = served[record["event_id"]]
        assert (row["score"], row["raw_score"], row["model_version"]) == (
            record["score"], record["raw_score"], record["model_version"])
        shared = sorted(set(record) & set(row))  # every field both carry agrees, not only the scores
        assert len(shared) == 14 and {k: row[k] for k in shared} == {k: record[k] for k in shared}, shared
    shadow = [r for r in expanded if r["role"] == "shadow"]
    acme_cnp = [e for e in events if e["tenant"] == "acme-bank" and e["intent"] == "card-not-present"]
    assert len(shadow) == len(acme_cnp) > 0 and not any(r["served"] for r in shadow)


def test_rows_align_every_column_and_feature_with_its_event() -> None:
    batch = {"tenant": "t", "intent": "i", "model": "m", "model_version": "1", "role": "champion", "served": True,
             "route_version": 2, "map_version": 3, "reference": "r@1", "scored_at": 10,
             "event_ids": ["a", "b"], "event_times": [1, 2], "raw_scores": [0.1, 0.2],
             "corrected_scores": [0.01, 0.02], "scores": [0.5, 0.6], "features": {"amount": [3.0, math.nan]}}
    a, b = rows([batch])
    assert (a["event_id"], a["event_time"], a["raw_score"], a["corrected_score"], a["score"], a["features"]) == (
        "a", 1, 0.1, 0.01, 0.5, {"amount": 3.0})
    assert b["event_id"] == "b" and math.isnan(b["features"]["amount"]) and b["route_version"] == 2


def test_rows_refuse_columns_of_different_lengths() -> None:
    batch = {"tenant": "t", "intent": "i", "model": "m", "model_version": "1", "role": "champion", "served": True,
             "route_version": 2, "map_version": 3, "reference": "r@1", "scored_at": 10,
             "event_ids": ["a", "b"], "event_times": [1], "raw_scores": [0.1, 0.2],
             "corrected_scores": [0.01, 0.02], "scores": [0.5, 0.6], "features": {}}
    with pytest.raises(ValueError):
        list(rows([batch]))
