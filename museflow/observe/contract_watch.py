"""The alert-rate contract's watch on the score log: every served score of a (model version, tenant) in one place.

The score log is keyed ``<model>@<version>/<tenant>``, so one partition, and so one consumer,
holds every score a model version serves a tenant, whatever the number of workers that scored
them. :class:`ServedWatch` reads its batches (served ones only: shadow scores reach no tenant)
and runs :class:`museflow.control.contract.AlertRateWatch` per (tenant, intent, model version)
on the route version that routed them: a new route version restarts the watch, a backlog routed
by an older one feeds nothing, and records older than the route version in force when the
watcher first sees a pair are history, not served traffic to judge.

The canary is watched apart from the champion: each served map must hold the tenant's rates on
the events it serves. A breach is a :class:`RouteBreach` for the caller to act on (a verdict
record, a rollback); the watch of that pair restarts after it.

False alarms: ``AlertRateWatch`` splits ``alpha`` over ``pairs`` (tenant, threshold) pairs. The
configured number is a floor; when more pairs are watched at once the split follows them, so
the stated level holds however many routes there are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from museflow.control.contract import AlertRateWatch, Breach, Contract
from museflow.control.routing import Route
from museflow.observe.metrics import PipelineMetrics
from museflow.observe.monitoring import threshold_label
from museflow.transform.reference import ReferenceDistribution

__all__ = ["RouteBreach", "ServedWatch"]


@dataclass(frozen=True)
class RouteBreach:
    """Thresholds of one route version whose served alert rate left the contract's band."""

    tenant: str
    intent: str
    route_version: int
    model: tuple[str, str]
    breaches: tuple[Breach, ...]


class ServedWatch:
    """Feed it decoded score-log batches in log order; it returns the breaches they reveal.

    ``route_at(tenant, intent, version)`` and ``current(tenant, intent)`` read the routes,
    ``reference(name)`` the route's reference (the control plane's state).
    """

    def __init__(self, metrics: PipelineMetrics, contract: Contract, *,
                 route_at: Callable[[str, str, int], Route | None],
                 current: Callable[[str, str], Route | None],
                 reference: Callable[[str], ReferenceDistribution],
                 pairs: int = 100, epoch: int = 1_000_000, alpha: float = 0.05) -> None:
        if pairs < 1 or epoch < 1:
            raise ValueError(f"ServedWatch(pairs={pairs}, epoch={epoch}) needs both >= 1")
        self.metrics, self.contract = metrics, contract
        self._route_at, self._current, self._reference = route_at, current, reference
        self.min_pairs, self.epoch, self.alpha = int(pairs), int(epoch), float(alpha)
        self._watches: dict[tuple[str, str], AlertRateWatch] = {}
        self._watching: dict[tuple[str, str, tuple[str, str]], tuple[int, tuple[float, ...]]] = {}
        self._latest: dict[tuple[str, str], int] = {}

    @property
    def pairs(self) -> int:
        """The pairs ``alpha`` is split over: the configured floor, or every pair watched now."""
        return max(self.min_pairs, sum(len(w.watched()) for w in self._watches.values()))

    def observe_log(self, records: Iterable[Mapping[str, Any]]) -> list[RouteBreach]:
        out = []
        for record in records:
            if not record.get("served") or not record.get("scores"):
                continue
            breach = self._observe(str(record["tenant"]), str(record["intent"]),
                                   (str(record["model"]), str(record["model_version"])),
                                   int(record["route_version"]), record["scores"])
            if breach is not None:
                out.append(breach)
        return out

    def _observe(self, tenant: str, intent: str, model: tuple[str, str], route_version: int,
                 scores: Any) -> RouteBreach | None:
        latest = self._latest.get((tenant, intent))
        if latest is None:
            now = self._current(tenant, intent)
            latest = now.version if now is not None else route_version
        if route_version < latest:
            return None  # routed by an older version (history, or a backlog): the watch is on the newer one
        label = self.metrics.tenant_label(tenant)
        if route_version > latest or (tenant, intent) not in self._latest:
            self._restart(tenant, intent)
            self.metrics.alert_rate_breached.labels(label, intent).set(0)
        self._latest[(tenant, intent)] = route_version
        route = self._route_at(tenant, intent, route_version)
        if route is None or not route.watch_thresholds:
            return None
        key, taus = (tenant, intent, model), tuple(sorted(float(t) for t in route.watch_thresholds))
        watch = self._watches.setdefault(model, self._new_watch())
        if self._watching.get(key) != (route_version, taus):
            self._start(watch, tenant, intent, route, taus, label)
            self._watching[key] = (route_version, taus)
            self._split_alpha()
        breaches = watch.observe(tenant, intent, np.asarray(scores, dtype=np.float64))
        if not breaches:
            return None
        for b in breaches:
            self.metrics.alert_rate_breaches.labels(label, intent, b.direction).inc()
        self.metrics.alert_rate_breached.labels(label, intent).set(1)
        return RouteBreach(tenant, intent, route_version, model, tuple(breaches))

    def _restart(self, tenant: str, intent: str) -> None:
        """A new route version: every model's watch of the pair starts again with its first scores."""
        for model, watch in self._watches.items():
            watch.forget(tenant, intent)
            self._watching.pop((tenant, intent, model), None)
        self._split_alpha()

    def _split_alpha(self) -> None:
        pairs = self.pairs
        for watch in self._watches.values():
            watch.pairs = pairs

    def _new_watch(self) -> AlertRateWatch:
        return AlertRateWatch(self.contract, alpha=self.alpha, epoch=self.epoch, pairs=self.min_pairs)

    def _start(self, watch: AlertRateWatch, tenant: str, intent: str, route: Route, taus: tuple[float, ...],
               label: str) -> None:
        reference = self._reference(route.reference)
        watch.forget(tenant, intent)
        for tau in taus:
            target = float(reference.alert_rate(tau))
            if 0.0 < target < 1.0:
                watch.watch(tenant, intent, tau, target)
                self.metrics.contract_samples_needed.labels(label, intent, threshold_label(tau)).set(
                    self.contract.samples_needed(target))
