"""The pure parts of ``museflow demo``: phase plan, metric snapshots, per-tenant rows, verdicts, the live view.

Everything here works on data — Prometheus text exposition scraped from a worker, and plain
records of what the demo did — so it is unit-tested without a broker. The rest of the demo
(:mod:`museflow.demo.scrape`, :mod:`museflow.demo.operations`, :mod:`museflow.demo.live`) scrapes,
acts on Kafka and hands the results to these functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from museflow.demo.loadgen import CARD_NOT_PRESENT, TenantProfile
from museflow.errors import ConfigError
from museflow.observe.monitoring import threshold_label
from museflow.observe.swapreport import ThresholdRow

__all__ = [
    "WATCH_RATES",
    "DemoStatus",
    "JudgedRow",
    "MetricsSnapshot",
    "PhasePlan",
    "TenantSwap",
    "TenantView",
    "histogram_quantile",
    "judge_row",
    "refit_guards_for",
    "render_view",
    "tenant_views",
]

WATCH_RATES = (0.05, 0.01, 0.005)
"""Alert rates whose reference thresholds become each tenant's watch (decision) thresholds."""

LabelSet = tuple[tuple[str, str], ...]


def _labels(labels: Mapping[str, str]) -> LabelSet:
    return tuple(sorted(labels.items()))


@dataclass(frozen=True)
class MetricsSnapshot:
    """One scrape of a worker's ``/metrics``: sample name -> [(labels, value)], taken at ``at`` (seconds)."""

    at: float
    samples: Mapping[str, Sequence[tuple[LabelSet, float]]]

    @classmethod
    def parse(cls, text: str, at: float) -> MetricsSnapshot:
        """Parse Prometheus text exposition (``_created`` series are dropped)."""
        samples: dict[str, list[tuple[LabelSet, float]]] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name.endswith("_created"):
                    continue
                samples.setdefault(s.name, []).append((_labels(s.labels), float(s.value)))
        return cls(at, samples)

    @classmethod
    def empty(cls, at: float = 0.0) -> MetricsSnapshot:
        return cls(at, {})

    def series(self, name: str, **match: str) -> list[tuple[dict[str, str], float]]:
        """Samples of ``name`` whose labels include ``match``."""
        out = []
        for labels, value in self.samples.get(name, ()):
            d = dict(labels)
            if all(d.get(k) == v for k, v in match.items()):
                out.append((d, value))
        return out

    def sum(self, name: str, **match: str) -> float:
        return sum(v for _, v in self.series(name, **match))

    def value(self, name: str, **match: str) -> float:
        """The single matching sample's value (the max when several match), nan when none."""
        found = [v for _, v in self.series(name, **match)]
        return max(found) if found else math.nan

    def buckets(self, name: str, **match: str) -> list[tuple[float, float]]:
        """Cumulative histogram buckets ``(le, count)`` of ``name`` summed over the matching series."""
        totals: dict[float, float] = {}
        for labels, value in self.series(f"{name}_bucket", **match):
            le = float(labels["le"])
            totals[le] = totals.get(le, 0.0) + value
        return sorted(totals.items())

    def by(self, name: str, label: str, **match: str) -> dict[str, float]:
        """Sum of ``name`` per value of ``label``."""
        out: dict[str, float] = {}
        for labels, value in self.series(name, **match):
            key = labels.get(label, "")
            out[key] = out.get(key, 0.0) + value
        return out


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Prometheus' ``histogram_quantile``: linear interpolation inside the bucket holding rank ``q``.

    ``buckets`` are cumulative ``(upper bound, count)`` pairs, ``+Inf`` last; nan when empty.
    A rank in the ``+Inf`` bucket returns the highest finite bound.
    """
    if not buckets or not 0.0 <= q <= 1.0:
        return math.nan
    ordered = sorted(buckets)
    total = ordered[-1][1]
    if total <= 0:
        return math.nan
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


Buckets = Sequence[tuple[float, float]]


def _bucket_delta(now: Buckets, before: Buckets) -> list[tuple[float, float]]:
    old = dict(before)
    return [(le, max(0.0, count - old.get(le, 0.0))) for le, count in now]


@dataclass(frozen=True)
class PhasePlan:
    """How a run of ``duration_s`` seconds of traffic is split: onboarding, shadow, after the swap."""

    duration_s: float
    onboarding_s: float
    shadow_s: float
    after_s: float

    SHARES = (0.25, 0.40, 0.35)

    @classmethod
    def for_duration(cls, duration_s: float) -> PhasePlan:
        if duration_s < 20:
            raise ConfigError(f"--duration {duration_s:g}: the demo needs at least 20 s of traffic "
                              "(onboarding, shadow and after-swap phases)")
        a, b, c = (duration_s * s for s in cls.SHARES)
        return cls(duration_s, a, b, c)

    @property
    def promote_at(self) -> float:
        return self.onboarding_s + self.shadow_s

    def describe(self) -> str:
        return (f"{self.duration_s:.0f} s of traffic: onboarding {self.onboarding_s:.0f} s (25%), "
                f"v2 in shadow {self.shadow_s:.0f} s (40%), after the swap {self.after_s:.0f} s (35%)")


def refit_guards_for(rate: float, shares: Mapping[str, float], shadow_s: float) -> tuple[int, int]:
    """``(min_samples, min_tail_samples)`` for the embedded refit agent, sized to the demo's traffic.

    The smallest tenant must get its own v2 map within the shadow phase even when the worker runs
    well below ``rate`` (a busy machine): min samples is 25% of what it is expected to send in the
    whole phase (between 500 and 5,000); the tail guard asks for 60% of the scores then expected
    above the 0.5% threshold (at least 3).
    """
    smallest = min(shares.values()) if shares else 1.0
    expected = rate * smallest * shadow_s
    min_samples = int(min(5000, max(500, round(expected * 0.25, -2))))
    min_tail = max(3, int(min_samples * min(WATCH_RATES) * 0.6))
    return min_samples, min_tail


def cnp_shares(profiles: Iterable[TenantProfile]) -> dict[str, float]:
    """Each tenant's share of all events that are card-not-present (the swapped route's traffic)."""
    items = list(profiles)
    total = sum(p.weight for p in items)
    out = {}
    for p in items:
        share = dict(zip(p.intents, p.shares(), strict=True)).get(CARD_NOT_PRESENT, 0.0)
        out[p.name] = p.weight / total * share
    return out


@dataclass
class TenantSwap:
    """What the demo knows about one tenant's swap (from the control topics, refreshed in the background)."""

    champion: str = "fraud-cnp@1"
    route_version: int = 0
    reference: str = "uniform@1"
    map_in_use: str = "identity"
    watch: tuple[float, ...] = ()
    v2_map: str = "-"
    promoted: bool = False
    note: str = ""


