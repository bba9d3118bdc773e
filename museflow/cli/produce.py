"""``museflow produce``: publish realistic multi-tenant transactions (and labels, and bad events)."""

from __future__ import annotations

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from museflow.config import Settings
from museflow.demo.loadgen import DEFAULT_TENANTS, TransactionGenerator
from museflow.demo.malformed import BAD_KINDS
from museflow.demo.producing import ProduceProgress, ProduceSummary, produce_events

__all__ = ["produce_command"]

_TENANT_NAMES = [t.name for t in DEFAULT_TENANTS]


@click.command("produce")
@click.option("--count", "-n", type=click.IntRange(min=0), default=None,
              help="Messages to publish (good and malformed together).")
@click.option("--duration", type=click.FloatRange(min=0), default=None,
              help="Seconds to publish for. Without --count or --duration: until Ctrl-C.")
@click.option("--rate", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Target events per second (token bucket); 0 = as fast as possible.")
@click.option("--tenants", default=",".join(_TENANT_NAMES), show_default=True,
              help="Comma-separated subset of the synthetic tenants.")
@click.option("--seed", default=0, show_default=True, help="Seed: the same seed gives the same events.")
@click.option("--drift", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="How far feature distributions drift (0..1), ramping in over --drift-ramp seconds.")
@click.option("--drift-ramp", type=click.FloatRange(min=0), default=600.0, show_default=True,
              help="Seconds of event time over which --drift ramps in (0 = at once).")
@click.option("--labels/--no-labels", default=False, show_default=True,
              help="Also publish delayed ground-truth labels to museflow.labels.")
@click.option("--label-delay", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds between an event and its label.")
@click.option("--label-exit", type=click.Choice(["wait", "flush"]), default="wait", show_default=True,
              help="At the end: wait for pending labels to fall due, or publish them at once (early).")
@click.option("--bad-fraction", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Fraction of malformed messages, for dead-letter testing.")
@click.option("--bad-kinds", default=",".join(BAD_KINDS), show_default=True,
              help="Comma-separated kinds of malformed messages to mix in.")
@click.option("--bootstrap-servers", default=None, help="Kafka bootstrap (default: MUSEFLOW_BOOTSTRAP_SERVERS).")
@click.option("--topic-prefix", default=None, help="Topic prefix (default: MUSEFLOW_TOPIC_PREFIX).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar; only the summary.")
def produce_command(count: int | None, duration: float | None, rate: float, tenants: str, seed: int,
                    drift: float, drift_ramp: float, labels: bool, label_delay: float, label_exit: str,
                    bad_fraction: float, bad_kinds: str, bootstrap_servers: str | None, topic_prefix: str | None,
                    quiet: bool) -> None:
    """Publish synthetic transactions for several tenants and intents to museflow.events.

    Events are keyed by card so per-card order holds; the producer is idempotent with
    acks=all. Exits 1 if any message was not acknowledged.
    """
    wanted = [t.strip() for t in tenants.split(",") if t.strip()]
    unknown = sorted(set(wanted) - set(_TENANT_NAMES))
    if unknown or not wanted:
        raise click.BadParameter(f"unknown tenants {unknown or wanted}; choose from {_TENANT_NAMES}",
                                 param_hint="--tenants")
    kinds = [k.strip() for k in bad_kinds.split(",") if k.strip()]
    if not kinds or set(kinds) - set(BAD_KINDS):
        raise click.BadParameter(f"choose from {sorted(BAD_KINDS)}", param_hint="--bad-kinds")
    settings = Settings.from_env(bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix)
    profiles = [t for t in DEFAULT_TENANTS if t.name in wanted]
    generator = TransactionGenerator(profiles, seed=seed, drift=drift, drift_ramp_s=drift_ramp)
    console = Console(stderr=True)
    bar = Progress(TextColumn("[bold]producing"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=console,
                   disable=quiet, transient=False)

    with bar:
        task = bar.add_task("produce", total=count, detail="")

        def show(p: ProduceProgress) -> None:
            rate_now = p.acked / p.elapsed_s if p.elapsed_s > 0 else 0.0
            extra = f" labels {p.labels_sent} (+{p.labels_pending} pending)" if labels else ""
            bar.update(task, completed=p.sent,
                       detail=f"acked {p.acked} failed {p.failed} {rate_now:,.0f}/s{extra}")

        summary = produce_events(
            settings, generator, count, duration_s=duration, rate=rate, labels=labels,
            label_delay_s=label_delay, labels_at_exit=label_exit, bad_fraction=bad_fraction,
            bad_kinds=kinds, seed=seed, progress=None if quiet else show,
        )
    _print_summary(summary, Console())
    if not summary.ok:
        raise SystemExit(1)


def _print_summary(summary: ProduceSummary, console: Console) -> None:
    table = Table(title=f"produced to {summary.events_topic}", show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("sent", f"{summary.sent:,}")
    table.add_row("acknowledged", f"{summary.acked:,}")
    table.add_row("failed", f"[red]{summary.failed:,}[/red]" if summary.failed else "0")
    table.add_row("good events", f"{summary.good:,}")
    for kind, n in sorted(summary.bad_by_kind.items()):
        table.add_row(f"malformed: {kind} (-> {BAD_KINDS[kind].value})", f"{n:,}")
    if summary.labels_topic is not None:
        table.add_row(f"labels sent to {summary.labels_topic}", f"{summary.labels_sent:,}")
        table.add_row("labels acknowledged", f"{summary.labels_acked:,}")
        table.add_row("labels failed", f"[red]{summary.labels_failed:,}[/red]" if summary.labels_failed else "0")
        if summary.labels_flushed_early:
            table.add_row("labels published before their delay", f"{summary.labels_flushed_early:,}")
    for error, n in sorted(summary.errors.items()):
        table.add_row(f"[red]error: {error}[/red]", f"{n:,}")
    table.add_row("elapsed", f"{summary.elapsed_s:.2f} s")
    table.add_row("achieved rate", f"{summary.achieved_rate:,.0f} events/s")
    if summary.interrupted:
        table.add_row("[yellow]interrupted[/yellow]", "")
    console.print(table)
