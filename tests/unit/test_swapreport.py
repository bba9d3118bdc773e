from __future__ import annotations

from pathlib import Path

import numpy as np

from museflow.observe.swapreport import build_swap_report, write_report
from museflow.transform.qmap import QuantileMap
from museflow.transform.reference import ReferenceDistribution


def records(model: str, version: str, raw: np.ndarray, mapped: np.ndarray, tenant: str = "acme-bank",
            reference: str = "ref@1") -> list[dict]:
    return [{"event_id": f"{version}-{i}", "tenant": tenant, "intent": "cnp", "model": model, "model_version": version,
             "served": True, "raw_score": float(r), "corrected_score": float(r), "score": float(m),
             "reference": reference} for i, (r, m) in enumerate(zip(raw, mapped, strict=True))]


def test_mapping_holds_the_alert_rate_that_raw_scores_would_move() -> None:
    rng = np.random.default_rng(0)
    old = rng.beta(1, 30, 200_000)
    new = np.clip(old * 4 + rng.normal(0, 0.01, old.size), 0, 1)  # a hotter model, same ranking roughly
    reference = ReferenceDistribution.from_samples("ref", 1, old)
    fitted_new = ReferenceDistribution.from_samples("tmp", 1, new)  # the map F_new then Q_ref
    qmap = QuantileMap(model="m", model_version="2", tenant="acme-bank", intent="cnp", version=1,
                       reference_name="ref", reference_version=1, knots_x=fitted_new.xs,
                       knots_y=reference.quantile(fitted_new.us))
    fresh_old = rng.beta(1, 30, 200_000)
    fresh_new = np.clip(fresh_old * 4 + rng.normal(0, 0.01, fresh_old.size), 0, 1)
    recs = records("m", "1", fresh_old, fresh_old) + records("m", "2", fresh_new, qmap.apply(fresh_new))
    labels = {r["event_id"]: bool(r["raw_score"] > 0.1) for r in recs}
    report = build_swap_report(recs, "m@1", "m@2", {"ref@1": reference}, labels=labels)
    assert [round(r.target_rate, 3) for r in report.rows] == [0.05, 0.01, 0.005]
    for row in report.rows:
        assert abs(row.mapped_shift) < 0.1, row
        assert row.raw_shift > 1.0, row
    aucs = report.auc["acme-bank/cnp"]
    assert abs(aucs["corrected"] - aucs["mapped"]) < 1e-3


def test_report_writes_markdown_json_and_one_plot_per_route(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    a, b = rng.random(2000), rng.random(2000) ** 2
    report = build_swap_report(records("m", "1", a, a) + records("m", "2", b, b), "m@1", "m@2",
                               {"ref@1": ReferenceDistribution.uniform("ref", 1)}, watch={"acme-bank/cnp": (0.9,)})
    md = write_report(report, tmp_path)
    assert "| acme-bank | cnp |" in md.read_text()
    assert (tmp_path / "report.json").exists()
    png = tmp_path / "swap-acme-bank-cnp.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(report.rows) == 4  # three standard rates and the watched threshold


def test_routes_without_both_models_are_left_out() -> None:
    rng = np.random.default_rng(2)
    a = rng.random(100)
    report = build_swap_report(records("m", "1", a, a), "m@1", "m@2", {})
    assert report.rows == []