@dataclass
class DemoStatus:
    """The run's state the view shows besides the metrics."""

    plan: PhasePlan
    elapsed_s: float = 0.0
    phase: str = "starting"
    produced: int = 0
    acked: int = 0
    bad: int = 0
    labels_sent: int = 0
    paced: bool = False
    paced_s: float = 0.0
    min_samples: int = 0
    min_tail_samples: int = 0
    tenants: dict[str, TenantSwap] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)

    def step(self, message: str) -> None:
        self.steps.append(f"{self.elapsed_s:5.1f}s  {message}")


@dataclass(frozen=True)
class TenantView:
    """One row of the live table."""

    tenant: str
    in_rate: float
    out_rate: float
    queued: float
    p50: float
    p99: float
    alerts: tuple[tuple[float, float, float, float], ...]
    """(target rate, threshold, mapped alert rate, raw alert rate) per watch threshold."""
    psi: float
    js: float
    shadow_samples: float


def tenant_views(now: MetricsSnapshot, before: MetricsSnapshot, tenants: Sequence[str],
                 watch: Mapping[str, Sequence[tuple[float, float]]]) -> list[TenantView]:
    """Per-tenant rates and latency quantiles over ``before -> now``; gauges as of ``now``.

    ``watch`` maps a tenant to its (target rate, threshold) pairs. ``queued`` is routed to a
    model topic but not yet scored; rates are per second over the interval between snapshots.
    """
    span = now.at - before.at
    rows = []
    for tenant in tenants:
        def rate(name: str, _t: str = tenant) -> float:
            if span <= 0:
                return math.nan
            return max(0.0, now.sum(name, tenant=_t) - before.sum(name, tenant=_t)) / span

        latency = _bucket_delta(now.buckets("museflow_end_to_end_latency_seconds", tenant=tenant),
                                before.buckets("museflow_end_to_end_latency_seconds", tenant=tenant))
        if not latency or latency[-1][1] <= 0:
            latency = list(now.buckets("museflow_end_to_end_latency_seconds", tenant=tenant))
        alerts = tuple(
            (target, tau,
             now.value("museflow_alert_rate", tenant=tenant, threshold=threshold_label(tau), kind="mapped"),
             now.value("museflow_alert_rate", tenant=tenant, threshold=threshold_label(tau), kind="raw"))
            for target, tau in watch.get(tenant, ()))
        rows.append(TenantView(
            tenant=tenant,
            in_rate=rate("museflow_events_in_total"),
            out_rate=rate("museflow_events_out_total"),
            queued=max(0.0, now.sum("museflow_events_routed_total", tenant=tenant)
                       - now.sum("museflow_events_scored_total", tenant=tenant, role="champion")
                       - now.sum("museflow_events_scored_total", tenant=tenant, role="canary")),
            p50=histogram_quantile(0.5, latency),
            p99=histogram_quantile(0.99, latency),
            alerts=alerts,
            psi=now.value("museflow_score_drift_psi", tenant=tenant),
            js=now.value("museflow_score_drift_js", tenant=tenant),
            shadow_samples=now.sum("museflow_events_scored_total", tenant=tenant, intent=CARD_NOT_PRESENT,
                                   role="shadow"),
        ))
    return rows


