"""The synthetic transaction generator: determinism, schema conformance, tenant mix, signal, drift."""

from __future__ import annotations

import math
from collections import Counter

import fastavro
import numpy as np
import pytest
from fastavro.validation import validate_many

from museflow.contracts.schemas_path import load_avro_schema
from museflow.demo.loadgen import (
    ACCOUNT_TAKEOVER,
    CARD_NOT_PRESENT,
    DEFAULT_TENANTS,
    GeneratedEvent,
    TenantProfile,
    TransactionGenerator,
)
from museflow.errors import ConfigError

START = 1_700_000_000_000


@pytest.fixture(scope="module")
def sample() -> list[GeneratedEvent]:
    return TransactionGenerator(seed=7, start_ms=START).generate(60_000)


def test_the_same_seed_gives_the_same_events_and_another_seed_does_not() -> None:
    a = TransactionGenerator(seed=42, start_ms=START).generate(500)
    b = TransactionGenerator(seed=42, start_ms=START).generate(500)
    c = TransactionGenerator(seed=43, start_ms=START).generate(500)
    assert a == b
    assert [g.event["event_id"] for g in a] != [g.event["event_id"] for g in c]


def test_events_conform_to_the_transaction_event_schema(sample: list[GeneratedEvent]) -> None:
    schema = fastavro.parse_schema(load_avro_schema("TransactionEvent"))
    assert validate_many([g.event for g in sample[:3000]], schema, raise_errors=True)
    assert set(sample[0].event) == {f["name"] for f in load_avro_schema("TransactionEvent")["fields"]}


def test_ids_are_unique_times_increase_and_amounts_are_finite(sample: list[GeneratedEvent]) -> None:
    events = [g.event for g in sample]
    assert len({e["event_id"] for e in events}) == len(events)
    times = [e["event_time"] for e in events]
    assert times == sorted(times) and times[0] >= START
    assert all(math.isfinite(e["amount"]) and e["amount"] >= 0 for e in events)
    assert {e["intent"] for e in events} == {CARD_NOT_PRESENT, ACCOUNT_TAKEOVER}
    assert {"velocity_1h", "account_age_days", "failed_logins_24h", "hour_of_day"} <= set(events[0]["attributes"])


def test_tenant_shares_and_fraud_rates_follow_the_profiles(sample: list[GeneratedEvent]) -> None:
    counts = Counter(g.event["tenant"] for g in sample)
    frauds = Counter(g.event["tenant"] for g in sample if g.is_fraud)
    for tenant in DEFAULT_TENANTS:
        share = counts[tenant.name] / len(sample)
        assert share == pytest.approx(tenant.weight, abs=0.01)
        rate = frauds[tenant.name] / counts[tenant.name]
        assert rate == pytest.approx(tenant.fraud_rate, rel=0.3)
    rates = sorted(frauds[t.name] / counts[t.name] for t in DEFAULT_TENANTS)
    assert rates[-1] > 3 * rates[0]


def test_each_intent_carries_its_own_fraud_signal(sample: list[GeneratedEvent]) -> None:
    def mean(intent: str, key: str, fraud: bool) -> float:
        values = [float(g.event["attributes"][key]) for g in sample
                  if g.event["intent"] == intent and g.is_fraud == fraud]
        return float(np.mean(values))

    assert mean(CARD_NOT_PRESENT, "velocity_1h", True) > 2 * mean(CARD_NOT_PRESENT, "velocity_1h", False)
    assert mean(ACCOUNT_TAKEOVER, "failed_logins_24h", True) > 4 * mean(ACCOUNT_TAKEOVER, "failed_logins_24h", False)
    cnp_logins = mean(CARD_NOT_PRESENT, "failed_logins_24h", True) / mean(CARD_NOT_PRESENT, "failed_logins_24h", False)
    assert cnp_logins < 2


def test_drift_shifts_feature_distributions_as_event_time_advances() -> None:
    gen = TransactionGenerator(seed=5, start_ms=START, drift=1.0, drift_ramp_s=60.0, rate=100.0)
    early = gen.generate(3000)
    later = gen.generate(3000, start_ms=START + 120_000)
    steady = TransactionGenerator(seed=5, start_ms=START, drift=0.0).generate(3000, start_ms=START + 120_000)

    def velocity(events: list[GeneratedEvent]) -> float:
        return float(np.mean([g.event["attributes"]["velocity_1h"] for g in events]))

    assert velocity(later) > velocity(early) + 0.5
    assert velocity(later) > velocity(steady) + 0.5
    instant = TransactionGenerator(seed=5, start_ms=START, drift=1.0, drift_ramp_s=0.0).generate(3000)
    assert velocity(instant) > velocity(steady) + 0.5


def test_the_clock_continues_between_calls_at_the_requested_rate() -> None:
    gen = TransactionGenerator(seed=1, start_ms=START, rate=1000.0)
    first = gen.generate(2000)
    second = gen.generate(10, rate=10.0)
    span = first[-1].event["event_time"] - first[0].event["event_time"]
    assert 1500 < span < 2500
    assert second[0].event["event_time"] > first[-1].event["event_time"]
    assert gen.generate(0) == []


def test_columns_match_events_for_fast_analysis() -> None:
    cols = TransactionGenerator(seed=2, start_ms=START).generate_columns(100)
    events = TransactionGenerator(seed=2, start_ms=START).generate(100)
    assert cols.event_id == [g.event["event_id"] for g in events]
    assert cols.is_fraud.tolist() == [g.is_fraud for g in events]
    np.testing.assert_array_equal(cols.amount, [g.event["amount"] for g in events])


def test_bad_profiles_and_parameters_are_refused() -> None:
    with pytest.raises(ConfigError, match="fraud_rate"):
        TenantProfile("t", 1.0, 1.5, ("i",))
    with pytest.raises(ConfigError, match="intent_shares"):
        TenantProfile("t", 1.0, 0.1, ("i", "j"), (1.0,))
    with pytest.raises(ConfigError, match="unique"):
        TransactionGenerator(tenants=(DEFAULT_TENANTS[0], DEFAULT_TENANTS[0]))
    with pytest.raises(ConfigError, match="drift"):
        TransactionGenerator(drift=2.0)


def test_custom_tenants_and_intents() -> None:
    solo = TenantProfile("solo", 1.0, 0.5, ("login",), currency="CHF", country="CH")
    events = TransactionGenerator(tenants=(solo,), seed=0, start_ms=START).generate(200)
    assert {g.event["tenant"] for g in events} == {"solo"}
    assert {g.event["intent"] for g in events} == {"login"}
    assert {g.event["currency"] for g in events} == {"CHF"}
    assert 0.35 < sum(g.is_fraud for g in events) / 200 < 0.65
