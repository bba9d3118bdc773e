"""``museflow produce`` and ``museflow tail`` through click's CliRunner, on the real broker."""

from __future__ import annotations

import json

from click.testing import CliRunner

from museflow.cli.main import cli
from museflow.config import Settings
from museflow.contracts.deadletter import DeadLetterWriter
from museflow.contracts.serde import Serdes
from museflow.kafka.clients import make_producer


def _env(settings: Settings) -> dict[str, str]:
    return {"MUSEFLOW_BOOTSTRAP_SERVERS": settings.bootstrap_servers, "MUSEFLOW_TOPIC_PREFIX": settings.topic_prefix,
            "COLUMNS": "250"}


def test_produce_publishes_reports_and_tail_reads_back(settings: Settings) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["produce", "--count", "300", "--tenants", "acme-bank,initech-fin", "--seed", "5",
                                 "--bad-fraction", "0.1", "--labels", "--label-delay", "0.5", "--rate", "600",
                                 "--quiet"], env=_env(settings))
    assert result.exit_code == 0, result.output
    assert "sent" in result.output and "300" in result.output
    assert "acknowledged" in result.output and "achieved rate" in result.output
    assert "malformed:" in result.output and "labels sent" in result.output

    result = runner.invoke(cli, ["tail", "museflow.events", "--json"], env=_env(settings))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert len(rows) == 300
    good = [r for r in rows if r["schema"] == "TransactionEvent"]
    assert sum(r["record"]["tenant"] in ("acme-bank", "initech-fin") for r in good) >= 250
    assert {r["error"]["reason"] for r in rows if r["schema"] is None} <= {"undecodable", "unknown_schema"}

    result = runner.invoke(cli, ["tail", "--labels", "--limit", "5"], env=_env(settings))
    assert result.exit_code == 0, result.output
    assert "is_fraud" in result.output and "5 records" in result.output


def test_tail_shows_dead_letters_with_reason_source_and_hex(settings: Settings) -> None:
    from museflow.contracts.topics import core_topics
    from museflow.kafka.admin import ensure_topics

    ensure_topics(settings, core_topics(settings))
    producer = make_producer(settings)
    letter = DeadLetterWriter(settings.topics.dlq, serde=Serdes().dead_letters).build(
        b"\xde\xad\xbe\xef" * 10, reason="undecodable", detail="no framing", key=b"card-9",
        source_topic=settings.topics.events, source_partition=4, source_offset=17)
    assert letter is not None
    producer.produce(letter.topic, value=letter.value, key=letter.key)
    assert producer.flush(10) == 0
    runner = CliRunner()
    result = runner.invoke(cli, ["tail", "--dlq"], env=_env(settings))
    assert result.exit_code == 0, result.output
    assert "undecodable" in result.output and "no framing" in result.output
    assert f"{settings.topics.events}[4]@17" in result.output
    assert "deadbeefdeadbeef" in result.output
    result = runner.invoke(cli, ["tail", "--dlq", "--json"], env=_env(settings))
    (row,) = [json.loads(line) for line in result.output.splitlines()]
    assert row["record"]["reason"] == "undecodable"
    assert row["record"]["original_value"]["length"] == 40


def test_produce_exits_non_zero_when_nothing_can_be_delivered(settings: Settings) -> None:
    result = CliRunner().invoke(cli, ["produce", "--count", "1", "--quiet", "--tenants", "nobody"],
                                env=_env(settings))
    assert result.exit_code != 0
    assert "unknown tenants" in result.output


def test_tail_needs_exactly_one_topic(settings: Settings) -> None:
    result = CliRunner().invoke(cli, ["tail", "--dlq", "--score-log"], env=_env(settings))
    assert result.exit_code == 2 and "exactly one" in result.output
