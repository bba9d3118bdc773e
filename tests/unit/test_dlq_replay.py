"""Which dead letters `museflow dlq replay` selects, and how it reads its time range (no broker)."""

from __future__ import annotations

from typing import Any

import click
import pytest

from museflow.cli.dlq import parse_moment
from museflow.contracts.deadletter import DeadLetterWriter, ReplaySelection
from museflow.contracts.serde import Serdes

NOW = 1_800_000_000_000


def letter(reason: str = "model_unavailable", stage: str = "scorer", failed_at: int = NOW - 1000,
           value: bytes | None = b"event-bytes") -> dict[str, Any]:
    writer = DeadLetterWriter("dlq", clock=lambda: failed_at / 1000)
    built = writer.build(value, reason=reason, detail="x", key=b"card-1", stage=stage)
    assert built is not None
    return Serdes().dead_letters.decode(built.value)


SELECT = ReplaySelection(frozenset({"model_unavailable", "no_route"}), NOW - 3_600_000, NOW)


@pytest.mark.parametrize(("kw", "why"), [
    ({}, None),
    ({"reason": "no_route", "stage": "router"}, None),
    ({"reason": "invalid_amount", "stage": "router"}, "another reason"),
    ({"failed_at": NOW - 3_600_001}, "outside the time range"),
    ({"failed_at": NOW}, "outside the time range"),  # --until is exclusive
    ({"failed_at": NOW - 3_600_000}, None),  # --since is inclusive
    ({"stage": "label-join"}, "stage label-join (not an event)"),
    ({"stage": "refit"}, "stage refit (not an event)"),
    ({"value": None}, "empty original (a tombstone)"),
])
def test_replay_selects_by_reason_time_range_and_stage(kw: dict[str, Any], why: str | None) -> None:
    assert SELECT.skip(letter(**kw)) == why


def test_a_selected_dead_letter_keeps_its_original_key_and_bytes() -> None:
    chosen = letter()
    assert SELECT.skip(chosen) is None
    assert (chosen["original_key"], chosen["original_value"]) == (b"card-1", b"event-bytes")


@pytest.mark.parametrize(("text", "expected"), [
    ("2h", NOW - 7_200_000), ("90s", NOW - 90_000), ("1.5m", NOW - 90_000), ("7d", NOW - 7 * 86_400_000),
    ("2027-01-15T08:00:00Z", 1_800_000_000_000), ("2027-01-15T09:00:00+01:00", 1_800_000_000_000),
])
def test_since_and_until_take_iso_times_or_durations_ago(text: str, expected: int) -> None:
    assert parse_moment(text, "--since", NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "2026-12-01T10:00:00", "-5m", "5 minutes"])
def test_a_moment_without_a_zone_or_unit_is_refused_with_the_option_named(text: str) -> None:
    with pytest.raises(click.BadParameter, match="ISO-8601"):
        parse_moment(text, "--until", NOW)


def test_tenant_mismatch_is_never_replayed() -> None:
    """Replaying a forged event to the shared topic would route it by the tenant field the ingest topic disproved."""
    with pytest.raises(ValueError, match="tenant_mismatch are never replayed"):
        ReplaySelection(frozenset({"tenant_mismatch", "no_route"}), NOW - 1, NOW)
    from click.testing import CliRunner

    from museflow.cli.main import cli

    result = CliRunner().invoke(cli, ["dlq", "replay", "--reason", "tenant_mismatch", "--since", "1h"])
    assert result.exit_code == 2 and "tenant_mismatch" in result.output
