"""The end of the run: the swap report and ``summary.json``, from the score log, the labels and what the run did."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from museflow.config import Settings
from museflow.control.contract import Contract
from museflow.control.rehearsal import PREDICTION_CHECK
from museflow.demo.loadgen import CARD_NOT_PRESENT
from museflow.demo.producing import ProduceSummary
from museflow.demo.scenario import BAD_FRACTION, DRIFT, REFIT_MAX_SHIFT, TRAIN_EVENTS, V1, V2, DemoOptions, SwapRecord
from museflow.demo.stack import output_counts
from museflow.demo.view import (
    TOLERANCE_TEXT,
    WATCH_RATES,
    JudgedRow,
    MetricsSnapshot,
    PhasePlan,
    histogram_quantile,
    judge_row,
)
from museflow.kafka.clients import read_topic
from museflow.kafka.plane import read_state
from museflow.kafka.schema_registry import serdes_from_settings
from museflow.kafka.scorelog import read_score_log
from museflow.observe.swapreport import build_swap_report, write_report

__all__ = ["RunFacts", "write_summary"]


@dataclass(frozen=True)
class RunFacts:
    """What the run measured on its way, besides the swap record: the summary's inputs."""

    produced: ProduceSummary
    last_scrape: MetricsSnapshot
    paced_s: float
    producer_stopped_s: float | None
    steps: list[str]


def write_summary(settings: Settings, options: DemoOptions, plan: PhasePlan, swap: SwapRecord, facts: RunFacts,
                  worker_log: Path) -> dict[str, Any]:
    """Read the score log and labels back, write the swap report and summary.json; return the summary."""
    out = options.out_dir
    state = read_state(settings)
    refs = swap.references
    records = read_score_log(settings, where=lambda r: r["served"] and r["intent"] == CARD_NOT_PRESENT
                             and r["model"] == V1.name and r["reference"] == refs.get(r["tenant"]))
    report = build_swap_report(records, str(V1), str(V2), state.references, labels=_read_labels(settings),
                               alert_rates=WATCH_RATES)
    out.mkdir(parents=True, exist_ok=True)
    md = write_report(report, out) if report.rows else None
    judged = [judge_row(r.tenant, r.target_rate, r.threshold, r.n_before, r.n_after, r.mapped_before,
                        r.mapped_after, r.raw_before, r.raw_after) for r in report.rows]
    scored, dead = output_counts(settings, options.tenants)
    snap, p = facts.last_scrape, facts.produced
    counted = [j for j in judged if j.judged]
    summary: dict[str, Any] = {
        "duration_s": options.duration_s, "rate": options.rate, "tenants": list(options.tenants),
        "seed": options.seed,
        "plan": {"onboarding_s": plan.onboarding_s, "shadow_s": plan.shadow_s,
                 "after_s": plan.after_s, "text": plan.describe(),
                 "actual": {"shadow_started_s": swap.deployed_at, "promoted_at_s": swap.promoted_at,
                            "producer_stopped_s": facts.producer_stopped_s}},
        "settings": {"refit_interval_seconds": settings.refit_interval_seconds,
                     "refit_window_seconds": settings.refit_window_seconds,
                     "refit_min_samples": settings.refit_min_samples, "refit_max_alert_rate_shift": REFIT_MAX_SHIFT,
                     "refit_min_tail_samples": settings.refit_min_tail_samples,
                     "label_delay_s": options.label_delay_s,
                     "drift": DRIFT, "bad_fraction": BAD_FRACTION, "partitions": settings.partitions,
                     "train_events": TRAIN_EVENTS},
        "events": {
            "produced": p.sent, "acknowledged": p.acked, "failed": p.failed, "good": p.good,
            "malformed": p.bad_total, "malformed_by_kind": dict(sorted(p.bad_by_kind.items())),
            "scored": scored, "dead_letters": dead,
            "dead_letters_by_reason": {k: int(v) for k, v in sorted(snap.by("museflow_dead_letters_total",
                                                                             "reason").items())},
            "conserved": scored + dead == p.sent,
            "labels_sent": p.labels_sent, "labels_joined": int(snap.sum("museflow_labels_joined_total")),
            "achieved_rate": round(p.achieved_rate, 1),
            "producer_paced_s": round(facts.paced_s, 1),
        },
        "swap": {
            "old": str(V1), "new": str(V2), "references": refs, "reference_samples": swap.freeze_samples,
            "watch_thresholds": {t: {f"{r:.1%}": tau for r, tau in w} for t, w in swap.watch.items()},
            "deployed_at_s": swap.deployed_at, "promoted_at_s": swap.promoted_at,
            "lead_time_s": (swap.promoted_at - swap.deployed_at
                            if swap.promoted_at is not None and swap.deployed_at is not None else None),
            "promoted": swap.promoted, "not_promoted": swap.not_promoted,
            "promoted_by": swap.promoted_by,
            "lead_time_by_rehearsal_s": (swap.rehearsal_promoted_at - swap.deployed_at
                                         if swap.rehearsal_promoted_at is not None
                                         and swap.deployed_at is not None else None),
            "lead_time_by_shadow_s": swap.shadow_map_lead_s,
            "v2_maps_at_promotion": swap.v2_maps,
            "contract": {"terms": Contract.from_settings(settings).describe(), "rows": swap.contract},
            "rehearsal": {**swap.rehearsal, "predicted_vs_live": _predicted_vs_live(swap, judged)},
        },
        "alert_rates": {
            "tolerance": TOLERANCE_TEXT, "rows": [j.to_json() for j in judged],
            "judged_rows": len(counted),
            "mapped_held": bool(counted) and all(j.mapped_held for j in counted),
            "raw_moved": bool(counted) and all(j.raw_moved for j in counted),
        },
        "auc": report.auc,
        "latency_s": {t: {"p50": _finite(histogram_quantile(0.5, b)), "p99": _finite(histogram_quantile(0.99, b))}
                      for t in options.tenants
                      for b in [snap.buckets("museflow_end_to_end_latency_seconds", tenant=t)]},
        "report": str(md) if md else None,
        "steps": facts.steps,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=_json_default))
    with contextlib.suppress(OSError):
        shutil.copyfile(worker_log, out / "worker.log")
    return summary


