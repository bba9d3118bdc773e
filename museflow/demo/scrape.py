"""The worker's metrics as the demo reads them: recent scrapes, the worker's throughput, the rows of the live view."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Protocol

from museflow.demo.loadgen import CARD_NOT_PRESENT
from museflow.demo.view import MetricsSnapshot, TenantView, tenant_views

__all__ = ["MetricsHistory", "MetricsSource"]


class MetricsSource(Protocol):
    """What the demo scrapes: a worker process (:class:`museflow.demo.supervise.WorkerProcess`) or a stand-in."""

    def alive(self) -> bool: ...

    def metrics(self) -> str: ...


def _finished(snap: MetricsSnapshot) -> float:
    """Events the worker is done with: scored or dead-lettered."""
    return snap.sum("museflow_events_out_total") + snap.sum("museflow_dead_letters_total")


class MetricsHistory:
    """The last dozen scrapes of the worker's ``/metrics``, each with the events the producer had sent by then."""

    def __init__(self) -> None:
        self.snapshots: deque[MetricsSnapshot] = deque(maxlen=12)
        self._sent_at: dict[float, int] = {}  # snapshot time -> events the producer had sent by then

    def scrape(self, worker: MetricsSource | None, sent: int) -> None:
        """Take one scrape; ``sent`` is read before it: the worker cannot have finished more than that."""
        if worker is None or not worker.alive():
            return
        with contextlib.suppress(OSError, ValueError):
            snap = MetricsSnapshot.parse(worker.metrics(), time.monotonic())
            self.snapshots.append(snap)
            self._sent_at[snap.at] = sent
            for stale in [at for at in self._sent_at if at < self.snapshots[0].at]:
                del self._sent_at[stale]

    def latest(self) -> MetricsSnapshot:
        return self.snapshots[-1] if self.snapshots else MetricsSnapshot.empty()

    def backlog(self, sent: int, fresh_s: float = 5.0) -> float | None:
        """Events sent but not finished as of the latest scrape; None without a scrape of the last ``fresh_s``.

        Behind = sent when the scrape was taken minus done at that scrape: comparing today's count with a
        scrape up to a second old held the producer while the worker kept up.
        """
        snap = self.snapshots[-1] if self.snapshots else None
        if snap is None or time.monotonic() - snap.at > fresh_s:
            return None
        return self._sent_at.get(snap.at, sent) - _finished(snap)

    def throughput(self) -> float:
        """Events/s the worker finished (scored or dead-lettered) over the scrapes held; 0 when unknown."""
        if len(self.snapshots) < 3:
            return 0.0
        first, last = self.snapshots[0], self.snapshots[-1]
        span = last.at - first.at
        return max(0.0, _finished(last) - _finished(first)) / span if span > 0 else 0.0

    def shadow_samples(self, tenants: Sequence[str]) -> dict[str, float]:
        """Per tenant, the card-not-present events the shadow model scored so far."""
        snap = self.latest()
        return {t: snap.sum("museflow_events_scored_total", tenant=t, intent=CARD_NOT_PRESENT, role="shadow")
                for t in tenants}

    def views(self, tenants: Sequence[str],
              watch: Mapping[str, Sequence[tuple[float, float]]]) -> tuple[list[TenantView], MetricsSnapshot]:
        """The live view's tenant rows, rates taken over the last six seconds or so, and the latest scrape."""
        now = self.latest()
        base = next((s for s in self.snapshots if now.at - s.at <= 6.0), now)
        if base is now and len(self.snapshots) > 1:
            base = self.snapshots[-2]
        return tenant_views(now, base, list(tenants), watch), now
