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
    estimated_recall_drop: float = 0.10
    estimate_min_frauds: int = 50
    prior_shift_ratio: float = 1.5
    prior_shift_min_frauds: int = 300
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
    recall = "avg by (tenant, threshold) (museflow_estimated_recall)"
    recall_day = "avg by (tenant, threshold) (avg_over_time(museflow_estimated_recall[1d]))"
    frauds = "min by (tenant) (museflow_estimated_frauds)"
    trusted = "min by (tenant, cohort) (museflow_calibration_trustworthy)"
    em = 'avg by (tenant) (museflow_estimated_base_rate{method="em"})'
    em_base = 'avg by (tenant) (museflow_estimated_base_rate{method="baseline"})'
    shift_low = f"{1 / t.prior_shift_ratio:.3g}"
    breached = "max by (tenant, intent) (museflow_alert_rate_contract_breached)"
    paused = "max by (instance, role, dependency) (museflow_dependency_paused)"
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
        AlertRule(
            "MuseflowEstimatedRecallDrop",
            f"({recall_day} - {recall} > {t.estimated_recall_drop}) "
            f"and on (tenant) ({frauds} >= {t.estimate_min_frauds})",
            (recall_day, recall, frauds), "30m", "warning",
            "Estimated recall of {{ $labels.tenant }} above {{ $labels.threshold }} dropped",
            "Recall expected from corrected probabilities (CBPE, before labels) is {{ $value | printf \"%.2f\" }} "
            f"below its 1-day average (bound {t.estimated_recall_drop}) for 30 minutes: check drift, a recent swap "
            "and the calibration alert before trusting it."),
        AlertRule(
            "MuseflowEstimateUntrustworthy", f"{trusted} == 0", (trusted,), "1h", "warning",
            "Label-free estimates of {{ $labels.tenant }} ({{ $labels.cohort }}) are not trustworthy",
            "Corrected probabilities are miscalibrated on the labelled scores (ECE beyond its bound relative to the "
            "fraud rate): estimated precision and recall of this tenant are biased; look for a prior shift, then "
            "recalibrate (beta) or retrain."),
        AlertRule(
            "MuseflowPriorShift",
            f"(({em} / {em_base} > {t.prior_shift_ratio}) or ({em} / {em_base} < {shift_low})) "
            f"and on (tenant) ({frauds} >= {t.prior_shift_min_frauds})", (em, em_base, frauds),
            "10m", "warning",
            "Fraud rate of {{ $labels.tenant }} shifted",
            "The prior-shift (EM) estimate of the fraud rate is {{ $value | printf \"%.2f\" }} times the baseline "
            f"of the day before (bounds {shift_low} and {t.prior_shift_ratio}): corrected probabilities are "
            "miscalibrated for this traffic, so estimates and alert rates will move; compare with the labelled "
            "fraud rate as labels arrive."),
        AlertRule(
            "MuseflowAlertRateContractBreached", f"{breached} > 0", (breached,), "1m", "critical",
            "Alert rates of {{ $labels.tenant }} ({{ $labels.intent }}) left the contract",
            "The sequential watch on served scores found a threshold whose alert rate is outside the contract's "
            "band for the route version in force: the tenant's alert volume is not what its thresholds promise. "
            "See the breach record on museflow.verdicts; routes with auto_rollback have been rolled back, others "
            "need `museflow routes rollback`."),
        AlertRule(
            "MuseflowDependencyUnavailable", f"{paused} > 0", (paused,), "2m", "critical",
            "Role {{ $labels.role }} on {{ $labels.instance }} waits for {{ $labels.dependency }}",
            "The hot loop has been paused for 2 minutes because a dependency (e.g. the schema registry) answers "
            "5xx or not at all: events wait in Kafka (nothing is lost or dead-lettered for it) and lag grows; "
            "restore the dependency, processing resumes by itself."),
    ]


def render(t: Thresholds | None = None) -> str:
    """The rule file (one group) as YAML text."""
    document = {"groups": [{"name": "museflow", "rules": [r.to_dict() for r in rules(t)]}]}
    header = "# Generated by `museflow observe export`; edit museflow/observe/alerts.py, not this file.\n"
    return header + yaml.safe_dump(document, sort_keys=False, width=120)
