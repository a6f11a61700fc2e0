"""Metrics from a confusion matrix, checked against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from tennis_exp.config import BACKGROUND
from tennis_exp.engine.evaluation import Evaluation
from tennis_exp.engine.metrics import classification_metrics, confusion_matrix
from tennis_exp.inference.split_report import report_table

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


def test_with_the_background_class_the_events_are_also_scored_on_their_windows_alone():
    cm = torch.tensor([[3, 1, 0], [0, 2, 2], [2, 0, 6]])  # Smash, Rally, No event
    m = classification_metrics(cm, ["Smash", "Rally", BACKGROUND])
    # Event windows only (the last row dropped): Smash P 3/3 R 3/4, Rally P 2/3 R 2/4; the two
    # Rally windows called no event are misses, the two idle windows called Smash are not.
    assert m["event_macro_f1"] == pytest.approx((6 / 7 + 4 / 7) / 2)
    assert m["f1_smash"] == pytest.approx(2 * 3 / (5 + 4))  # the 3 x 3 score counts them
    assert "event_macro_f1" not in classification_metrics(cm[:2, :2], ["Smash", "Rally"])


def test_evaluates_report_names_the_events_alone_score_with_the_background_class():
    cm = torch.tensor([[3, 1, 0], [0, 2, 2], [2, 0, 6]])
    names = ["Smash", "Rally", BACKGROUND]
    report = report_table(Evaluation(classification_metrics(cm, names), cm), names, 0.5, 3)
    assert report.splitlines()[-1].split() == ["events", "alone,", "macro", "F1", "0.714", "8"]
    plain = report_table(Evaluation(classification_metrics(cm[:2, :2], names[:2]), cm[:2, :2]),
                         names[:2], 0.5, 2)  # fmt: skip
    assert "events alone" not in plain
