"""The streaming phase: the producer, control poller and director threads, the live view each second, the drain."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from rich.console import Console, RenderableType
from rich.live import Live

from museflow.config import Settings
from museflow.demo.clock import Cancelled, RunClock
from museflow.demo.control_view import poll_control
from museflow.demo.pacing import PacedProducer
from museflow.demo.scenario import SwapRecord
from museflow.demo.scrape import MetricsHistory
from museflow.demo.stack import DemoStack, output_counts
from museflow.demo.view import DemoStatus, render_view
from museflow.errors import MuseflowError

__all__ = ["LiveStream"]


class LiveStream:
    """Runs the demo's threads and shows the live view (a terminal) or its steps and a progress line (logs)."""

    def __init__(self, console: Console, settings: Settings, stack: DemoStack, clock: RunClock, status: DemoStatus,
                 swap: SwapRecord, metrics: MetricsHistory, producer: PacedProducer, tenants: tuple[str, ...],
                 duration_s: float) -> None:
        self.console = console
        self.settings = settings
        self.stack = stack
        self.clock = clock
        self.status = status
        self.swap = swap
        self.metrics = metrics
        self.producer = producer
        self.tenants = tenants
        self.duration_s = duration_s
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []
        self._printed_steps = 0

    def _thread(self, name: str, target: Callable[[], None]) -> threading.Thread:
        def run() -> None:
            try:
                target()
            except Cancelled:
                pass
            except BaseException as exc:
                self.errors.append(exc)
                self.clock.cancel.set()

        thread = threading.Thread(target=run, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()
        return thread

    def run(self, direct: Callable[[], None]) -> None:
        """Run the producer, the director (``direct``) and the control poller; show the live view until drained."""
        self.clock.start()
        self.status.phase = "onboarding"
        self.status.step("streaming: v1 serves every tenant; tenants are onboarding")
        producer = self._thread("demo-producer", self.producer.run)
        self._thread("demo-control", lambda: poll_control(self.settings, self.status.tenants, self.clock.cancel))
        director = self._thread("demo-director", direct)
        live = Live(console=self.console, refresh_per_second=2, transient=False, auto_refresh=False) \
            if self.console.is_terminal else None
        last_line = 0.0
        with live if live is not None else contextlib.nullcontext():
            while director.is_alive():
                self._check_worker()
                self._scrape()
                if live is not None:
                    live.update(self.render(), refresh=True)
                else:
                    self.render()
                    self._print_new_steps()
                    if self.clock.elapsed() - last_line >= 10:
                        last_line = self.clock.elapsed()
                        self.console.print(self._progress_line())
                time.sleep(1.0)
            if self.errors:
                raise self.errors[0]
            while producer.is_alive():
                producer.join(0.5)
            if self.errors:
                raise self.errors[0]
            self._drain(live)
            self._scrape()
            if live is not None:
                live.update(self.render(), refresh=True)
        if live is None:
            self._print_new_steps()

    def stop(self) -> None:
        """Stop the producer and every thread; the producer gets time to flush its delayed labels."""
        self.clock.cancel.set()
        self.producer.stop.set()
        for thread in self.threads:
            thread.join(timeout=90 if thread.name == "demo-producer" else 15)

    def render(self) -> RenderableType:
        self.status.elapsed_s = self.clock.elapsed()
        views, now = self.metrics.views(self.tenants, {t: self.swap.watch.get(t, []) for t in self.tenants})
        return render_view(self.status, views, now)

    def _scrape(self) -> None:
        self.metrics.scrape(self.stack.worker, self.status.produced)

    def _check_worker(self) -> None:
        try:
            self.stack.check_worker()
        except MuseflowError:
            self.clock.cancel.set()
            raise

    def _print_new_steps(self) -> None:
        for line in self.status.steps[self._printed_steps:]:
            self.console.print(line)
        self._printed_steps = len(self.status.steps)

    def _progress_line(self) -> str:
        snap = self.metrics.latest()
        return (f"{self.clock.elapsed():5.0f}s {self.status.phase:10} produced {self.status.produced:,} "
                f"scored {snap.sum('museflow_events_out_total'):,.0f} dead letters "
                f"{snap.sum('museflow_dead_letters_total'):,.0f} shadow samples "
                + " ".join(f"{t}={n:,.0f}" for t, n in self.metrics.shadow_samples(self.tenants).items()))

    def _drain(self, live: Live | None) -> None:
        """Wait until every produced event is a scored event or a dead letter (bounded)."""
        assert self.producer.summary is not None
        target = self.producer.summary.sent
        deadline = time.monotonic() + max(60.0, 0.5 * self.duration_s)
        while time.monotonic() < deadline:
            self._check_worker()
            scored, dead = output_counts(self.settings, self.tenants)
            if scored + dead >= target:
                self.status.step(f"drained: {scored:,} scored + {dead:,} dead letters = {target:,} produced")
                return
            self._scrape()
            if live is not None:
                live.update(self.render(), refresh=True)
            if self.clock.cancel.wait(1.0):
                raise Cancelled
        scored, dead = output_counts(self.settings, self.tenants)
        self.status.step(f"not fully drained after waiting: {scored:,} scored + {dead:,} dead letters "
                         f"of {target:,} produced")
