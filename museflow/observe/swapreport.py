"""What a model swap did to each tenant's alert rates, from the score log.

For every tenant and threshold (the reference's thresholds at standard alert rates, plus the
route's watch thresholds) it compares the share of served scores above the threshold before
the swap (old champion) and after (new champion), on mapped scores and on raw model output.
With mapping the alert rate should hold; on raw scores it would have moved.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from museflow.observe.performance import auc
from museflow.transform.reference import ReferenceDistribution

__all__ = ["ALERT_RATES", "SwapReport", "ThresholdRow", "build_swap_report", "plot_swap", "write_report"]

ALERT_RATES = (0.05, 0.01, 0.005)


@dataclass(frozen=True)
class ThresholdRow:
    """One tenant at one threshold: alert rates before and after the swap."""

    tenant: str
    intent: str
    target_rate: float
    threshold: float
    n_before: int
    n_after: int
    mapped_before: float
    mapped_after: float
    raw_before: float
    raw_after: float

    @property
    def mapped_shift(self) -> float:
        """Relative change of the mapped alert rate (0.05 = +5%)."""
        return _relative(self.mapped_after, self.mapped_before)

    @property
    def raw_shift(self) -> float:
        return _relative(self.raw_after, self.raw_before)


@dataclass
class SwapReport:
    """Rows per tenant and threshold, the samples behind them, and ranking checks."""

    old: str
    new: str
    rows: list[ThresholdRow] = field(default_factory=list)
    auc: dict[str, dict[str, float]] = field(default_factory=dict)
    samples: dict[str, dict[str, dict[str, np.ndarray]]] = field(default_factory=dict, repr=False)
    references: dict[str, ReferenceDistribution] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "old": self.old, "new": self.new, "auc": self.auc,
            "rows": [{**asdict(r), "mapped_shift": r.mapped_shift, "raw_shift": r.raw_shift} for r in self.rows],
        }


def _relative(after: float, before: float) -> float:
    if before == 0 or math.isnan(before):
        return float("inf") if after else 0.0
    return (after - before) / before


def build_swap_report(records: Iterable[Mapping[str, Any]], old: str, new: str,
                      references: Mapping[str, ReferenceDistribution], *,
                      watch: Mapping[str, Sequence[float]] | None = None,
                      labels: Mapping[str, bool] | None = None,
                      alert_rates: Sequence[float] = ALERT_RATES) -> SwapReport:
    """Compare served scores of ``old`` (model@version) with those of ``new``, per tenant.

    ``records`` are score-log records; ``references`` maps ``name@version`` to the reference
    each tenant's scores were mapped onto; ``labels`` (event id -> fraud) adds AUC per tenant of
    corrected vs mapped scores, which must be equal since the map is monotone.
    """
    by: dict[tuple[str, str, str], dict[str, list[Any]]] = {}
    reference_of: dict[tuple[str, str], str] = {}
    for r in records:
        ref = f"{r['model']}@{r['model_version']}"
        if not r["served"] or ref not in (old, new):
            continue
        phase = "before" if ref == old else "after"
        bucket = by.setdefault((r["tenant"], r["intent"], phase),
                               {"raw": [], "corrected": [], "mapped": [], "event_id": []})
        bucket["raw"].append(r["raw_score"])
        bucket["corrected"].append(r["corrected_score"])
        bucket["mapped"].append(r["score"] if r["score"] is not None else r["corrected_score"])
        bucket["event_id"].append(r["event_id"])
        if phase == "after" and r.get("reference"):
            reference_of[(r["tenant"], r["intent"])] = r["reference"]
    report = SwapReport(old, new)
    for (tenant, intent, phase), bucket in sorted(by.items()):
        if phase != "after" or (tenant, intent, "before") not in by:
            continue
        before = {k: np.asarray(v) for k, v in by[(tenant, intent, "before")].items()}
        after = {k: np.asarray(v) for k, v in bucket.items()}
        ref_name = reference_of.get((tenant, intent), "uniform@1")
        reference = references.get(ref_name) or ReferenceDistribution.uniform()
        key = f"{tenant}/{intent}"
        report.samples[key] = {"before": before, "after": after}
        report.references[key] = reference
        taus = [(rate, float(reference.threshold_for(rate))) for rate in alert_rates]
        taus += [(float(reference.alert_rate(t)), float(t)) for t in (watch or {}).get(key, ())]
        for rate, tau in taus:
            report.rows.append(ThresholdRow(
                tenant, intent, rate, tau, len(before["mapped"]), len(after["mapped"]),
                _share_above(before["mapped"], tau), _share_above(after["mapped"], tau),
                _share_above(before["raw"], tau), _share_above(after["raw"], tau),
            ))
        if labels:
            report.auc[key] = _aucs(after, labels)
    return report


def _share_above(values: np.ndarray, tau: float) -> float:
    return float(np.mean(values > tau)) if values.size else float("nan")


def _aucs(samples: Mapping[str, np.ndarray], labels: Mapping[str, bool]) -> dict[str, float]:
    known = np.array([e in labels for e in samples["event_id"]], dtype=bool)
    y = np.array([labels[e] for e in samples["event_id"][known]], dtype=float)
    return {kind: float(auc(samples[kind][known], y)) for kind in ("raw", "corrected", "mapped")}


def plot_swap(report: SwapReport, out_dir: Path) -> list[Path]:
    """One PNG per tenant: raw, corrected and mapped score distributions of both models vs the reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for key, phases in sorted(report.samples.items()):
        reference = report.references[key]
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        for ax, kind in zip(axes, ("raw", "corrected", "mapped"), strict=True):
            for phase, label, style in (("before", report.old, "-"), ("after", report.new, "--")):
                values = np.sort(phases[phase][kind])
                if values.size:
                    survival = 1.0 - np.arange(1, values.size + 1) / values.size
                    ax.step(values, np.maximum(survival, 1e-5), style, where="post", label=f"{label} ({kind})")
            grid = np.linspace(reference.low, reference.high, 512)
            ax.plot(grid, np.maximum(reference.alert_rate(grid), 1e-5), ":", color="black",
                    label=f"reference {reference.name}@{reference.version}")
            ax.set_yscale("log")
            ax.set_ylim(1e-4, 1.0)
            ax.set_title(f"{key}: {kind} scores")
            ax.set_xlabel("score threshold")
            ax.set_ylabel("alert rate  P(score > threshold)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(f"swap {report.old} -> {report.new}: alert rate by threshold (mapped should track the reference)")
        fig.tight_layout()
        path = out_dir / f"swap-{key.replace('/', '-')}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def write_report(report: SwapReport, out_dir: Path) -> Path:
    """``report.md`` + ``report.json`` + the PNG plots in ``out_dir``; returns the Markdown path."""
    plots = plot_swap(report, out_dir)
    lines = [f"# Model swap {report.old} -> {report.new}", "",
             "Alert rate = share of served scores above the threshold. Mapped scores should hold the "
             "alert rate across the swap; raw scores show what it would have been without mapping.", "",
             "| tenant | intent | target | threshold | n before | n after | mapped before | mapped after | "
             "mapped shift | raw before | raw after | raw shift |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report.rows:
        lines.append(f"| {r.tenant} | {r.intent} | {r.target_rate:.2%} | {r.threshold:.4g} | {r.n_before:,} | "
                     f"{r.n_after:,} | {r.mapped_before:.3%} | {r.mapped_after:.3%} | {r.mapped_shift:+.1%} | "
                     f"{r.raw_before:.3%} | {r.raw_after:.3%} | {r.raw_shift:+.1%} |")
    if report.auc:
        lines += ["", "| route | AUC raw | AUC corrected | AUC mapped |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['raw']:.4f} | {v['corrected']:.4f} | {v['mapped']:.4f} |" for k, v in report.auc.items()]
    lines += ["", *(f"![{p.stem}]({p.name})" for p in plots), ""]
    md = out_dir / "report.md"
    md.write_text("\n".join(lines))
    (out_dir / "report.json").write_text(json.dumps(report.to_json(), indent=1))
    return md
