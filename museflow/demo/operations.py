"""The control-plane steps the demo performs through :mod:`museflow.kafka.plane`: onboard, freeze, shadow, promote."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from museflow.config import Settings
from museflow.control.contract import Contract, judge_fit
from museflow.control.routing import Candidate, Route
from museflow.demo.clock import RunClock
from museflow.demo.loadgen import ACCOUNT_TAKEOVER, CARD_NOT_PRESENT
from museflow.demo.scenario import ATO, MIN_FREEZE_SAMPLES, V1, V2, DemoOptions, SwapRecord
from museflow.demo.scrape import MetricsHistory
from museflow.demo.view import WATCH_RATES, DemoStatus, PhasePlan
from museflow.errors import MuseflowError
from museflow.kafka.plane import (
    deploy,
    next_reference_version,
    promote,
    publish_reference,
    publish_route,
    read_state,
)
from museflow.kafka.rehearse import rehearse
from museflow.kafka.scorelog import read_score_log
from museflow.transform.qmap import QuantileMap
from museflow.transform.reference import ReferenceDistribution

__all__ = ["ControlSteps", "now_ms", "onboard"]

BY = "museflow-demo"


def now_ms() -> int:
    return int(time.time() * 1000)


def onboard(settings: Settings, models: dict[str, Path], tenants: tuple[str, ...]) -> None:
    """Deploy fraud-cnp v1 and ato v1 and route every tenant's card-not-present and takeover traffic to them."""
    for ref in (V1, ATO):
        deploy(settings, str(models[str(ref)]), by=BY)
    for tenant in tenants:
        publish_route(settings, Route(tenant, CARD_NOT_PRESENT, V1, version=1, updated_by=BY, updated_at=now_ms()))
        publish_route(settings, Route(tenant, ACCOUNT_TAKEOVER, ATO, version=1, updated_by=BY, updated_at=now_ms()))


