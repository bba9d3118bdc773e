"""The demo's pure parts: metric parsing, latency quantiles, per-tenant rows, phase plan, verdicts, the view."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from rich.console import Console

from museflow.demo.loadgen import DEFAULT_TENANTS
from museflow.demo.view import (
    WATCH_RATES,
    DemoStatus,
    MetricsSnapshot,
    PhasePlan,
    TenantSwap,
    cnp_shares,
    histogram_quantile,
    judge_row,
    refit_guards_for,
    render_view,
    tenant_views,
)
from museflow.errors import ConfigError
from museflow.observe.metrics import LATENCY_BUCKETS, PipelineMetrics
from museflow.observe.monitoring import threshold_label


def exposition(events: int, latencies: list[float], *, shadow: int = 0, dead: int = 0) -> str:
    """The text a worker would serve after scoring ``events`` acme-bank events with these latencies."""
    m = PipelineMetrics(CollectorRegistry())
    m.events_in.labels("acme-bank", "card-not-present").inc(events + 5)
    m.events_routed.labels("acme-bank", "card-not-present", "fraud-cnp").inc(events + 5)
    m.events_scored.labels("acme-bank", "card-not-present", "fraud-cnp", "champion").inc(events)
    m.events_scored.labels("acme-bank", "card-not-present", "fraud-cnp", "shadow").inc(shadow)
    m.events_out.labels("acme-bank", "card-not-present").inc(events)
    for latency in latencies:
        m.end_to_end_latency.labels("acme-bank").observe(latency)
    m.alert_rate.labels("acme-bank", threshold_label(0.25), "mapped").set(0.05)
    m.alert_rate.labels("acme-bank", threshold_label(0.25), "raw").set(0.31)
    m.drift_psi.labels("acme-bank").set(0.02)
    m.drift_js.labels("acme-bank").set(0.004)
    text = generate_latest(m.registry).decode()
    text += f'museflow_dead_letters_total{{reason="undecodable",stage="router"}} {dead}.0\n'
    text += 'museflow_consumer_lag{group="museflow",partition="0",topic="museflow.events"} 12.0\n'
    return text


def test_snapshot_parses_counters_histograms_and_gauges_and_drops_created_series() -> None:
    snap = MetricsSnapshot.parse(exposition(100, [0.03] * 10, dead=3), at=10.0)
    assert snap.sum("museflow_events_out_total", tenant="acme-bank") == 100
    assert snap.sum("museflow_events_out_total", tenant="globex-pay") == 0
    assert snap.value("museflow_alert_rate", tenant="acme-bank", kind="raw") == pytest.approx(0.31)
    assert math.isnan(snap.value("museflow_alert_rate", tenant="nobody"))
    assert snap.by("museflow_dead_letters_total", "reason") == {"undecodable": 3}
    assert snap.by("museflow_consumer_lag", "topic") == {"museflow.events": 12}
    assert not any(name.endswith("_created") for name in snap.samples)
    buckets = snap.buckets("museflow_end_to_end_latency_seconds", tenant="acme-bank")
    assert [le for le, _ in buckets] == [*LATENCY_BUCKETS, math.inf]
    assert buckets[-1][1] == 10


def test_histogram_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    buckets = [(0.1, 0.0), (0.2, 100.0), (0.5, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.199)
    assert histogram_quantile(0.5, [(1.0, 10.0), (math.inf, 20.0)]) == pytest.approx(1.0)
    assert math.isnan(histogram_quantile(0.5, []))
    assert math.isnan(histogram_quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]))


def test_tenant_rows_take_rates_and_latency_over_the_interval_between_scrapes() -> None:
    before = MetricsSnapshot.parse(exposition(1000, [5.0] * 50), at=100.0)
    now = MetricsSnapshot.parse(exposition(3000, [5.0] * 50 + [0.04] * 200, shadow=700), at=104.0)
    (row,) = tenant_views(now, before, ["acme-bank"], {"acme-bank": [(0.05, 0.25)]})
    assert row.out_rate == pytest.approx(500.0)
    assert row.in_rate == pytest.approx(500.0)
    assert row.queued == 5
    # Only the 200 observations of the interval count: all between 25 and 50 ms, none of the old 5 s ones.
    assert 0.025 < row.p50 < 0.05 and 0.025 < row.p99 <= 0.05
    assert row.alerts == ((0.05, 0.25, pytest.approx(0.05), pytest.approx(0.31)),)
    assert row.psi == pytest.approx(0.02) and row.js == pytest.approx(0.004)
    assert row.shadow_samples == 700


def test_a_tenant_without_metrics_yet_shows_nothing_rather_than_failing() -> None:
    empty = MetricsSnapshot.empty()
    (row,) = tenant_views(empty, empty, ["initech-fin"], {})
    assert math.isnan(row.in_rate) and math.isnan(row.p99) and row.alerts == ()


def test_phase_plan_splits_the_duration_25_40_35_and_refuses_too_short_runs() -> None:
    plan = PhasePlan.for_duration(120)
    assert (plan.onboarding_s, plan.shadow_s, plan.after_s) == pytest.approx((30, 48, 42))
    assert plan.promote_at == pytest.approx(78)
    assert plan.onboarding_s + plan.shadow_s + plan.after_s == pytest.approx(plan.duration_s)
    assert "onboarding 30 s (25%)" in plan.describe()
    with pytest.raises(ConfigError, match="at least 20 s"):
        PhasePlan.for_duration(10)


def test_refit_guards_are_sized_so_the_smallest_tenant_gets_its_own_map_in_the_shadow_phase() -> None:
    shares = cnp_shares(DEFAULT_TENANTS)
    assert sum(shares.values()) == pytest.approx(0.45 + 0.255 + 0.06)
    assert min(shares, key=shares.__getitem__) == "initech-fin"
    min_samples, min_tail = refit_guards_for(1000, shares, 48)
    expected_smallest = 1000 * shares["initech-fin"] * 48
    assert 500 <= min_samples <= 0.5 * expected_smallest
    assert min_tail >= 3
    assert refit_guards_for(100_000, shares, 48)[0] == 5000
    assert refit_guards_for(10, shares, 48)[0] == 500


def test_judge_row_holds_within_sampling_noise_and_sees_a_raw_move() -> None:
    row = judge_row("acme-bank", 0.01, 0.12, 20_000, 20_000, 0.0100, 0.0106, 0.0100, 0.0700)
    assert row.judged and row.mapped_held and row.raw_moved
    moved = judge_row("acme-bank", 0.01, 0.12, 20_000, 20_000, 0.0100, 0.0150, 0.0100, 0.0700)
    assert not moved.mapped_held
    small = judge_row("initech-fin", 0.005, 0.39, 2_000, 1_500, 0.004, 0.009, 0.004, 0.05)
    assert not small.judged
    as_json = row.to_json()
    assert as_json["mapped_shift"] == pytest.approx(0.06)
    assert as_json["raw_shift"] == pytest.approx(6.0)
    assert as_json["mapped_held"] is True and as_json["judged"] is True


def test_the_live_view_renders_every_tenant_with_its_swap_progress() -> None:
    plan = PhasePlan.for_duration(120)
    status = DemoStatus(plan, elapsed_s=80, phase="after swap", produced=80_000, acked=80_000, min_samples=1000,
                        min_tail_samples=5)
    status.tenants = {"acme-bank": TenantSwap(champion="fraud-cnp@2", route_version=4, promoted=True,
                                              v2_map="map v9 (21,000)", map_in_use="map v9 (21,000) -> ref"),
                      "initech-fin": TenantSwap(note="not promoted: 700 shadow samples of 1,000")}
    status.step("deployed fraud-cnp@2 as a shadow")
    before = MetricsSnapshot.parse(exposition(1000, [0.04] * 10), at=1.0)
    now = MetricsSnapshot.parse(exposition(2000, [0.04] * 20, shadow=1500, dead=4), at=3.0)
    views = tenant_views(now, before, ["acme-bank", "initech-fin"],
                         {"acme-bank": [(r, 0.25) for r in WATCH_RATES[:1]]})
    console = Console(width=220, record=True)
    console.print(render_view(status, views, now))
    text = console.export_text()
    for expected in ("after swap", "acme-bank", "initech-fin", "fraud-cnp@2 route v4", "promoted", "1,500/1,000",
                     "5.00%", "31.00%", "not promoted: 700 shadow samples", "undecodable 4", "events 12",
                     "deployed fraud-cnp@2 as a shadow", "set at onboarding"):
        assert expected in text, expected
