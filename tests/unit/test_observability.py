"""Dashboards and alert rules as code: generated files up to date, well-formed, and promtool-tested."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from museflow.cli.observe import export, outputs
from museflow.observe import alerts, dashboards

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool missing: apt-get install prometheus")


def test_committed_files_are_what_the_code_generates() -> None:
    for relative, text in outputs().items():
        path = ROOT / "deploy" / relative
        assert path.exists(), f"{path} missing: run `museflow observe export --out deploy`"
        assert path.read_text() == text, f"{path} is stale: run `museflow observe export --out deploy`"


def test_export_writes_the_three_files_and_check_detects_drift(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(export, ["--out", str(tmp_path)]).exit_code == 0
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == [
        "grafana/dashboards/museflow-models.json", "grafana/dashboards/museflow-sre.json",
        "prometheus/alerts.yml"]
    assert runner.invoke(export, ["--out", str(tmp_path), "--check"]).exit_code == 0
    (tmp_path / "prometheus/alerts.yml").write_text("groups: []\n")
    result = runner.invoke(export, ["--out", str(tmp_path), "--check"])
    assert result.exit_code == 1 and "alerts.yml" in result.output


@pytest.mark.parametrize("stem", dashboards.DASHBOARDS)
def test_dashboards_have_stable_uids_and_every_panel_uses_the_datasource_variable(stem: str) -> None:
    board = json.loads((ROOT / "deploy/grafana/dashboards" / f"{stem}.json").read_text())
    assert board["uid"] == stem
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len(panels) >= 8
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert re.search(r"\b(?:museflow|process)_[a-z0-9_]+", target["expr"]), target["expr"]


def test_the_dashboards_cover_what_the_issue_asks_for() -> None:
    sre = " ".join(q for _, q in dashboards.queries(dashboards.sre_dashboard()))
    models = " ".join(q for _, q in dashboards.queries(dashboards.models_dashboard()))
    for metric in ("museflow_events_in_total", "museflow_events_out_total", "museflow_dead_letters_total",
                   "museflow_consumer_lag", "museflow_end_to_end_latency_seconds_bucket",
                   "museflow_stage_latency_seconds_bucket", "museflow_batch_size", "museflow_rebalances_total",
                   "museflow_model_loads_total"):
        assert metric in sre, metric
    for metric in ("museflow_alert_rate", "museflow_score_drift_psi", "museflow_score_drift_js",
                   "museflow_labelled_precision", "museflow_labelled_recall", "museflow_labelled_f1",
                   "museflow_labelled_auc", "museflow_quantile_map_created_timestamp_seconds",
                   "museflow_quantile_map_samples", "museflow_quantile_map_publications_total",
                   "museflow_unlabelled_fraction"):
        assert metric in models, metric


def test_every_alert_has_a_promtool_test_and_checks_inside_its_expression() -> None:
    tested = set(re.findall(r"alertname:\s*(\w+)", (ROOT / "tests/observability/alerts_test.yml").read_text()))
    rules = alerts.rules()
    assert {r.name for r in rules} <= tested
    for rule in rules:
        assert rule.checks and all(check in rule.expr for check in rule.checks), rule.name
    document = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    assert [r["alert"] for r in document["groups"][0]["rules"]] == [r.name for r in rules]


@needs_promtool
def test_rule_file_passes_promtool_check() -> None:
    out = subprocess.run([PROMTOOL, "check", "rules", str(ROOT / "deploy/prometheus/alerts.yml")],  # type: ignore[list-item]
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_promtool_unit_tests_of_every_alert_pass() -> None:
    out = subprocess.run([PROMTOOL, "test", "rules", str(ROOT / "tests/observability/alerts_test.yml")],  # type: ignore[list-item]
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
