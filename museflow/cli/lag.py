"""``museflow lag``: true consumer lag per group, topic and partition, read from the broker."""

from __future__ import annotations

import json
import time

import click
from rich.console import Console
from rich.table import Table

from museflow.config import Settings
from museflow.kafka.lag import PartitionLag, read_lag, summarize

__all__ = ["lag_command"]


def _table(rows: list[PartitionLag], bootstrap: str) -> Table:
    table = Table(title=f"consumer lag on {bootstrap} at {time.strftime('%H:%M:%S')}", title_justify="left")
    for name, justify in (("group", "left"), ("topic", "left"), ("partition", "right"), ("committed", "right"),
                          ("log end", "right"), ("lag", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    totals = summarize(rows)
    previous: tuple[str, str] | None = None
    for row in rows:
        key = (row.group, row.topic)
        if previous is not None and key != previous:
            _total_row(table, previous, totals[previous])
        previous = key
        committed = "-" if row.committed is None else str(row.committed)
        style = "bold red" if row.lag else None
        table.add_row(row.group, row.topic, str(row.partition), committed, str(row.log_end), str(row.lag),
                      style=style)
    if previous is not None:
        _total_row(table, previous, totals[previous])
    if not rows:
        table.add_row("(no consumer group has committed offsets)", "", "", "", "", "")
    return table


def _total_row(table: Table, key: tuple[str, str], lag: int) -> None:
    table.add_row(key[0], key[1], "all", "", "", str(lag), style="bold", end_section=True)


@click.command("lag")
@click.option("-g", "--group", "groups", multiple=True, help="Consumer group (repeatable; default: every group).")
@click.option("--bootstrap-servers", envvar="MUSEFLOW_BOOTSTRAP_SERVERS", default=None,
              help="Kafka bootstrap servers (default: MUSEFLOW_BOOTSTRAP_SERVERS).")
@click.option("--watch", is_flag=True, help="Refresh until interrupted.")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between refreshes with --watch.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per reading: rows and totals.")
def lag_command(groups: tuple[str, ...], bootstrap_servers: str | None, watch: bool, interval: float,
                as_json: bool) -> None:
    """Show committed offset vs log end for each partition a consumer group reads.

    Lag comes from the broker's admin API, so it is true while consumers are stopped. A partition
    never committed counts from the log start (museflow consumers reset to earliest), shown as '-'.
    """
    settings = Settings.from_env(bootstrap_servers=bootstrap_servers)
    console = Console()
    wanted = list(groups) or None
    while True:
        rows = read_lag(settings, wanted)
        if as_json:
            click.echo(json.dumps({
                "time": time.time(),
                "rows": [r.to_dict() for r in rows],
                "totals": [{"group": g, "topic": t, "lag": lag} for (g, t), lag in sorted(summarize(rows).items())],
            }))
        else:
            if watch:
                console.clear()
            console.print(_table(rows, settings.bootstrap_servers))
        if not watch:
            return
        time.sleep(interval)
