"""``museflow tail``: decode and print the records of any museflow topic (table or JSON lines)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from museflow.config import Settings
from museflow.contracts.serde import Serdes
from museflow.errors import SerializationError
from museflow.kafka.clients import Record, iter_topic
from museflow.kafka.schema_registry import serdes_from_settings

__all__ = ["decode_record", "tail_command"]

_TIME_FIELDS = frozenset({"event_time", "scored_at", "label_time", "failed_at", "updated_at", "deployed_at",
                          "window_start_ms", "window_end_ms", "created_at_ms", "original_timestamp"})
_COLUMNS = {
    "TransactionEvent": ("event_id", "tenant", "intent", "event_time", "amount", "currency", "card_id", "channel"),
    "ScoredEvent": ("event_id", "tenant", "intent", "model", "model_version", "role", "raw_score", "score",
                    "map_version", "latency_ms"),
    "ScoreLogBatch": ("tenant", "intent", "model", "model_version", "role", "served", "map_version", "event_ids"),
    "Label": ("event_id", "tenant", "is_fraud", "label_time", "event_time", "cohort"),
    "DeadLetter": ("reason", "stage", "detail", "source", "tenant", "failed_at", "original"),
    "Route": ("tenant", "intent", "version", "champion", "candidates", "reference", "deleted", "updated_by"),
    "ModelDeployment": ("model", "version", "action", "artifact_format", "artifact_sha256", "deployed_at"),
    "QuantileMap": ("model", "model_version", "tenant", "intent", "version", "sample_count", "knots"),
    "ReferenceDistribution": ("name", "version", "kind", "knots"),
}
_HEX_PREVIEW = 24


def decode_record(serdes: Serdes, record: Record, hint: str | None) -> dict[str, Any]:
    """A JSON-ready dict for one Kafka record: coordinates, schema and the decoded fields (or the error)."""
    out: dict[str, Any] = {
        "topic": record.topic, "partition": record.partition, "offset": record.offset,
        "key": _text(record.key),
    }
    try:
        decoded = serdes.decode_any(record.value, hint=hint)
    except SerializationError as exc:
        out.update(schema=None, error={"reason": exc.reason, "detail": str(exc)},
                   value_hex=(record.value or b"")[:64].hex())
        return out
    out["schema"] = decoded.schema
    out["record"] = _jsonable(decoded.record)
    return out


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(raw).decode("ascii")


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode("ascii"), "hex_preview": value[:_HEX_PREVIEW].hex(),
                "length": len(value)}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and value != value:
        return "NaN"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return str(value)
    return value


def _cell(schema: str, name: str, row: dict[str, Any]) -> str:
    rec = row["record"]
    if schema == "DeadLetter" and name == "source":
        return f"{rec['source_topic']}[{rec['source_partition']}]@{rec['source_offset']}"
    if schema == "DeadLetter" and name == "original":
        original = rec["original_value"]
        return f"{original['length']}B {original['hex_preview']}{'…' if original['length'] > _HEX_PREVIEW else ''}"
    if name == "knots":
        return str(len(rec.get("knots_x") or ()))
    if name == "champion":
        return f"{rec['champion']['model']}@{rec['champion']['version']}"
    if name == "candidates":
        return ", ".join(f"{c['model']}@{c['version']} {c['mode']} {c['fraction']:g}" for c in rec["candidates"])
    if name == "reference" and isinstance(rec.get("reference"), dict):
        return f"{rec['reference']['name']}@{rec['reference']['version']}"
    value = rec.get(name)
    if name in _TIME_FIELDS and isinstance(value, int) and value > 0:
        return datetime.fromtimestamp(value / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def _topic_for(settings: Settings, topic: str | None, tenant: str | None, dlq: bool, score_log: bool,
               labels: bool) -> str:
    chosen = [t for t in (topic, settings.topics.scores(tenant) if tenant else None,
                          settings.topics.dlq if dlq else None, settings.topics.score_log if score_log else None,
                          settings.topics.labels if labels else None) if t]
    if len(chosen) != 1:
        raise click.UsageError("name exactly one of TOPIC, --tenant, --dlq, --score-log or --labels")
    name = chosen[0]
    if topic and not topic.startswith(settings.topic_prefix) and topic.startswith("museflow."):
        name = settings.topic_prefix + topic
    return name


@click.command("tail")
@click.argument("topic", required=False)
@click.option("--tenant", default=None, help="Tail the tenant's scored events (museflow.scores.TENANT).")
@click.option("--dlq", is_flag=True, help="Tail the dead-letter topic.")
@click.option("--score-log", is_flag=True, help="Tail the score log.")
@click.option("--labels", is_flag=True, help="Tail the labels topic.")
@click.option("--schema", "schema_name", default=None,
              help="Schema to decode with when neither the framing nor the topic name tells (e.g. Label).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
@click.option("--follow", "-f", is_flag=True, help="Keep waiting for new records (Ctrl-C to stop).")
@click.option("--limit", "-n", type=click.IntRange(min=0), default=None,
              help="Print at most N records (default: all; with --follow, until Ctrl-C).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds to wait for the broker when reading to the end.")
@click.option("--bootstrap-servers", default=None, help="Kafka bootstrap (default: MUSEFLOW_BOOTSTRAP_SERVERS).")
@click.option("--topic-prefix", default=None, help="Topic prefix (default: MUSEFLOW_TOPIC_PREFIX).")
@click.option("--group", "group_id", default=None,
              help="Consumer group id to read with (nothing is committed; default <app id>-reader-N). "
                   "A tenant under ACLs uses one named after it, e.g. acme-bank.tail.")
def tail_command(topic: str | None, tenant: str | None, dlq: bool, score_log: bool, labels: bool,
                 schema_name: str | None, as_json: bool, follow: bool, limit: int | None, timeout: float,
                 bootstrap_servers: str | None, topic_prefix: str | None, group_id: str | None) -> None:
    """Decode and print the records of TOPIC (from the beginning), picking the schema per record."""
    settings = Settings.from_env(bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix)
    name = _topic_for(settings, topic, tenant, dlq, score_log, labels)
    serdes = serdes_from_settings(settings)
    hint = schema_name or serdes.schema_for_topic(name, settings.topics)
    rows = _rows(serdes, iter_topic(settings, name, timeout=timeout, follow=follow, group_id=group_id), hint, limit)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, separators=(",", ":"), ensure_ascii=False))
        return
    console = Console()
    try:
        _print_table(console, name, rows, follow)
    except KeyboardInterrupt:
        return


def _rows(serdes: Serdes, records: Iterator[Record], hint: str | None, limit: int | None) -> Iterator[dict[str, Any]]:
    if limit == 0:
        return
    shown = 0
    try:
        for record in records:
            yield decode_record(serdes, record, hint)
            shown += 1
            if limit is not None and shown >= limit:
                return
    except KeyboardInterrupt:
        return


def _print_table(console: Console, topic: str, rows: Iterator[dict[str, Any]], follow: bool) -> None:
    if follow:
        for row in rows:
            console.print(_one_line(row), highlight=False, soft_wrap=True)
        return
    collected = list(rows)
    schemas = {row["schema"] for row in collected if row.get("schema")}
    schema = schemas.pop() if len(schemas) == 1 else None
    columns = _COLUMNS.get(schema or "", ())
    table = Table(title=f"{topic} ({len(collected)} records{', ' + schema if schema else ''})")
    table.add_column("p@offset", justify="right")
    table.add_column("key")
    for column in columns or ("schema", "record"):
        table.add_column(column, overflow="fold")
    for row in collected:
        where = f"{row['partition']}@{row['offset']}"
        if row.get("error"):
            table.add_row(where, row["key"] or "", f"[red]{row['error']['reason']}[/red]", row["error"]["detail"])
        elif columns and row["schema"] == schema:
            table.add_row(where, row["key"] or "", *(_cell(schema, c, row) for c in columns))
        else:
            table.add_row(where, row["key"] or "", row["schema"], json.dumps(row["record"])[:200])
    console.print(table)


def _one_line(row: dict[str, Any]) -> str:
    where = f"{row['topic']}[{row['partition']}]@{row['offset']}"
    if row.get("error"):
        return f"{where} [red]{row['error']['reason']}[/red] {row['error']['detail']}"
    schema = row["schema"]
    columns = _COLUMNS.get(schema, ())
    fields = " ".join(f"{c}={_cell(schema, c, row)}" for c in columns)
    return f"{where} {schema} {fields}"
