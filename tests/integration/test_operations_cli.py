"""Operator commands on a live pipeline: on-demand refit, map listing, the swap report."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from museflow.cli.main import cli
from museflow.config import Settings
from museflow.demo.loadgen import TransactionGenerator
from museflow.demo.producing import produce_events
from museflow.demo.supervise import WorkerProcess
from museflow.kafka.plane import read_state
from tests.integration.conftest import topic_size, wait_for

TENANTS = ("acme-bank", "globex-pay", "initech-fin")


def test_maps_refit_on_demand_then_report_swap_on_canary_traffic(
    settings: Settings, deployed: dict[str, Path], start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    start_worker(roles=("router", "scorer"))  # no refit agent: maps come only from the command
    sent = produce_events(settings, TransactionGenerator(seed=41), 15_000, labels=True, labels_at_exit="flush")
    assert sent.ok
    wait_for(lambda: sum(topic_size(settings, settings.topics.scores(t)) for t in TENANTS) >= sent.good, 180,
             "traffic scored")
    assert not list(read_state(settings).maps)

    env = {**settings.to_env(), "MUSEFLOW_REFIT_MIN_SAMPLES": "1000", "MUSEFLOW_REFIT_MIN_TAIL_SAMPLES": "10",
           "COLUMNS": "220"}
    runner = CliRunner()
    refit = runner.invoke(cli, ["maps", "refit"], env=env)
    assert refit.exit_code == 0, refit.output
    assert "published" in refit.output
    maps = list(read_state(settings).maps)
    assert {(m.model, m.model_version, m.tenant) for m in maps} >= {
        ("fraud-cnp", "1", "acme-bank"), ("fraud-cnp", "2", "acme-bank"), ("ato", "1", "acme-bank")}
    assert all(m.sample_count >= 1000 for m in maps if m.tenant is not None and m.source != "blended")
    for blended in (m for m in maps if m.source == "blended"):  # short of samples: borrowed from the pool
        assert blended.sample_count < 1000 and blended.evidence, blended
    again = runner.invoke(cli, ["maps", "refit", "--dry-run"], env=env)
    assert again.exit_code == 0 and "would publish" in again.output
    assert len(list(read_state(settings).maps)) == len(maps)
    listed = runner.invoke(cli, ["maps", "list"], env=env)
    assert listed.exit_code == 0 and "fraud-cnp@2" in listed.output
    contract = runner.invoke(cli, ["maps", "contract", "--tenant", "acme-bank"], env=env)
    assert contract.exit_code == 0, contract.output
    assert "±10% of each threshold's target alert rate at 95% confidence" in contract.output
    assert "38,031" in contract.output and "7,299" in contract.output  # needed at acme-bank's 1% and 5%
    assert "insufficient" in contract.output  # 15,000 events cannot establish a 1% threshold

    out = tmp_path / "report"
    report = runner.invoke(cli, ["report", "swap", "--old", "fraud-cnp@1", "--new", "fraud-cnp@2", "--out", str(out)],
                           env=env)
    assert report.exit_code == 0, report.output
    data = json.loads((out / "report.json").read_text())
    rows = [r for r in data["rows"] if r["tenant"] == "globex-pay"]
    assert rows and all(r["n_after"] > 0 and r["n_before"] > r["n_after"] for r in rows)  # 10% canary
    assert "globex-pay/card-not-present" in data["auc"]
    assert (out / "swap-globex-pay-card-not-present.png").read_bytes()[:4] == b"\x89PNG"
    assert "| globex-pay | card-not-present |" in (out / "report.md").read_text()
