"""The demo's printed summary: conservation, who was promoted and how, the alert-rate verdicts per threshold."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from museflow.demo.summary_view import print_summary


def summary() -> dict[str, Any]:
    row = {"tenant": "acme-bank", "target_rate": 0.05, "threshold": 0.2512, "n_before": 9000, "n_after": 8000,
           "mapped_before": 0.05, "mapped_after": 0.051, "mapped_shift": 0.02, "raw_before": 0.05,
           "raw_after": 0.2, "raw_shift": 3.0, "judged": True, "mapped_held": True, "raw_moved": True}
    return {
        "events": {"produced": 20_000, "malformed": 40, "scored": 19_960, "dead_letters": 40, "conserved": True,
                   "labels_sent": 19_960, "labels_joined": 15_000, "achieved_rate": 1490.2, "producer_paced_s": 3.0},
        "swap": {"promoted": {"acme-bank": True, "initech-fin": False}, "lead_time_s": 4.2, "deployed_at_s": 16.0,
                 "promoted_at_s": 20.2, "not_promoted": {"initech-fin": "not promoted: v2's map is not fitted"},
                 "lead_time_by_rehearsal_s": 4.2, "lead_time_by_shadow_s": {"acme-bank": 9.0, "initech-fin": None},
                 "promoted_by": {"acme-bank": "rehearsal"},
                 "rehearsal": {"predicted_vs_live": [
                     {"tenant": "acme-bank", "threshold": 0.2512, "predicted": 0.05, "live": 0.051,
                      "enough_samples": True, "within_15pct": True}]},
                 "contract": {"terms": "±10% at 95%", "rows": {"acme-bank": [
                     {"target": 0.05, "threshold": 0.2512, "verdict": "holds", "samples": 9000,
                      "samples_needed": 7000}]}}},
        "alert_rates": {"tolerance": "|after - before| <= 10%", "rows": [row], "judged_rows": 1,
                        "mapped_held": True, "raw_moved": True},
        "auc": {"acme-bank/card-not-present": {"corrected": 0.91, "mapped": 0.91}},
        "latency_s": {"acme-bank": {"p50": 0.04, "p99": None}},
        "settings": {"refit_interval_seconds": 3.0, "refit_window_seconds": 60.0, "refit_min_samples": 500,
                     "refit_min_tail_samples": 3, "refit_max_alert_rate_shift": 1.0, "label_delay_s": 5.0,
                     "drift": 0.05, "bad_fraction": 0.002},
    }


def test_the_summary_says_what_held_what_moved_and_who_was_promoted_how() -> None:
    console = Console(width=220, record=True)
    print_summary(console, summary())
    text = console.export_text()
    for expected in ("20,000 produced (40 malformed) = 19,960 scored + 40 dead letters -> conserved",
                     "producer paced 3 s", "promoted for acme-bank at 20 s (lead time 4 s)",
                     "initech-fin: not promoted: v2's map is not fitted",
                     "lead time deploy -> promote: by rehearsal 4.2 s (acme-bank); by shadow (first map fitted on "
                     "live traffic) acme-bank 9 s",
                     "within ±15% on 1 of 1 rows", "holds (9,000/7,000)", "+2.0% held", "+300.0% moved",
                     "mapped alert rates held across the swap on all 1 judged rows",
                     "latency p50 / p99: acme-bank 40 ms / -", "alert-rate shift guard 100%"):
        assert expected in text, expected
