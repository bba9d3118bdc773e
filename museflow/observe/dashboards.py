"""Grafana dashboards as code: one for SREs, one for model owners, generated into JSON.

Every panel's datasource is the ``$datasource`` template variable (type prometheus), uids are
stable (``museflow-sre``, ``museflow-models``) and so are panel ids, so re-importing a generated
dashboard updates it in place. Queries use only ``$datasource``, ``$tenant`` and Grafana's
``$__rate_interval``; :func:`queries` lists them for the test that runs each against a real
Prometheus scraping a real worker.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DASHBOARDS", "Dashboard", "Panel", "Target", "dashboards", "models_dashboard", "queries",
           "render", "sre_dashboard"]

_DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
TENANT = 'tenant=~"$tenant"'


@dataclass(frozen=True)
class Target:
    """One PromQL query of a panel, with its legend."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    """A time-series (or stat) panel with its unit and queries."""

    title: str
    targets: tuple[Target, ...]
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"
    width: int = 12


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    tenant_variable: bool = False
    tags: tuple[str, ...] = field(default=("museflow",))

    def panels(self) -> Iterator[Panel]:
        for row in self.rows:
            yield from row.panels

    def to_json(self) -> dict[str, Any]:
        """The Grafana dashboard model (schemaVersion 39) with stable ids and grid positions."""
        panels: list[dict[str, Any]] = []
        next_id, y = 1, 0
        for row in self.rows:
            panels.append({"id": next_id, "type": "row", "title": row.title, "collapsed": False,
                           "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
            next_id, y, x = next_id + 1, y + 1, 0
            for panel in row.panels:
                if x + panel.width > 24:
                    x, y = 0, y + 8
                panels.append(_panel_json(panel, next_id, x, y))
                next_id, x = next_id + 1, x + panel.width
            y += 8
        variables: list[dict[str, Any]] = [{
            "name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": [],
        }]
        if self.tenant_variable:
            variables.append({
                "name": "tenant", "label": "Tenant", "type": "query", "datasource": _DS,
                "query": {"query": "label_values(museflow_events_in_total, tenant)", "refId": "tenant"},
                "definition": "label_values(museflow_events_in_total, tenant)",
                "multi": True, "includeAll": True, "allValue": ".*", "current": {}, "refresh": 2,
                "sort": 1, "hide": 0, "regex": "", "options": [],
            })
        return {
            "uid": self.uid, "title": self.title, "description": self.description, "tags": list(self.tags),
            "timezone": "utc", "editable": True, "graphTooltip": 1, "schemaVersion": 39, "version": 1,
            "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
            "templating": {"list": variables}, "annotations": {"list": []}, "links": [], "panels": panels,
        }


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    targets = [{"refId": chr(ord("A") + i), "datasource": _DS, "expr": t.expr, "legendFormat": t.legend or "__auto",
                "range": True, "editorMode": "code"} for i, t in enumerate(panel.targets)]
    return {
        "id": panel_id, "type": panel.kind, "title": panel.title, "description": panel.description,
        "datasource": _DS, "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}} if panel.kind == "timeseries" else {},
        "targets": targets,
    }


def _quantiles(metric: str, by: str, selector: str = "") -> tuple[Target, ...]:
    inner = f"sum by (le, {by}) (rate({metric}_bucket{{{selector}}}[{RATE}]))"
    return (Target(f"histogram_quantile(0.5, {inner})", f"p50 {{{{{by}}}}}"),
            Target(f"histogram_quantile(0.99, {inner})", f"p99 {{{{{by}}}}}"))


def sre_dashboard() -> Dashboard:
    """Throughput, lag, latency, errors and dead letters, rebalances, model loads, worker health."""
    return Dashboard(
        uid="museflow-sre", title="museflow / SRE",
        description="Is the pipeline keeping up and healthy? Throughput, consumer lag, latency, dead letters.",
        rows=(
            Row("Throughput", (
                Panel("Events in / out / dead-lettered", (
                    Target(f"sum(rate(museflow_events_in_total[{RATE}]))", "in"),
                    Target(f"sum(rate(museflow_events_out_total[{RATE}]))", "out"),
                    Target(f"sum(rate(museflow_dead_letters_total[{RATE}]))", "dead letters"),
                ), unit="ops", description="Conservation: in = out + dead letters, once lag is zero."),
                Panel("Events in by tenant", (
                    Target(f"sum by (tenant) (rate(museflow_events_in_total[{RATE}]))", "{{tenant}}"),
                ), unit="ops"),
                Panel("Scores by model and role", (
                    Target(f"sum by (model, role) (rate(museflow_events_scored_total[{RATE}]))", "{{model}} {{role}}"),
                ), unit="ops"),
                Panel("Events routed by model", (
                    Target(f"sum by (model) (rate(museflow_events_routed_total[{RATE}]))", "{{model}}"),
                ), unit="ops"),
            )),
            Row("Consumer lag", (
                Panel("Lag by group and topic", (
                    Target("sum by (group, topic) (museflow_consumer_lag_sum)", "{{group}} {{topic}}"),
                ), description="Committed offset vs log end, read from the broker's admin API."),
                Panel("Lag by partition", (
                    Target("max by (group, topic, partition) (museflow_consumer_lag)",
                           "{{group}} {{topic}}[{{partition}}]"),
                )),
                Panel("Age of the lag reading", (
                    Target("time() - max(museflow_consumer_lag_refreshed_timestamp_seconds)", "age"),
                ), unit="s", description="Lag is read every few seconds; a growing age means the reader is stuck."),
            )),
            Row("Latency and batches", (
                Panel("End-to-end latency (event time to emit)",
                      _quantiles("museflow_end_to_end_latency_seconds", "tenant"), unit="s"),
                Panel("Stage latency", _quantiles("museflow_stage_latency_seconds", "stage"), unit="s"),
                Panel("Batch size", (
                    Target(f"histogram_quantile(0.5, sum by (le, stage) (rate(museflow_batch_size_bucket[{RATE}])))",
                           "p50 {{stage}}"),
                    Target(f"sum by (stage) (rate(museflow_batch_size_sum[{RATE}])) / "
                           f"sum by (stage) (rate(museflow_batch_size_count[{RATE}]))", "mean {{stage}}"),
                )),
            )),
            Row("Errors", (
                Panel("Dead letters by reason and stage", (
                    Target(f"sum by (reason, stage) (rate(museflow_dead_letters_total[{RATE}]))",
                           "{{stage}} {{reason}}"),
                ), unit="ops"),
                Panel("Consumer group rebalances", (
                    Target("sum(increase(museflow_rebalances_total[1h]))", "rebalances / 1h"),
                )),
                Panel("Model loads by outcome", (
                    Target("sum by (model, outcome) (increase(museflow_model_loads_total[1h]))",
                           "{{model}} {{outcome}}"),
                )),
                Panel("Models loaded", (Target("sum by (model) (museflow_models_loaded)", "{{model}}"),)),
                Panel("Route changes (model swaps)", (
                    Target("sum by (kind) (increase(museflow_route_changes_total[1h]))", "{{kind}}"),
                )),
            )),
            Row("Workers", (
                Panel("Roles ready", (Target("min by (role) (museflow_worker_ready)", "{{role}}"),),
                      description="1 once a role has joined its group and applied the control topics."),
                Panel("CPU", (
                    Target(f"sum by (instance) (rate(process_cpu_seconds_total{{job=~\"museflow.*\"}}[{RATE}]))",
                           "{{instance}}"),
                ), unit="percentunit"),
                Panel("Resident memory", (
                    Target('sum by (instance) (process_resident_memory_bytes{job=~"museflow.*"})', "{{instance}}"),
                ), unit="bytes"),
            )),
        ),
    )


def models_dashboard() -> Dashboard:
    """Per-tenant alert rates (mapped vs raw), drift, labelled performance, quantile maps, missing data."""
    return Dashboard(
        uid="museflow-models", title="museflow / Model owners", tenant_variable=True,
        description="Do tenants' thresholds keep their meaning? Alert rates, drift, labelled performance, maps.",
        rows=(
            Row("Alert rate at watch thresholds", (
                Panel("Alert rate: mapped vs raw", (
                    Target(f"max by (tenant, threshold, kind) (museflow_alert_rate{{{TENANT}}})",
                           "{{tenant}} > {{threshold}} ({{kind}})"),
                ), unit="percentunit",
                    description="Mapped should hold at the reference's rate through model swaps; raw shows what "
                                "the model alone would do."),
                Panel("Scores by model and role", (
                    Target(f"sum by (tenant, model, role) (rate(museflow_events_scored_total{{{TENANT}}}[{RATE}]))",
                           "{{tenant}} {{model}} {{role}}"),
                ), unit="ops"),
            )),
            Row("Drift of mapped scores against the reference", (
                Panel("PSI", (Target(f"max by (tenant) (museflow_score_drift_psi{{{TENANT}}})", "{{tenant}}"),),
                      description="Below 0.1 stable, 0.1-0.25 watch, above 0.25 shifted."),
                Panel("Jensen-Shannon (bits)", (
                    Target(f"max by (tenant) (museflow_score_drift_js{{{TENANT}}})", "{{tenant}}"),)),
                Panel("Default-value rate by feature (missing data)", (
                    Target(f"(sum by (model, feature) (rate(museflow_feature_defaults_total[{RATE}])) or "
                           f"0 * sum by (model, feature) (rate(museflow_feature_values_total[{RATE}]))) / "
                           f"sum by (model, feature) (rate(museflow_feature_values_total[{RATE}]))",
                           "{{model}} {{feature}}"),
                ), unit="percentunit", width=24),
            )),
            Row("Labelled performance (delayed ground truth)", (
                Panel("Precision at watch thresholds", (
                    Target(f"max by (tenant, cohort, threshold) (museflow_labelled_precision{{{TENANT}}})",
                           "{{tenant}} {{cohort}} > {{threshold}}"),), unit="percentunit"),
                Panel("Recall at watch thresholds", (
                    Target(f"max by (tenant, cohort, threshold) (museflow_labelled_recall{{{TENANT}}})",
                           "{{tenant}} {{cohort}} > {{threshold}}"),), unit="percentunit"),
                Panel("F1 at watch thresholds", (
                    Target(f"max by (tenant, cohort, threshold) (museflow_labelled_f1{{{TENANT}}})",
                           "{{tenant}} {{cohort}} > {{threshold}}"),)),
                Panel("AUC", (Target(f"max by (tenant, cohort) (museflow_labelled_auc{{{TENANT}}})",
                                     "{{tenant}} {{cohort}}"),)),
                Panel("Labels joined", (
                    Target(f"sum by (tenant) (rate(museflow_labels_joined_total{{{TENANT}}}[{RATE}]))",
                           "{{tenant}}"),), unit="ops"),
                Panel("Scores still unlabelled", (
                    Target(f"max by (tenant) (museflow_unlabelled_fraction{{{TENANT}}})", "{{tenant}}"),),
                      unit="percentunit"),
            )),
            Row("Label-free estimates (CBPE, before labels arrive)", (
                Panel("Precision: estimated vs labelled", (
                    Target(f"avg by (tenant, threshold) (museflow_estimated_precision{{{TENANT}}})",
                           "{{tenant}} > {{threshold}} estimated"),
                    Target(f'max by (tenant, threshold) (museflow_labelled_precision{{{TENANT},cohort="_all"}})',
                           "{{tenant}} > {{threshold}} labelled"),
                ), unit="percentunit",
                    description="Estimated from corrected probabilities over the monitor window; labelled over the "
                                "latest joined labels (older traffic). They agree while calibration holds."),
                Panel("Recall: estimated vs labelled", (
                    Target(f"avg by (tenant, threshold) (museflow_estimated_recall{{{TENANT}}})",
                           "{{tenant}} > {{threshold}} estimated"),
                    Target(f'max by (tenant, threshold) (museflow_labelled_recall{{{TENANT},cohort="_all"}})',
                           "{{tenant}} > {{threshold}} labelled"),
                ), unit="percentunit"),
                Panel("Estimated F1 and alert rate", (
                    Target(f"avg by (tenant, threshold) (museflow_estimated_f1{{{TENANT}}})",
                           "{{tenant}} > {{threshold}} F1"),
                    Target(f"avg by (tenant, threshold) (museflow_estimated_alert_rate{{{TENANT}}})",
                           "{{tenant}} > {{threshold}} alert rate"),
                ), unit="percentunit"),
                Panel("Fraud rate: mean p, EM, baseline, labelled", (
                    Target(f"avg by (tenant, method) (museflow_estimated_base_rate{{{TENANT}}})",
                           "{{tenant}} {{method}}"),
                    Target(f'max by (tenant) (museflow_labelled_base_rate{{{TENANT},cohort="_all"}})',
                           "{{tenant}} labelled"),
                ), unit="percentunit",
                    description="EM (Saerens) corrects the mean of p for a prior shift against the day-before "
                                "baseline; EM / baseline beyond 1.5 or under 0.67 raises MuseflowPriorShift."),
                Panel("Candidates: estimated recall vs champion", (
                    Target(f"avg by (tenant, model, threshold) (museflow_candidate_estimated_recall{{{TENANT}}})",
                           "{{tenant}} {{model}} > {{threshold}}"),
                    Target(f"avg by (tenant, threshold) (museflow_estimated_recall{{{TENANT}}})",
                           "{{tenant}} serving > {{threshold}}"),
                ), unit="percentunit",
                    description="Shadow and canary candidates on the events they scored, with their own maps "
                                "(unmapped until a map is fitted); the promote gate compares the same figures."),
                Panel("Expected frauds in the window", (
                    Target(f"sum by (tenant) (museflow_estimated_frauds{{{TENANT}}})", "{{tenant}}"),),
                      description="Sum of corrected probabilities: how much evidence the estimates rest on."),
                Panel("Calibration on labelled scores", (
                    Target(f"max by (tenant, cohort) (museflow_calibration_ece{{{TENANT}}})",
                           "{{tenant}} {{cohort}} ECE"),
                    Target(f"min by (tenant, cohort) (museflow_calibration_trustworthy{{{TENANT}}})",
                           "{{tenant}} {{cohort}} trusted"),
                ), description="Trusted (1) when ECE / fraud rate is within the bound; NaN until enough labelled "
                               "frauds (museflow.observe.estimate.MIN_POSITIVES)."),
            )),
            Row("Quantile maps", (
                Panel("Map age", (
                    Target(f"time() - max by (model, tenant) "
                           f"(museflow_quantile_map_created_timestamp_seconds{{{TENANT}}})", "{{model}} {{tenant}}"),
                ), unit="s"),
                Panel("Samples the map was fitted on", (
                    Target(f"max by (model, tenant) (museflow_quantile_map_samples{{{TENANT}}})",
                           "{{model}} {{tenant}}"),)),
                Panel("Map version in use", (
                    Target(f"max by (model, tenant) (museflow_quantile_map_version{{{TENANT}}})",
                           "{{model}} {{tenant}}"),)),
                Panel("Map publications and holds", (
                    Target("sum by (outcome, reason) (increase(museflow_quantile_map_publications_total[1h]))",
                           "{{outcome}} {{reason}}"),)),
            )),
        ),
    )


def dashboards() -> dict[str, Dashboard]:
    """File stem -> dashboard."""
    return {"museflow-sre": sre_dashboard(), "museflow-models": models_dashboard()}


DASHBOARDS = ("museflow-sre", "museflow-models")


def render(dashboard: Dashboard) -> str:
    """Stable JSON text (sorted keys, two-space indent, final newline)."""
    return json.dumps(dashboard.to_json(), indent=2, sort_keys=True) + "\n"


def queries(dashboard: Dashboard) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every query in a dashboard, template variables included."""
    for panel in dashboard.panels():
        for target in panel.targets:
            yield panel.title, target.expr
    if dashboard.tenant_variable:
        yield "$tenant variable", "museflow_events_in_total"
