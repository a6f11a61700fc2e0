"""Classification metrics from a confusion matrix (tracking/plots.py draws it)."""

from __future__ import annotations

import torch

from tennis_exp.config import BACKGROUND, metric_name


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[true, predicted] counts."""
    index = labels.long() * num_classes + preds.long()
    return torch.bincount(index, minlength=num_classes**2).view(num_classes, num_classes)


def classification_metrics(cm: torch.Tensor, class_names: list[str]) -> dict[str, float]:
    """Accuracy, macro precision/recall/F1, and per class precision, recall and F1; with the
    background class, `event_macro_f1` too: the events' macro-F1 on their own windows alone (a
    window called no event is a miss), the score of a run without the class on the same clips.

    A class that is never predicted (or never present) scores 0 for that term, as scikit-learn's
    zero_division=0 does, so macro averages are over all classes.
    """
    cm = cm.double()
    tp = cm.diag()
    precision, recall, f1 = _scores(tp, cm.sum(0), cm.sum(1))
    out = {
        "acc": (tp.sum() / cm.sum().clamp(min=1)).item(),
        "macro_precision": precision.mean().item(),
        "macro_recall": recall.mean().item(),
        "macro_f1": f1.mean().item(),
    }
    for i, name in enumerate(class_names):
        key = metric_name(name)
        out[f"precision_{key}"] = precision[i].item()
        out[f"recall_{key}"] = recall[i].item()
        out[f"f1_{key}"] = f1[i].item()
    if BACKGROUND in class_names:
        events = [i for i, name in enumerate(class_names) if name != BACKGROUND]
        rows = cm[events]  # the event windows, whatever they were called
        _, _, event_f1 = _scores(tp[events], rows[:, events].sum(0), rows.sum(1))
        out["event_macro_f1"] = event_f1.mean().item()
    return out


def _scores(tp: torch.Tensor, predicted: torch.Tensor, actual: torch.Tensor):
    """Per class precision, recall and F1 (0 where undefined)."""
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), 0.0)
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), 0.0)
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), 0.0)
    return precision, recall, f1
