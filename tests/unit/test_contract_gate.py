"""The promotion gate's judgement of one map (``museflow.control.contract.judge_fit``) and its table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from museflow.control.contract import Contract, ContractReport, judge_fit
from museflow.transform.qmap import QuantileMap
from museflow.transform.reference import ReferenceDistribution
from museflow.transform.refit import ExactSample, fit_map

REF = ReferenceDistribution.uniform("pct", 1)
CONTRACT = Contract()


def _map(scores: np.ndarray) -> QuantileMap:
    return fit_map(ExactSample(scores), REF, model="xgb", model_version="2", tenant="acme", intent="cnp", version=1)


def test_a_map_on_enough_samples_holds_and_one_on_too_few_is_insufficient() -> None:
    rng = np.random.default_rng(3)
    qmap = _map(rng.beta(0.5, 9.0, size=10_000))
    five = judge_fit(qmap, 0.95, 0.05, CONTRACT)
    one = judge_fit(qmap, 0.99, 0.01, CONTRACT)
    assert five.verdict == "holds" and five.samples_needed == 7299 and five.samples == 10_000
    assert five.interval == pytest.approx((0.05 - 1.96 * math.sqrt(0.05 * 0.95 / 10_000),
                                           0.05 + 1.96 * math.sqrt(0.05 * 0.95 / 10_000)), rel=1e-3)
    assert one.verdict == "insufficient" and one.samples_needed == 38031


def test_later_scores_pool_with_the_fit_and_a_shifted_map_is_a_breach() -> None:
    rng = np.random.default_rng(4)
    qmap = _map(rng.beta(0.5, 9.0, size=10_000))
    same = judge_fit(qmap, 0.95, 0.05, CONTRACT, rng.beta(0.5, 9.0, size=40_000))
    assert same.verdict == "holds" and same.samples == 50_000 and abs(same.estimate / 0.05 - 1) < 0.05
    shifted = rng.beta(0.5, 9.0, size=40_000) * 1.25  # the traffic moved: the map now alerts ~+40%
    breach = judge_fit(qmap, 0.95, 0.05, CONTRACT, shifted)
    assert breach.verdict == "breach" and breach.interval[0] > 0.055, breach


def test_an_identity_map_is_never_evidence() -> None:
    judged = judge_fit(QuantileMap.identity("xgb", "2", "acme", "cnp"), 0.95, 0.05, CONTRACT)
    assert judged.verdict == "insufficient" and judged.samples == 0


def test_the_report_passes_only_when_every_pair_holds_and_its_table_says_why() -> None:
    rng = np.random.default_rng(5)
    qmap = _map(rng.beta(0.5, 9.0, size=10_000))
    report = ContractReport(CONTRACT, (judge_fit(qmap, 0.95, 0.05, CONTRACT), judge_fit(qmap, 0.99, 0.01, CONTRACT)))
    assert not report.passed
    assert ContractReport(CONTRACT, report.rows[:1]).passed and not ContractReport(CONTRACT, ()).passed
    table = report.table()
    assert "±10% of each threshold's target alert rate at 95% confidence" in table
    assert "holds" in table and "insufficient" in table and "38,031" in table
    assert report.problems() == ["acme > 0.99 (1.00%): insufficient, 10,000 samples of 38,031 needed"]