class ControlSteps:
    """The swap's steps, each a few control-plane writes; what they did goes to ``swap`` and the live ``status``."""

    def __init__(self, settings: Settings, options: DemoOptions, plan: PhasePlan, clock: RunClock,
                 status: DemoStatus, swap: SwapRecord, metrics: MetricsHistory, models: dict[str, Path]) -> None:
        self.settings = settings
        self.tenants = options.tenants
        self.out_dir = options.out_dir
        self.plan = plan
        self.clock = clock
        self.status = status
        self.swap = swap
        self.metrics = metrics
        self.models = models

    def _v1_scores(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {t: [] for t in self.tenants}
        for r in read_score_log(self.settings, where=lambda r: r["served"] and r["intent"] == CARD_NOT_PRESENT
                                and r["model"] == V1.name and r["model_version"] == V1.version):
            out.setdefault(r["tenant"], []).append(r["corrected_score"])
        return out

    def freeze_references(self) -> None:
        """Freeze each tenant's reference from v1's scores so far; its thresholds become the watch thresholds."""
        settings, clock = self.settings, self.clock
        self.status.step("onboarding done: freezing each tenant's reference from v1's scores")
        scores = self._v1_scores()
        grace = 2 * self.plan.onboarding_s  # a slow worker gets up to twice the onboarding time
        while min(len(s) for s in scores.values()) < MIN_FREEZE_SAMPLES and clock.elapsed() < grace:
            self.status.step("waiting for more v1 scores: " + ", ".join(f"{t} {len(s):,}" for t, s in scores.items()))
            clock.sleep_until(clock.elapsed() + 3)
            scores = self._v1_scores()
        short = {t: len(s) for t, s in scores.items() if len(s) < MIN_FREEZE_SAMPLES}
        if short:
            raise MuseflowError(f"too few v1 scores to freeze references after {clock.elapsed():.0f} s: {short} "
                                f"(need {MIN_FREEZE_SAMPLES}); the worker is not keeping up — try a lower --rate")
        state = read_state(settings)
        for tenant in self.tenants:
            name = f"{tenant}-{CARD_NOT_PRESENT}"
            version = next_reference_version(state, name)
            ref = ReferenceDistribution.from_samples(name, version, scores[tenant])
            publish_reference(settings, ref)
            # The tenant owns one reference (its score scale): every route of the tenant maps onto it.
            # It also keeps the scorer's per-tenant monitor window whole (one reference per window).
            for intent in (CARD_NOT_PRESENT, ACCOUNT_TAKEOVER):
                route = state.routes.get(tenant, intent)
                if route is None:
                    continue
                publish_route(settings, replace(route, reference=f"{name}@{version}",
                                                version=state.routes.latest_version(tenant, intent) + 1,
                                                updated_at=now_ms(), updated_by=BY,
                                                comment="the tenant's reference, frozen from fraud-cnp@1"))
            self.swap.references[tenant] = f"{name}@{version}"
            self.swap.freeze_samples[tenant] = len(scores[tenant])
            self.swap.watch[tenant] = [(rate, float(ref.threshold_for(rate))) for rate in WATCH_RATES]
            self.status.step(f"{tenant}: reference {name}@{version} from {len(scores[tenant]):,} v1 scores; "
                             "thresholds " + ", ".join(f"{r:.1%} -> {tau:.4f}" for r, tau in self.swap.watch[tenant]))

        def v1_mapped_on_reference() -> bool:
            maps = read_state(settings).maps
            return all((m := maps.get(V1.name, V1.version, t)) is None
                       or f"{m.reference_name}@{m.reference_version}" == self.swap.references[t]
                       for t in self.tenants)

        if clock.wait(v1_mapped_on_reference, 30, poll=1.0):
            self.status.step("refit agent re-fitted v1's maps onto the frozen references")
        else:
            self.status.step("v1's maps onto the frozen references are not published yet (refit holding); going on")

    def deploy_shadow(self) -> None:
        """Deploy fraud-cnp v2 as a shadow on every card-not-present route, with the tenants' watch thresholds."""
        settings = self.settings
        deploy(settings, str(self.models[str(V2)]), by=BY)
        self.swap.deployed_at = self.clock.elapsed()
        self.swap.deployed_wall_ms = now_ms()
        state = read_state(settings)
        for tenant in self.tenants:
            route = state.routes.get(tenant, CARD_NOT_PRESENT)
            assert route is not None
            publish_route(settings, replace(
                route, version=state.routes.latest_version(tenant, CARD_NOT_PRESENT) + 1,
                watch_thresholds=tuple(tau for _, tau in self.swap.watch[tenant]),
                candidates=(Candidate(V2, "shadow", 1.0),), updated_at=now_ms(), updated_by=BY,
                comment="tenant thresholds set; fraud-cnp@2 in shadow"))
        self.status.step("deployed fraud-cnp@2 as a shadow on every card-not-present route; watch thresholds set")

    def rehearse(self) -> None:
        """Replay the traffic retained so far through v1 and v2, publish v2's maps, promote on them."""
        settings, swap = self.settings, self.swap
        assert swap.deployed_at is not None
        window = (swap.deployed_wall_ms - int(swap.deployed_at * 1000), swap.deployed_wall_ms)
        self.status.step("rehearsing fraud-cnp@2 on the traffic Kafka retained since the start")
        result = rehearse(settings, V2, window, routes=[f"{t}/{CARD_NOT_PRESENT}" for t in self.tenants],
                          out_dir=self.out_dir / "rehearsal")
        swap.rehearsed_at = self.clock.elapsed()
        verdicts = result.report.verdicts()
        swap.rehearsal = {"events": result.events, "window_ms": list(window), "verdicts": verdicts,
                          "report": str(result.report_path),
                          "rows": [{"tenant": r.tenant, "threshold": r.threshold, "target": r.target_rate,
                                    "predicted": r.predicted_rate, "interval": list(r.interval),
                                    "samples": r.samples, "samples_above": round(r.predicted_rate * r.samples)}
                                   for r in result.report.rows]}
        for tenant in self.tenants:
            key = f"{tenant}/{CARD_NOT_PRESENT}"
            qmap = result.maps.get((tenant, CARD_NOT_PRESENT))
            if verdicts.get(key) != "ok" or qmap is None:
                self.status.step(f"{tenant}: not promoted by rehearsal ({verdicts.get(key, 'no map')}); shadow decides")
                continue
            promote(settings, key, V2, by="museflow-demo-rehearsal", accept_insufficient=True)
            self._judge_contract(tenant, qmap)
            swap.promoted[tenant] = True
            swap.promoted_by[tenant] = "rehearsal"
            swap.v2_maps[tenant] = {"version": qmap.version, "samples": qmap.sample_count,
                                    "tail_samples": qmap.tail_sample_count, "source": "rehearsal"}
            self.status.tenants[tenant].note = "promoted by rehearsal"
        if swap.promoted:
            swap.promoted_at = swap.rehearsal_promoted_at = self.clock.elapsed()
            swap.produced_at_promotion = self.status.produced
        self.status.step(f"rehearsal: {result.events:,} retained events replayed in "
                         f"{swap.rehearsed_at - swap.deployed_at:.1f} s; promoted fraud-cnp@2 for "
                         f"{', '.join(t for t in self.tenants if swap.promoted_by.get(t)) or 'no tenant'} on "
                         "its maps; the live shadow phase now confirms")

    def _judge_contract(self, tenant: str, qmap: QuantileMap) -> None:
        """What the alert-rate contract says of the map v2 is promoted with, at each watched threshold."""
        contract = Contract.from_settings(self.settings)
        self.swap.contract[tenant] = [judge_fit(qmap, tau, rate, contract).to_json()
                                      for rate, tau in self.swap.watch.get(tenant, [])]

    def promote(self) -> None:
        """Promote v2 for every tenant the rehearsal left to the shadow, on its map fitted on live traffic."""
        settings, swap = self.settings, self.swap
        waiting = {t for t in self.tenants if swap.promoted_by.get(t) != "rehearsal"}

        def fitted() -> set[str]:
            """Tenants with a map of v2 fitted on live shadow traffic."""
            maps = read_state(settings).maps
            return {t for t in waiting if (m := maps.get(V2.name, V2.version, t)) is not None and m.source == "shadow"}

        grace = min(30.0, 0.2 * self.plan.duration_s)
        ready = fitted()
        if ready != waiting:
            self.status.step(f"shadow phase over; waiting up to {grace:.0f} s for v2's maps of "
                             + ", ".join(sorted(waiting - ready)))
            self.clock.wait(lambda: fitted() == waiting, grace, poll=1.0)
            ready = fitted()
        maps = read_state(settings).maps
        for tenant in self.tenants:
            shadow_maps = [m for m in maps if (m.model, m.model_version, m.tenant) == (V2.name, V2.version, tenant)
                           and m.source == "shadow"]
            first = min((m.created_at_ms for m in shadow_maps), default=None)
            swap.shadow_map_lead_s[tenant] = (first - swap.deployed_wall_ms) / 1000 if first is not None else None
            if swap.promoted_by.get(tenant) == "rehearsal":
                continue
            if tenant not in ready:
                samples = self.metrics.shadow_samples(self.tenants).get(tenant, 0.0)
                why = (f"not promoted: v2's map is not fitted — {samples:,.0f} shadow samples collected, the refit "
                       f"needs {self.status.min_samples:,} in its window and {self.status.min_tail_samples} above "
                       "the 0.5% threshold")
                swap.promoted[tenant] = False
                swap.not_promoted[tenant] = why
                self.status.tenants[tenant].note = why
                self.status.step(f"{tenant}: {why}")
                continue
            m = maps.get(V2.name, V2.version, tenant)
            assert m is not None
            promote(settings, f"{tenant}/{CARD_NOT_PRESENT}", V2, by=BY, accept_insufficient=True)
            self._judge_contract(tenant, m)
            swap.promoted[tenant] = True
            swap.promoted_by[tenant] = "shadow"
            swap.v2_maps[tenant] = {"version": m.version, "samples": m.sample_count,
                                    "tail_samples": m.tail_sample_count}
            self.status.step(f"{tenant}: promoted fraud-cnp@2 (its map v{m.version}, fitted on "
                             f"{m.sample_count:,} shadow scores); thresholds unchanged")
        if swap.promoted_at is None or any(v == "shadow" for v in swap.promoted_by.values()):
            swap.promoted_at = self.clock.elapsed()
            swap.produced_at_promotion = self.status.produced
