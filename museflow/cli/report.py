"""``museflow report swap``: alert rates per tenant before and after a model swap, with plots."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from museflow.cli.options import kafka_options, settings_from
from museflow.config import Settings

__all__ = ["report_group"]


@click.group("report")
def report_group() -> None:
    """Reports built from the score log."""


@report_group.command("swap")
@kafka_options
@click.option("--old", required=True, help="The previous champion, NAME@VERSION.")
@click.option("--new", required=True, help="The promoted model, NAME@VERSION.")
@click.option("--since", "since_s", type=float, default=None, help="Only scores logged in the last SECONDS.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("swap-report"),
              show_default=True, help="Directory for report.md, report.json and the PNG plots.")
@click.option("--labels/--no-labels", default=True, show_default=True,
              help="Join delayed labels (museflow.labels) to add AUC per tenant.")
def swap(bootstrap_servers: str | None, topic_prefix: str | None, old: str, new: str, since_s: float | None,
         out_dir: Path, labels: bool) -> None:
    """Per tenant and threshold: alert rate before/after the swap, mapped and on raw scores."""
    from museflow.kafka.plane import read_state
    from museflow.kafka.scorelog import read_score_log
    from museflow.observe.swapreport import build_swap_report, write_report

    settings = settings_from(bootstrap_servers, topic_prefix)
    state = read_state(settings)
    since_ms = int((time.time() - since_s) * 1000) if since_s else None
    records = read_score_log(settings, since_ms=since_ms, where=lambda r: r["served"])
    label_map = _labels(settings) if labels else None
    watch = {r.key: r.watch_thresholds for r in state.routes}
    report = build_swap_report(records, old, new, state.references, watch=watch, labels=label_map)
    if not report.rows:
        raise click.ClickException(f"no tenant has served scores of both {old} and {new} in the score log"
                                   + (f" of the last {since_s:.0f}s" if since_s else ""))
    md = write_report(report, out_dir)
    table = Table("tenant", "intent", "target", "threshold", "mapped before", "mapped after", "shift",
                  "raw before", "raw after", "raw shift")
    for r in report.rows:
        table.add_row(r.tenant, r.intent, f"{r.target_rate:.2%}", f"{r.threshold:.4g}", f"{r.mapped_before:.3%}",
                      f"{r.mapped_after:.3%}", f"{r.mapped_shift:+.1%}", f"{r.raw_before:.3%}", f"{r.raw_after:.3%}",
                      f"{r.raw_shift:+.1%}")
    Console().print(table)
    click.echo(f"report: {md}")


def _labels(settings: Settings) -> dict[str, bool]:
    from museflow.kafka.clients import read_topic
    from museflow.kafka.schema_registry import serdes_from_settings

    serde = serdes_from_settings(settings).labels
    out = {}
    for record in read_topic(settings, settings.topics.labels):
        if record.value is not None:
            label = serde.decode(record.value)
            out[label["event_id"]] = bool(label["is_fraud"])
    return out
