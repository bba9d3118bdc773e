"""``museflow demo``: the whole story on an embedded stack, in one command.

A local Kafka, the demo models, one worker with every role, three tenants onboarded on v1 with
thresholds frozen from v1's scores, multi-tenant traffic (delayed labels, a little drift, a few
malformed events), v2 deployed as a shadow, its maps fitted, v2 promoted mid-run — and at the
end a report directory (``report.md`` with plots, ``summary.json``) showing that the alert
rates at the tenants' thresholds held across the swap while the raw scores moved. Everything it
started is stopped at the end, on Ctrl-C too, unless ``--keep-running``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from museflow.config import Settings
from museflow.demo.clock import RunClock
from museflow.demo.interrupts import signals_as_interrupts, uninterruptible
from museflow.demo.live import LiveStream
from museflow.demo.loadgen import DEFAULT_TENANTS
from museflow.demo.operations import ControlSteps, onboard
from museflow.demo.pacing import PacedProducer
from museflow.demo.scenario import REFIT_INTERVAL_S, DemoOptions, SwapRecord
from museflow.demo.scrape import MetricsHistory
from museflow.demo.stack import DemoStack
from museflow.demo.summary import RunFacts, write_summary
from museflow.demo.summary_view import print_summary
from museflow.demo.view import DemoStatus, PhasePlan, TenantSwap, cnp_shares, refit_guards_for

__all__ = ["demo_command"]

_TENANT_NAMES = [t.name for t in DEFAULT_TENANTS]


class _DemoRun:
    """One demo run, phase by phase: start the stack, stream and swap, summarize, stop."""

    def __init__(self, options: DemoOptions, console: Console) -> None:
        self.o = options
        self.console = console
        self.plan = PhasePlan.for_duration(options.duration_s)
        self.profiles = [t for t in DEFAULT_TENANTS if t.name in options.tenants]
        min_samples, min_tail = refit_guards_for(options.rate, cnp_shares(self.profiles), self.plan.shadow_s)
        self.refit_window_s = max(60.0, 0.5 * options.duration_s)
        self.status = DemoStatus(self.plan, min_samples=min_samples, min_tail_samples=min_tail)
        self.status.tenants = {t: TenantSwap() for t in options.tenants}
        self.stack = DemoStack()
        self.clock = RunClock()
        self.swap = SwapRecord()
        self.metrics = MetricsHistory()
        self.settings: Settings | None = None
        self.producer: PacedProducer | None = None
        self.live: LiveStream | None = None
        self.stream_end: float | None = None

    def setup(self) -> None:
        """Start Kafka (training the models meanwhile), create the topics, onboard on v1, start the worker."""
        c, s = self.console, self.status
        c.print(f"[bold]museflow demo[/bold]: {self.plan.describe()}; {self.o.rate:,.0f} events/s over "
                f"{', '.join(self.o.tenants)}. Everything runs under {self.stack.home}.")
        self.stack.start_broker(c, self.o.seed)
        self.settings = settings = self.stack.settings(refit_window_s=self.refit_window_s,
                                                       min_samples=s.min_samples, min_tail=s.min_tail_samples)
        with c.status("creating topics, deploying v1, onboarding the tenants, starting the worker"):
            self.stack.create_topics(settings)
            onboard(settings, self.stack.models, self.o.tenants)
            worker = self.stack.start_worker(settings)
        c.print(f"worker ready (every role), metrics on {worker.url}/metrics; refit every "
                f"{REFIT_INTERVAL_S:g} s over the last {self.refit_window_s:g} s, min samples {s.min_samples:,}, "
                f"min tail samples {s.min_tail_samples}")

    def stream(self) -> None:
        """Stream the traffic while the director tells the story; show it live until the pipeline drained."""
        assert self.settings is not None
        self.producer = PacedProducer(self.settings, self.o, self.profiles, self.status, self.metrics)
        steps = ControlSteps(self.settings, self.o, self.plan, self.clock, self.status, self.swap, self.metrics,
                             self.stack.models)
        self.live = LiveStream(self.console, self.settings, self.stack, self.clock, self.status, self.swap,
                               self.metrics, self.producer, self.o.tenants, self.o.duration_s)
        self.live.run(lambda: self._direct(steps))

    def _direct(self, steps: ControlSteps) -> None:
        """The story: onboard on v1, freeze references, shadow v2, rehearse, wait for its maps, promote, stream on.

        Each phase gets its planned length from when it actually starts (freezing and waiting for
        maps take a few seconds of their own), so the run is a little longer than ``--duration``.
        """
        status, clock, swap = self.status, self.clock, self.swap
        assert self.producer is not None
        clock.sleep_until(self.plan.onboarding_s)
        status.phase = "freezing references"
        steps.freeze_references()
        steps.deploy_shadow()
        status.phase = "rehearsal"
        steps.rehearse()
        status.phase = "shadow"
        assert swap.deployed_at is not None
        clock.sleep_until(swap.deployed_at + self.plan.shadow_s)
        status.phase = "promoting"
        steps.promote()
        status.phase = "after swap"
        assert swap.promoted_at is not None
        clock.sleep_until(swap.promoted_at + self.plan.after_s)
        status.phase = "draining"
        status.step(f"{clock.elapsed():.0f} s of traffic sent; stopping the producer, draining the pipeline")
        self.producer.stop.set()
        self.stream_end = clock.elapsed()

    def summarize(self) -> dict[str, Any]:
        """Write the report and summary.json from the score log and what the run recorded; return the summary."""
        assert self.settings is not None and self.producer is not None and self.producer.summary is not None
        facts = RunFacts(self.producer.summary, self.metrics.latest(), self.status.paced_s, self.stream_end,
                         self.status.steps)
        return write_summary(self.settings, self.o, self.plan, self.swap, facts, self.stack.worker_log)

    def shutdown(self, keep: bool) -> None:
        """Stop the producer, the director, then (unless ``keep``) the worker and the broker; no orphans."""
        self.clock.cancel.set()
        if self.live is not None:
            self.live.stop()
        if not keep:
            self.stack.stop()


@click.command("demo")
@click.option("--duration", type=click.FloatRange(min=20), default=120.0, show_default=True,
              help="Seconds of traffic (25% onboarding, 40% v2 in shadow, 35% after the swap); setup and the "
                   "report take about a minute more.")
@click.option("--rate", type=click.FloatRange(min=50), default=1000.0, show_default=True,
              help="Events per second over all tenants.")
@click.option("--tenants", default=",".join(_TENANT_NAMES), show_default=True,
              help="Comma-separated synthetic tenants to onboard.")
@click.option("--seed", default=0, show_default=True, help="Seed for the models and the traffic.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Report directory (default: ./museflow-demo-YYYYmmdd-HHMMSS).")
@click.option("--keep-running", is_flag=True,
              help="Leave Kafka and the worker up at the end, for the other commands and the metrics endpoint.")
def demo_command(duration: float, rate: float, tenants: str, seed: int, out_dir: Path | None,
                 keep_running: bool) -> None:
    """The whole story on an embedded stack: onboard, stream, shadow v2, promote it, report.

    Starts a local Kafka and a worker with every role, onboards the tenants on fraud-cnp v1 with
    thresholds frozen from v1's scores, streams traffic (delayed labels, a little drift, a few
    malformed events), deploys v2 as a shadow, waits for its quantile maps, promotes it and
    shows, live and in a report, that the alert rates at the tenants' thresholds held while the
    raw scores moved. Ctrl-C stops everything it started.
    """
    wanted = tuple(dict.fromkeys(t.strip() for t in tenants.split(",") if t.strip()))
    unknown = sorted(set(wanted) - set(_TENANT_NAMES))
    if unknown or not wanted:
        raise click.BadParameter(f"unknown tenants {unknown or list(wanted)}; choose from {_TENANT_NAMES}",
                                 param_hint="--tenants")
    out = out_dir or Path(f"museflow-demo-{time.strftime('%Y%m%d-%H%M%S')}")
    options = DemoOptions(duration, rate, wanted, seed, out.resolve(), keep_running)
    console = Console()
    if not console.is_terminal:
        console = Console(width=150)  # logs and CI: room for the summary table
    demo = _DemoRun(options, console)
    kept = interrupted = False
    try:
        with signals_as_interrupts():
            demo.setup()
            demo.stream()
            with console.status("reading the score log back and writing the report"):
                summary = demo.summarize()
        print_summary(console, summary)
        console.print(f"[bold]report:[/bold] {options.out_dir / 'report.md'}  (plots, summary.json, worker.log "
                      f"in {options.out_dir})")
        kept = keep_running
    except KeyboardInterrupt:
        interrupted = True
        console.print("[yellow]interrupted: stopping the producer, the worker and Kafka[/yellow]")
    finally:
        with uninterruptible():
            demo.shutdown(keep=kept)
    if kept:
        assert demo.settings is not None
        demo.stack.print_keep_running(console, demo.settings, options.tenants[0])
    if interrupted:
        console.print("stopped; nothing left running")
        raise SystemExit(130)
