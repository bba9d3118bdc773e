"""The run's summary as printed at the end: conservation, the swap and its lead times, the alert-rate verdicts."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["print_summary"]


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    """Print what ``summary.json`` says, verdicts first, the alert-rate table, then latency and the settings."""
    c = console
    ev, swap, ar = summary["events"], summary["swap"], summary["alert_rates"]
    c.rule("[bold]museflow demo: summary")
    c.print(f"events: {ev['produced']:,} produced ({ev['malformed']:,} malformed) = {ev['scored']:,} scored + "
            f"{ev['dead_letters']:,} dead letters -> "
            + ("[green]conserved[/green]" if ev["conserved"] else "[red]NOT conserved[/red]")
            + f"; {ev['labels_sent']:,} delayed labels sent, {ev['labels_joined']:,} joined; "
            f"{ev['achieved_rate']:,.0f} events/s achieved"
            + (f" (producer paced {ev['producer_paced_s']:.0f} s while the worker caught up)"
               if ev["producer_paced_s"] >= 1 else ""))
    promoted = [t for t, ok in swap["promoted"].items() if ok]
    lead = f"{swap['lead_time_s']:.0f} s" if swap["lead_time_s"] is not None else "-"
    c.print(f"swap: fraud-cnp@2 deployed as shadow at {swap['deployed_at_s'] or 0:.0f} s, promoted for "
            f"{', '.join(promoted) or 'no tenant'} at {swap['promoted_at_s'] or 0:.0f} s (lead time {lead})")
    for tenant, why in swap["not_promoted"].items():
        c.print(f"  [yellow]{tenant}: {why}[/yellow]")
    by_rehearsal = swap["lead_time_by_rehearsal_s"]
    shadow = {t: v for t, v in swap["lead_time_by_shadow_s"].items() if v is not None}
    c.print("lead time deploy -> promote: by rehearsal "
            + (f"{by_rehearsal:.1f} s" if by_rehearsal is not None else "-")
            + " (" + (", ".join(t for t, by in swap["promoted_by"].items() if by == "rehearsal") or "no tenant")
            + "); by shadow (first map fitted on live traffic) "
            + (", ".join(f"{t} {v:.0f} s" for t, v in shadow.items()) or "none within the run"))
    checked = [r for r in swap["rehearsal"].get("predicted_vs_live", []) if r["enough_samples"]]
    if checked:
        held = sum(r["within_15pct"] for r in checked)
        rows = ", ".join(f"{r['tenant']} @{r['threshold']:.3g} {r['predicted']:.2%} -> {r['live']:.2%}"
                         for r in checked)
        c.print(f"rehearsal predicted the live mapped alert rate within ±15% on {held} of {len(checked)} rows "
                f"with enough samples: {rows}")
    contract = swap.get("contract", {})
    for tenant, rows in contract.get("rows", {}).items():
        verdicts = (f"{r['target']:.1%} {r['verdict']} ({r['samples']:,} samples, {r['samples_needed']:,} needed)"
                    for r in rows)
        c.print(f"alert-rate contract at promotion ({contract['terms']}), {tenant}: " + ", ".join(verdicts))
    if contract.get("rows"):
        c.print("[dim]contract at promotion: the verdict on the map v2 was promoted with (samples it rests on / "
                "samples needed); the demo promotes with --accept-insufficient, so short pairs are flagged, not "
                "held back")
    c.print(_alert_rate_table(ar["rows"], contract))
    c.print(f"[dim]tolerance: {ar['tolerance']}")
    held_text = "[green]held[/green]" if ar["mapped_held"] else "[red]did not hold[/red]"
    moved = "[yellow]moved[/yellow]" if ar["raw_moved"] else "[red]did not move[/red]"
    c.print(f"mapped alert rates {held_text} across the swap on all {ar['judged_rows']} judged rows; "
            f"raw-score alert rates {moved} (what the tenants would have seen without the maps)")
    for key, aucs in summary["auc"].items():
        c.print(f"AUC after the swap, {key}: corrected {aucs['corrected']:.4f}, mapped {aucs['mapped']:.4f} "
                "(the map is monotone: ranking unchanged)")
    c.print("latency p50 / p99: " + ", ".join(
        f"{t} {_fmt_s(v['p50'])} / {_fmt_s(v['p99'])}" for t, v in summary["latency_s"].items()))
    s = summary["settings"]
    c.print(f"[dim]embedded stack: refit every {s['refit_interval_seconds']:g} s over the last "
            f"{s['refit_window_seconds']:g} s, min samples "
            f"{s['refit_min_samples']:,}, min tail samples {s['refit_min_tail_samples']}, alert-rate shift guard "
            f"{s['refit_max_alert_rate_shift']:.0%}, label delay "
            f"{s['label_delay_s']:g} s, drift {s['drift']:g}, malformed fraction {s['bad_fraction']:g}")


def _alert_rate_table(rows: list[dict[str, Any]], contract: dict[str, Any]) -> Table:
    """Each judged (tenant, threshold): the contract's verdict at promotion, mapped and raw rates before -> after."""
    table = Table(title="alert rate at each tenant's thresholds, before (v1) -> after (v2) the swap")
    for col in ("tenant", "target", "threshold", "contract at promotion", "n before / after", "mapped before",
                "mapped after", "mapped", "raw before", "raw after", "raw"):
        table.add_column(col, justify="right" if col not in ("tenant",) else "left")
    at_promotion = {(t, round(r["threshold"], 6)): r for t, judged in contract.get("rows", {}).items() for r in judged}
    for j in rows:
        verdict = ("[green]held[/green]" if j["mapped_held"] else "[red]moved[/red]") if j["judged"] else "[dim]n/a"
        raw = ("[yellow]moved[/yellow]" if j["raw_moved"] else "held") if j["judged"] else "[dim]n/a"
        judged = at_promotion.get((j["tenant"], round(j["threshold"], 6)))
        promised = (f"{judged['verdict']} ({judged['samples']:,}/{judged['samples_needed']:,})" if judged
                    else "not promoted")
        table.add_row(j["tenant"], f"{j['target_rate']:.1%}", f"{j['threshold']:.4f}", promised,
                      f"{j['n_before']:,} / {j['n_after']:,}", f"{j['mapped_before']:.3%}",
                      f"{j['mapped_after']:.3%}", f"{_shift(j['mapped_shift'])} {verdict}",
                      f"{j['raw_before']:.3%}", f"{j['raw_after']:.3%}", f"{_shift(j['raw_shift'])} {raw}")
    return table


def _shift(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) or math.isinf(x) else f"{x:+.1%}"


def _fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x * 1000:,.0f} ms" if x < 10 else f"{x:,.0f} s"