def _predicted_vs_live(swap: SwapRecord, judged: list[JudgedRow]) -> list[dict[str, Any]]:
    """The rehearsal's predicted alert rate next to the live mapped rate after the swap.

    A row has enough samples when the sampling error of the rehearsal's map (fitted on its
    samples) and of the live rate (measured on the scores after the swap), combined, keeps a
    correct prediction within ±15% at 99% confidence (:data:`PREDICTION_CHECK`).
    """
    live = {(j.row.tenant, round(j.row.threshold, 6)): (j.row.mapped_after, j.row.n_after) for j in judged}
    out = []
    for row in swap.rehearsal.get("rows", []):
        after, n_after = live.get((row["tenant"], round(row["threshold"], 6)), (None, 0))
        if after is None or swap.promoted_by.get(row["tenant"]) != "rehearsal":
            continue
        enough = PREDICTION_CHECK.can_compare(row["target"], row["samples"], n_after)
        out.append({"tenant": row["tenant"], "threshold": row["threshold"], "predicted": row["predicted"],
                    "live": after, "samples": row["samples"], "live_samples": n_after, "enough_samples": enough,
                    "within_15pct": bool(row["predicted"]) and abs(after / row["predicted"] - 1) <= 0.15})
    return out


def _read_labels(settings: Settings) -> dict[str, bool]:
    serde = serdes_from_settings(settings).labels
    return {label["event_id"]: bool(label["is_fraud"]) for record in read_topic(settings, settings.topics.labels)
            if record.value is not None for label in [serde.decode(record.value)]}


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else x


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return str(value)