@dataclass(frozen=True)
class JudgedRow:
    """A swap report row with the demo's verdict: did the mapped alert rate hold, did the raw one move."""

    row: ThresholdRow
    judged: bool
    mapped_bound: float
    raw_bound: float

    @property
    def mapped_held(self) -> bool:
        return abs(self.row.mapped_after - self.row.mapped_before) <= self.mapped_bound

    @property
    def raw_moved(self) -> bool:
        return abs(self.row.raw_after - self.row.raw_before) > self.raw_bound

    def to_json(self) -> dict[str, Any]:
        r = self.row
        return {
            "tenant": r.tenant, "target_rate": r.target_rate, "threshold": r.threshold,
            "n_before": r.n_before, "n_after": r.n_after,
            "mapped_before": r.mapped_before, "mapped_after": r.mapped_after, "mapped_shift": r.mapped_shift,
            "raw_before": r.raw_before, "raw_after": r.raw_after, "raw_shift": r.raw_shift,
            "judged": self.judged, "mapped_bound": self.mapped_bound, "raw_bound": self.raw_bound,
            "mapped_held": self.mapped_held, "raw_moved": self.raw_moved,
        }


REL_TOLERANCE = 0.10
Z = 3.0
MIN_EXPECTED_ALERTS = 100  # below this, the map fitted on a short shadow phase errs by about the bound itself
TOLERANCE_TEXT = (f"|after - before| <= {REL_TOLERANCE:.0%} of before + {Z:g} binomial standard errors "
                  f"(rows with at least {MIN_EXPECTED_ALERTS} expected alerts on each side are judged)")


def _bound(before: float, n_before: int, n_after: int) -> float:
    if n_before == 0 or n_after == 0 or math.isnan(before):
        return math.nan
    p = min(max(before, 1e-9), 1 - 1e-9)
    return REL_TOLERANCE * before + Z * math.sqrt(p * (1 - p) * (1 / n_before + 1 / n_after))


def judge_row(tenant: str, target_rate: float, threshold: float, n_before: int, n_after: int,
              mapped_before: float, mapped_after: float, raw_before: float, raw_after: float) -> JudgedRow:
    """Whether the mapped alert rate held and the raw one moved, within :data:`TOLERANCE_TEXT`."""
    judged = min(n_before, n_after) * target_rate >= MIN_EXPECTED_ALERTS
    row = ThresholdRow(tenant, "", target_rate, threshold, n_before, n_after, mapped_before, mapped_after,
                       raw_before, raw_after)
    return JudgedRow(row, judged, _bound(mapped_before, n_before, n_after), _bound(raw_before, n_before, n_after))


def _pct(x: float, digits: int = 2) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.{digits}%}"


def _num(x: float, fmt: str = ",.0f") -> str:
    return "-" if math.isnan(x) else format(x, fmt)


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.0f} s"


def _alert_cell(alerts: Sequence[tuple[float, float, float, float]], kind: int) -> Text:
    if not alerts:
        return Text("set at onboarding", style="dim")
    text = Text()
    for i, (target, _tau, mapped, raw) in enumerate(alerts):
        value = mapped if kind == 0 else raw
        off = not math.isnan(value) and abs(value - target) > 0.5 * target
        text.append(f"{'' if i == 0 else chr(10)}{target:.1%}: ", style="dim")
        text.append(_pct(value), style="yellow" if off else "")
    return text


