"""``museflow rehearse``: a candidate on retained traffic before any shadow traffic."""

from __future__ import annotations

import re
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from museflow.cli.options import kafka_options, settings_from

__all__ = ["rehearse_command"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``24h``, ``7d`` -> seconds."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if not found:
        raise click.BadParameter(f"{text!r}: use a number and a unit, e.g. 90s, 15m, 24h, 7d", param_hint="--since")
    return float(found.group(1)) * _UNITS[found.group(2)]


@click.command("rehearse")
@kafka_options
@click.argument("candidate")
@click.option("--routes", "routes", multiple=True, metavar="TENANT/INTENT",
              help="Routes to rehearse on (repeatable; default: every route whose champion is another version "
                   "of the candidate's model).")
@click.option("--since", default="24h", show_default=True, help="Replay the last DURATION (e.g. 90m, 24h, 7d).")
@click.option("--from", "start", default=None, metavar="ISO-TIME", help="Replay from this time (with --to).")
@click.option("--to", "end", default=None, metavar="ISO-TIME", help="Replay up to this time (default: now).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for rehearsal.md, rehearsal.json and plots (default rehearsal-NAME-VERSION).")
@click.option("--publish/--no-publish", default=True, show_default=True,
              help="Publish the candidate's maps fitted on the replay (source: rehearsal), so it can be promoted.")
def rehearse_command(bootstrap_servers: str | None, topic_prefix: str | None, candidate: str, routes: tuple[str, ...],
                     since: str, start: str | None, end: str | None, out_dir: Path | None, publish: bool) -> None:
    """Replay retained traffic through the champion and CANDIDATE (NAME@VERSION), fit its maps, predict alert rates."""
    from museflow.control.routing import ModelRef
    from museflow.kafka.rehearse import rehearse

    settings = settings_from(bootstrap_servers, topic_prefix)
    ref = ModelRef.parse(candidate)
    now_ms = int(time.time() * 1000)
    end_ms = _moment(end, "--to") if end else now_ms
    start_ms = _moment(start, "--from") if start else end_ms - int(parse_duration(since) * 1000)
    if start_ms >= end_ms:
        raise click.BadParameter("the window is empty: --from must be before --to", param_hint="--from")
    out = out_dir or Path(f"rehearsal-{ref.name}-{ref.version}")
    console = Console()
    with Progress(TextColumn("replaying"), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f} events"),
                  TextColumn("{task.fields[rate]:,.0f} events/s"), TimeRemainingColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task("replay", total=None, rate=0.0)
        result = rehearse(settings, ref, (start_ms, end_ms), routes=routes, out_dir=out, publish=publish,
                          progress=lambda p: bar.update(task, completed=p.done, total=p.total, rate=p.rate))
    table = Table("route", "events", "rank agreement", "map", "verdict", title=f"rehearsal of {ref}")
    for name, info in result.report.routes.items():
        fitted = result.report.maps.get(name)
        table.add_row(name, f"{info['samples']:,}", f"{info['rank_agreement']:.3f}",
                      f"v{fitted['version']} ({fitted['samples']:,} scores)" if fitted else "-", info["verdict"])
    console.print(table)
    console.print(f"{result.events:,} events replayed; maps published: {', '.join(result.published) or 'none'}; "
                  f"report: {result.report_path}")


def _moment(text: str, option: str) -> int:
    from museflow.errors import ConfigError
    from museflow.kafka.offsets import parse_start

    try:
        value = parse_start(text)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from exc
    if not isinstance(value, int):
        raise click.BadParameter(f"{text!r}: give an ISO-8601 time", param_hint=option)
    return value
