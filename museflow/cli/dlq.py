"""``museflow dlq replay``: re-publish dead letters to the events topic once their cause is fixed."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import click
from rich.console import Console
from rich.table import Table

from museflow.cli.options import kafka_options, settings_from
from museflow.contracts.deadletter import NEVER_REPLAYED, REPLAYABLE_STAGES, DeadLetterReason, ReplaySelection

__all__ = ["dlq_group", "parse_moment"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_moment(text: str, option: str, now_ms: int) -> int:
    """Epoch ms of an ISO-8601 time with a zone (``2026-12-01T10:00:00Z``) or of a DURATION ago (``90m``, ``2h``)."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if found:
        return now_ms - int(float(found.group(1)) * _UNITS[found.group(2)] * 1000)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise click.BadParameter(f"{text!r}: use an ISO-8601 time with its zone (2026-12-01T10:00:00Z) or a "
                                 "duration ago (90s, 15m, 2h, 7d)", param_hint=option)
    return int(moment.timestamp() * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@click.group("dlq")
def dlq_group() -> None:
    """Work with the dead-letter topic (read it with `museflow tail --dlq`)."""


@dlq_group.command("replay")
@kafka_options
@click.option("--reason", "reasons", multiple=True, required=True,
              type=click.Choice([r.value for r in DeadLetterReason if r.value not in NEVER_REPLAYED]),
              help="Replay dead letters of this reason (repeatable; tenant_mismatch never is).")
@click.option("--since", required=True, metavar="ISO|DURATION",
              help="Dead letters that failed at or after this time (e.g. 2026-12-01T10:00:00Z, or 2h for two "
                   "hours ago).")
@click.option("--until", default=None, metavar="ISO|DURATION",
              help="... and before this time (default: now, so a replay never picks up its own dead letters).")
@click.option("--dry-run", is_flag=True, help="Count what would be replayed; publish nothing.")
@click.option("--timeout", type=click.FloatRange(min=1.0), default=30.0, show_default=True,
              help="Seconds to wait for the broker.")
@click.option("--group", "group_id", default=None,
              help="Consumer group id to read with (nothing is committed; default <app id>-dlq-replay-N).")
def dlq_replay(bootstrap_servers: str | None, topic_prefix: str | None, reasons: tuple[str, ...], since: str,
               until: str | None, dry_run: bool, timeout: float, group_id: str | None) -> None:
    """Re-publish dead letters of REASON that failed in [--since, --until) to the events topic.

    Each goes back with its original key and bytes, so the router decides again with the fix in
    place (a deployed model, a route, a larger topic limit). Only the router's and scorer's dead
    letters are events; others are counted and left. Event ids are preserved: replaying a range
    twice publishes its events twice, and tenants dedupe on event_id.
    """
    from museflow.kafka.deadletters import replay_dead_letters
    from museflow.kafka.schema_registry import serdes_from_settings

    settings = settings_from(bootstrap_servers, topic_prefix)
    now_ms = int(time.time() * 1000)
    since_ms = parse_moment(since, "--since", now_ms)
    until_ms = parse_moment(until, "--until", now_ms) if until else now_ms
    if since_ms >= until_ms:
        raise click.BadParameter("the range is empty: --since must be before --until", param_hint="--since")
    selection = ReplaySelection(frozenset(reasons), since_ms, until_ms)
    report = replay_dead_letters(settings, serdes_from_settings(settings), selection, dry_run=dry_run,
                                 timeout=timeout, group_id=group_id)
    verb = "would replay" if dry_run else "replayed"
    table = Table(title=f"{report.topic}: dead letters that failed {_iso(since_ms)} .. {_iso(until_ms)} "
                        f"({report.read} read)")
    table.add_column("reason")
    table.add_column(verb, justify="right")
    for reason in sorted(reasons):
        table.add_row(reason, str(report.replayed.get(reason, 0)))
    for why, n in sorted(report.skipped.items()):
        table.add_row(f"[dim]left: {why}[/dim]", f"[dim]{n}[/dim]")
    Console().print(table)
    if dry_run:
        click.echo(f"dry run: {report.selected} dead letters would go to {report.events_topic} "
                   f"(stages {', '.join(sorted(REPLAYABLE_STAGES))}); nothing was published")
        return
    delivered = report.delivery.acked
    click.echo(f"{delivered} of {report.selected} events re-published to {report.events_topic} with their original "
               "key and bytes (event ids preserved: tenants dedupe on event_id)")
    if report.delivery.failed:
        raise click.ClickException(f"{report.delivery.failed} replayed events were refused: "
                                   f"{dict(report.delivery.errors)}")
