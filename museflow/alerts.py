"""Prometheus alert rules as code, rendered to YAML for ``deploy/prometheus/alerts.yml``.

Each :class:`AlertRule` keeps its condition apart from its threshold: ``checks`` are the inner
expressions (no comparison), which the integration test runs against a real Prometheus
scraping a real worker, so a renamed metric or label cannot leave an alert silently dead.
Thresholds are parameters of :func:`rules`; ``tests/observability/alerts_test.yml`` holds the
``promtool test rules`` cases for every alert at the default thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

__all__ = ["AlertRule", "Thresholds", "render", "rules"]


@dataclass(frozen=True)
class Thresholds:
    """The bounds the alerts use; tune per deployment, then regenerate."""

    lag_messages: int = 1000
    dead_letter_ratio: float = 0.01
    drift_psi: float = 0.25
    map_max_age_seconds: int = 24 * 3600
    lag_reading_max_age_seconds: int = 120
    job_selector: str = 'job=~"museflow.*"'


@dataclass(frozen=True)
class AlertRule:
    """One alert: its PromQL ``expr``, the inner expressions ``checks`` it is built from, and its text."""

    name: str
    expr: str
    checks: tuple[str, ...]
    for_: str
    severity: str
    summary: str
    description: str
    labels: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity, **self.labels},
            "annotations": {"summary": self.summary, "description": self.description},
        }


def rules(t: Thresholds | None = None) -> list[AlertRule]:
    """Every museflow alert, in a stable order."""
    t = t or Thresholds()
    lag = "sum by (group, topic) (museflow_consumer_lag_sum)"
    lag_delta = "sum by (group, topic) (delta(museflow_consumer_lag_sum[10m]))"
    dead = "sum(rate(museflow_dead_letters_total[5m]))"
    events_in = "sum(rate(museflow_events_in_total[5m]))"
    events_out = "sum(rate(museflow_events_out_total[10m]))"
    events_in_10m = "sum(rate(museflow_events_in_total[10m]))"
    psi = "max by (tenant) (museflow_score_drift_psi)"
    map_age = "time() - max by (model, tenant) (museflow_quantile_map_created_timestamp_seconds)"
    ready = "min by (instance, role) (museflow_worker_ready)"
    up = f"up{{{t.job_selector}}}"
    lag_age = "time() - max by (instance) (museflow_consumer_lag_refreshed_timestamp_seconds)"
    return [
        AlertRule(
            "MuseflowConsumerLagGrowing", f"({lag} > {t.lag_messages}) and ({lag_delta} > 0)", (lag, lag_delta),
            "10m", "warning",
            "Consumer group {{ $labels.group }} is falling behind on {{ $labels.topic }}",
            f"Lag is {{{{ $value }}}} messages above {t.lag_messages} and still growing over 10 minutes: "
            "add workers (partitions permitting) or look for a slow stage."),
        AlertRule(
            "MuseflowDeadLetterRateHigh", f"{dead} / {events_in} > {t.dead_letter_ratio}", (dead, events_in),
            "5m", "warning",
            f"More than {t.dead_letter_ratio:.0%} of events are dead-lettered",
            "Dead letters per event in is {{ $value | humanizePercentage }}; see the SRE dashboard's "
            "dead letters by reason and the museflow.dlq topic."),
        AlertRule(
            "MuseflowScoreDriftHigh", f"{psi} > {t.drift_psi}", (psi,), "30m", "warning",
            "Mapped scores of {{ $labels.tenant }} drifted from the reference",
            f"PSI {{{{ $value }}}} above {t.drift_psi} for 30 minutes: the tenant's alert rates no longer match "
            "its reference; check the map age and the traffic."),
        AlertRule(
            "MuseflowQuantileMapStale", f"{map_age} > {t.map_max_age_seconds}", (map_age,), "15m", "warning",
            "Quantile map of {{ $labels.model }} for {{ $labels.tenant }} is stale",
            f"The map in use was fitted {{{{ $value | humanizeDuration }}}} ago (bound {t.map_max_age_seconds} s): "
            "the refit role may be down or holding publications; see map publications by reason."),
        AlertRule(
            "MuseflowNoEventsFlowing", f"({events_in_10m} or vector(0)) == 0", (events_in_10m,), "10m",
            "critical", "No events reach museflow",
            "No events were consumed from museflow.events for 10 minutes: check producers and the router."),
        AlertRule(
            "MuseflowNoScoredEventsOut", f"({events_out} or vector(0)) == 0 and {events_in_10m} > 0",
            (events_out, events_in_10m), "10m", "critical", "Events come in but no scored events go out",
            "Events are consumed but nothing is published to tenant topics for 10 minutes: check scorers, "
            "model loads and dead letters."),
        AlertRule(
            "MuseflowWorkerNotReady", f"{ready} < 1", (ready,), "5m", "warning",
            "Role {{ $labels.role }} on {{ $labels.instance }} is not ready",
            "A role has not joined its group or applied the control topics for 5 minutes."),
        AlertRule(
            "MuseflowWorkerDown", f"{up} == 0", (up,), "2m", "critical",
            "museflow worker {{ $labels.instance }} cannot be scraped",
            "Prometheus cannot reach the worker's /metrics endpoint: the process is down or unreachable."),
        AlertRule(
            "MuseflowLagReadingStale", f"{lag_age} > {t.lag_reading_max_age_seconds}", (lag_age,), "5m", "warning",
            "Consumer lag on {{ $labels.instance }} is not being read",
            "The lag role has not read offsets from the broker recently, so lag panels and alerts are blind."),
    ]


def render(t: Thresholds | None = None) -> str:
    """The rule file (one group) as YAML text."""
    document = {"groups": [{"name": "museflow", "rules": [r.to_dict() for r in rules(t)]}]}
    header = "# Generated by `museflow observe export`; edit museflow/alerts.py, not this file.\n"
    return header + yaml.safe_dump(document, sort_keys=False, width=120)
