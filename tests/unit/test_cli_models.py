"""``museflow models validate`` and ``train-demo`` through click's CliRunner."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from museflow.cli.models import models_group


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models")
    result = CliRunner().invoke(models_group, ["train-demo", "--out", str(out), "--seed", "1", "--events", "20000"])
    assert result.exit_code == 0, result.output
    assert "AUC" in result.output and "fraud-cnp" in result.output
    assert f"wrote {out / 'fraud-cnp-2.yaml'}" in result.output
    return out


def test_train_demo_writes_the_demo_routes_that_routes_set_accepts(demo_dir: Path) -> None:
    from museflow.control.routing import ModelRef, load_routes_yaml

    routes = load_routes_yaml(demo_dir / "routes.yaml")
    assert {(r.tenant, r.intent) for r in routes} == {(t, i) for t in ("acme-bank", "globex-pay", "initech-fin")
                                                      for i in ("card-not-present", "account-takeover")}
    assert {r.champion for r in routes} == {ModelRef("fraud-cnp", "1"), ModelRef("ato", "1")}


def test_validate_accepts_the_demo_specs(demo_dir: Path) -> None:
    specs = sorted(str(p) for p in demo_dir.glob("*.yaml") if p.name != "routes.yaml")
    result = CliRunner().invoke(models_group, ["validate", *specs])
    assert result.exit_code == 0, result.output
    assert result.output.count("OK ") == 3
    assert "fraud-cnp version 2, 14 features (19 columns), beta=0.1" in result.output


def test_validate_reports_located_errors_and_exits_1(demo_dir: Path, tmp_path: Path) -> None:
    good = demo_dir / "ato-1.yaml"
    broken = tmp_path / "ato-1.yaml"
    text = good.read_text().replace("source: channel", "source: chanel").replace("p99_ms: 25.0", "p99_ms: -1")
    broken.write_text(text)
    tampered = tmp_path / "fraud-cnp-1.yaml"
    tampered.write_text((demo_dir / "fraud-cnp-1.yaml").read_text())
    (tmp_path / "fraud-cnp-1.json").write_bytes((demo_dir / "fraud-cnp-1.json").read_bytes() + b" ")
    result = CliRunner().invoke(models_group, ["validate", str(good), str(broken), str(tampered)])
    assert result.exit_code == 1
    assert f"OK   {good}" in result.output
    assert f"FAIL {broken}" in result.output
    assert "features[8].source: 'chanel' is not a field of TransactionEvent (did you mean 'channel'?)" in result.output
    assert "sla.p99_ms: must be a positive number" in result.output
    assert "sha256 mismatch" in result.output
    assert "2 of 3 spec(s) failed validation" in result.output
