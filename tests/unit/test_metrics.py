"""Metrics from a confusion matrix, checked against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from tennis_exp.engine.metrics import classification_metrics, confusion_matrix

NAMES = ["Smash", "Net Play", "Rally", "Serve"]


def test_confusion_matrix_counts_true_by_predicted():
    preds = torch.tensor([0, 1, 1, 2, 3, 3])
    labels = torch.tensor([0, 1, 2, 2, 3, 0])
    cm = confusion_matrix(preds, labels, 4)
    assert cm.tolist() == [[1, 0, 0, 1], [0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]]


def test_metrics_by_hand():
    cm = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]])
    m = classification_metrics(cm, NAMES)
    # precision: 1, 1/2, 1, 1/2; recall: 1/2, 1, 1/2, 1; F1: 2/3 for every class
    assert m["acc"] == pytest.approx(4 / 6)
    assert m["macro_precision"] == pytest.approx(0.75)
    assert m["macro_recall"] == pytest.approx(0.75)
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert m["f1_net_play"] == pytest.approx(2 / 3)
    assert (m["precision_net_play"], m["recall_net_play"]) == pytest.approx((0.5, 1.0))
    assert (m["precision_smash"], m["recall_smash"]) == pytest.approx((1.0, 0.5))


def test_a_never_predicted_class_scores_zero():
    cm = torch.tensor([[2, 0], [2, 0]])
    m = classification_metrics(cm, ["a", "b"])
    assert m["f1_b"] == 0.0
    assert m["f1_a"] == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert m["macro_f1"] == pytest.approx(m["f1_a"] / 2)
