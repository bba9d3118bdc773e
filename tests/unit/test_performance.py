"""Labelled performance: hand-computed precision/recall/F1 and AUC with ties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from museflow.errors import ValidationError
from museflow.observe.performance import auc, confusion_at, precision_recall_f1, recall_at_alert_rate

SCORES = [0.9, 0.8, 0.7, 0.6, 0.55, 0.4, 0.3, 0.2]
LABELS = [1, 1, 0, 1, 0, 0, 1, 0]


def test_precision_recall_f1_by_hand() -> None:
    # alert on score > 0.5: 0.9 0.8 0.7 0.6 0.55 -> tp 3 (0.9 0.8 0.6), fp 2, fn 1 (0.3), tn 2
    c = confusion_at(SCORES, LABELS, 0.5)
    assert (c.tp, c.fp, c.fn, c.tn) == (3, 2, 1, 2)
    p, r, f1 = precision_recall_f1(SCORES, LABELS, 0.5)
    assert p == pytest.approx(3 / 5) and r == pytest.approx(3 / 4)
    assert f1 == pytest.approx(2 * 0.6 * 0.75 / (0.6 + 0.75))
    assert c.alert_rate == pytest.approx(5 / 8)
    assert precision_recall_f1(SCORES, LABELS, 0.6)[0] == pytest.approx(2 / 3)  # strictly above


def test_nothing_alerts_gives_zero_not_an_error() -> None:
    assert precision_recall_f1(SCORES, LABELS, 1.0) == (0.0, 0.0, 0.0)


def test_auc_by_hand() -> None:
    # positives 0.9 0.8 0.6 0.3 vs negatives 0.7 0.55 0.4 0.2: wins 4+4+3+1 = 12 of 16
    assert auc(SCORES, LABELS) == pytest.approx(12 / 16)


def test_auc_counts_ties_as_half() -> None:
    # pos {0.5, 0.8}, neg {0.5, 0.2}: pairs (0.5,0.5)=0.5, (0.5,0.2)=1, (0.8,*)=2 -> 3.5/4
    assert auc([0.5, 0.8, 0.5, 0.2], [1, 1, 0, 0]) == pytest.approx(3.5 / 4)
    assert auc([0.3] * 6, [1, 0, 1, 0, 0, 1]) == pytest.approx(0.5)


@given(hnp.arrays(np.float64, st.integers(2, 60), elements=st.integers(0, 5).map(float)),
       st.integers(0, 2**32 - 1))
def test_auc_matches_pairwise_definition(scores: np.ndarray, seed: int) -> None:
    labels = np.random.default_rng(seed).random(scores.size) < 0.5
    pos, neg = scores[labels], scores[~labels]
    if pos.size == 0 or neg.size == 0:
        assert math.isnan(auc(scores, labels))
        return
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert auc(scores, labels) == pytest.approx(wins / (pos.size * neg.size))


def test_recall_at_alert_rate() -> None:
    assert recall_at_alert_rate(SCORES, LABELS, 0.25) == pytest.approx(2 / 4)
    assert recall_at_alert_rate(SCORES, LABELS, 1.0) == pytest.approx(1.0)


def test_mismatched_inputs_are_validation_errors() -> None:
    with pytest.raises(ValidationError, match="3 scores but 2 labels"):
        auc([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValidationError, match="NaN"):
        auc([0.1, float("nan")], [0, 1])
