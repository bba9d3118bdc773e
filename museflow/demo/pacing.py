"""The demo's producer: multi-tenant traffic with delayed labels and malformed events, paced to the worker."""

from __future__ import annotations

import threading
import time

from museflow.config import Settings
from museflow.demo.loadgen import TenantProfile, TransactionGenerator
from museflow.demo.producing import ProduceProgress, ProduceSummary, produce_events
from museflow.demo.scenario import BAD_FRACTION, DRIFT, DemoOptions
from museflow.demo.scrape import MetricsHistory
from museflow.demo.view import DemoStatus

__all__ = ["PacedProducer"]


class PacedProducer:
    """Produces until stopped, holding back while the worker is more than about a second of traffic behind.

    On a busy machine the worker scores fewer events per second than ``--rate``; pacing keeps
    latency and the phases meaningful instead of building a backlog that outlives the run.
    It only acts on a fresh scrape of the worker's metrics.
    """

    def __init__(self, settings: Settings, options: DemoOptions, profiles: list[TenantProfile],
                 status: DemoStatus, metrics: MetricsHistory) -> None:
        self.settings = settings
        self.options = options
        self.profiles = profiles
        self.status = status
        self.metrics = metrics
        self.stop = threading.Event()
        self.summary: ProduceSummary | None = None

    def run(self) -> None:
        """Produce until :attr:`stop` is set; then :attr:`summary` says what was sent."""
        o = self.options
        generator = TransactionGenerator(self.profiles, seed=o.seed, drift=DRIFT, drift_ramp_s=o.duration_s)
        self.summary = summary = produce_events(
            self.settings, generator, duration_s=None, rate=o.rate, labels=True,
            label_delay_s=o.label_delay_s, labels_at_exit="flush", bad_fraction=BAD_FRACTION,
            seed=o.seed, progress=self._progress, stop=self.stop)
        self.status.bad = summary.bad_total
        self.status.produced, self.status.acked = summary.sent, summary.acked

    def _progress(self, p: ProduceProgress) -> None:
        self.status.produced, self.status.acked, self.status.labels_sent = p.sent, p.acked, p.labels_sent
        self.pace(p.sent)

    def pace(self, sent: int) -> None:
        """Hold the producer while the worker is behind; count the time held."""
        limit = max(300.0, self.metrics.throughput() or self.options.rate)  # about one second of traffic in flight
        started = time.monotonic()
        while not self.stop.is_set():
            behind = self.metrics.backlog(sent)
            if behind is None or behind <= limit:
                break
            self.status.paced = True
            self.stop.wait(0.2)
        paused = time.monotonic() - started
        if paused > 0.01:
            self.status.paced_s += paused
        else:
            self.status.paced = False
