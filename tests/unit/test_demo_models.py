"""Demo models: trained from the generator, loadable, v2 down-sampled with a recorded beta."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from museflow.demo.loadgen import TransactionGenerator
from museflow.demo.models import DemoModel, roc_auc, train_demo, train_demo_models
from museflow.model.registry import ModelRegistry


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> list[DemoModel]:
    return train_demo_models(tmp_path_factory.mktemp("demo"), seed=0, n_events=40_000)


def test_roc_auc_hand_values() -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.1, 0.5, 0.5, 0.9]) == pytest.approx(0.875)
    assert np.isnan(roc_auc([1, 1], [0.1, 0.2]))


def test_demo_models_load_rank_well_and_record_their_facts(demo: list[DemoModel]) -> None:
    assert [(m.name, m.version) for m in demo] == [("fraud-cnp", "1"), ("fraud-cnp", "2"), ("ato", "1")]
    registry = ModelRegistry()
    for m in demo:
        loaded = registry.load(m.spec_path)
        assert m.auc > 0.75, (m.name, m.version, m.auc)
        assert loaded.spec.training.metrics == (("auc_holdout", round(m.auc, 4)),)
        assert m.artifact_path.suffix in (".json", ".ubj") and m.artifact_path.exists()
    assert registry.get("fraud-cnp", "2").beta == 0.1
    assert registry.get("fraud-cnp", "1").beta == 1.0
    assert len(registry.get("fraud-cnp", "2").spec.features) > len(registry.get("fraud-cnp", "1").spec.features)
    assert registry.get("ato", "1").spec.intents == ("account-takeover",)


def test_v2_raw_scores_differ_clearly_but_its_corrected_probabilities_are_calibrated(demo: list[DemoModel]) -> None:
    registry = ModelRegistry()
    v1, v2 = (registry.load(m.spec_path) for m in demo[:2])
    generated = [g for g in TransactionGenerator(seed=99, start_ms=0).generate(20_000)
                 if g.event["intent"] == "card-not-present"]
    events = [g.event for g in generated]
    fraud_rate = np.mean([g.is_fraud for g in generated])
    a, b = v1.score(events), v2.score(events)
    assert np.median(b.raw) > 2.5 * np.median(a.raw)
    assert b.probability.mean() == pytest.approx(fraud_rate, rel=0.5)
    assert a.probability.mean() == pytest.approx(fraud_rate, rel=0.5)


def test_training_is_deterministic_for_a_seed(tmp_path: Path, demo: list[DemoModel]) -> None:
    paths = train_demo(tmp_path, seed=0, n_events=40_000, echo=None)
    assert [p.name for p in paths] == ["fraud-cnp-1.yaml", "fraud-cnp-2.yaml", "ato-1.yaml"]
    for path, earlier in zip(paths, demo, strict=True):
        assert path.read_text() == earlier.spec_path.read_text()