def render_view(status: DemoStatus, views: Sequence[TenantView], now: MetricsSnapshot) -> RenderableType:
    """The live terminal view: run header, the per-tenant table, pipeline figures, swap steps."""
    plan = status.plan
    done = min(1.0, status.elapsed_s / plan.duration_s) if plan.duration_s else 0.0
    bar_width = 40
    marks = [int(bar_width * s) for s in (plan.onboarding_s / plan.duration_s, plan.promote_at / plan.duration_s)]
    bar = Text()
    for i in range(bar_width):
        ch = "|" if i in marks else ("━" if i < int(done * bar_width) else "─")
        bar.append(ch, style="green" if i < int(done * bar_width) else "dim")
    header = Text.assemble(
        ("museflow demo  ", "bold"), (f"{status.phase}  ", "bold cyan"),
        f"{status.elapsed_s:5.0f}/{plan.duration_s:.0f} s  ", bar,
        ("   onboarding | shadow | after swap", "dim"),
        ("\nproducer paced to the worker (it is behind: busy machine?)" if status.paced else "", "yellow"))

    table = Table(expand=False, show_lines=True, title_justify="left")
    right = {"in/s", "scored/s", "queued", "p50 / p99", "drift PSI / JS"}
    for col in ("tenant", "in/s", "scored/s", "queued", "p50 / p99", "alert rate mapped", "alert rate raw",
                "drift PSI / JS", "model / map in use", "swap: v2 shadow samples / map / promoted"):
        table.add_column(col, justify="right" if col in right else "left")
    for v in views:
        swap = status.tenants.get(v.tenant, TenantSwap())
        needed = status.min_samples
        samples = Text(f"{_num(v.shadow_samples)}/{needed:,}",
                       style="green" if v.shadow_samples >= needed else "")
        progress = Text.assemble(samples, "  ", swap.v2_map, "  ",
                                 ("promoted" if swap.promoted else "-", "bold green" if swap.promoted else "dim"))
        if swap.note:
            progress.append(f"\n{swap.note}", style="yellow")
        table.add_row(
            v.tenant, _num(v.in_rate), _num(v.out_rate), _num(v.queued),
            f"{_ms(v.p50)} / {_ms(v.p99)}",
            _alert_cell(v.alerts, 0), _alert_cell(v.alerts, 1),
            f"{_num(v.psi, '.3f')} / {_num(v.js, '.3f')}",
            f"{swap.champion} route v{swap.route_version}\n{swap.map_in_use}",
            progress,
        )

    lag = now.by("museflow_consumer_lag", "topic")
    dead = now.by("museflow_dead_letters_total", "reason")
    pipeline = Text.assemble(
        ("produced ", "dim"), f"{status.produced:,}", ("  acked ", "dim"), f"{status.acked:,}",
        ("  malformed sent ", "dim"), f"{status.bad:,}", ("  labels sent ", "dim"), f"{status.labels_sent:,}",
        ("  scored ", "dim"), f"{now.sum('museflow_events_out_total'):,.0f}",
        ("  dead letters ", "dim"), f"{sum(dead.values()):,.0f}",
        ("  labels joined ", "dim"), f"{now.sum('museflow_labels_joined_total'):,.0f}",
        ("\nconsumer lag (broker) ", "dim"),
        "  ".join(f"{t.rsplit('.', 1)[-1] if t.count('.') < 2 else t.split('.', 1)[1]} {n:,.0f}"
                  for t, n in sorted(lag.items())) or "-",
        ("\ndead letters by reason ", "dim"),
        "  ".join(f"{r} {n:,.0f}" for r, n in sorted(dead.items(), key=lambda kv: -kv[1])) or "-",
        ("\nrefit guards ", "dim"), f"min samples {status.min_samples:,}, min tail samples {status.min_tail_samples}",
    )
    steps = Text("\n".join(status.steps[-7:]) or "-")
    caption = Text(
        "queued: routed to a model topic, not yet scored. p50/p99: end-to-end latency over the last seconds. "
        "alert rate: museflow_alert_rate at the tenant's thresholds (the reference's 5% / 1% / 0.5%), over the "
        "scorer's window; yellow = more than 50% off the target. drift: PSI / Jensen-Shannon of mapped scores "
        "vs the tenant's reference.", style="dim")
    return Group(header, table, caption, Panel(pipeline, title="pipeline", title_align="left"),
                 Panel(steps, title="what the demo did", title_align="left"))
