"""Classification metrics from a confusion matrix, and its plot."""

from __future__ import annotations

from pathlib import Path

import torch


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[true, predicted] counts."""
    index = labels.long() * num_classes + preds.long()
    return torch.bincount(index, minlength=num_classes**2).view(num_classes, num_classes)


def classification_metrics(cm: torch.Tensor, class_names: list[str]) -> dict[str, float]:
    """Accuracy, macro precision/recall/F1 and per-class F1.

    A class that is never predicted (or never present) scores 0 for that term, as scikit-learn's
    zero_division=0 does, so macro averages are over all classes.
    """
    cm = cm.double()
    tp = cm.diag()
    predicted, actual = cm.sum(0), cm.sum(1)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), 0.0)
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), 0.0)
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), 0.0)
    out = {
        "acc": (tp.sum() / cm.sum().clamp(min=1)).item(),
        "macro_precision": precision.mean().item(),
        "macro_recall": recall.mean().item(),
        "macro_f1": f1.mean().item(),
    }
    for name, value in zip(class_names, f1.tolist(), strict=True):
        out[f"f1_{metric_name(name)}"] = value
    return out


def metric_name(class_name: str) -> str:
    """'Net Play' -> 'net_play'."""
    return class_name.lower().replace(" ", "_")


def plot_confusion(cm: torch.Tensor, class_names: list[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.imshow(cm.numpy(), cmap="Blues")
    ticks = range(len(class_names))
    ax.set(xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(class_names, rotation=30, ha="right")
    ax.set_yticklabels(class_names)
    threshold = cm.max().item() / 2
    for i in ticks:
        for j in ticks:
            value = int(cm[i, j])
            ax.text(
                j,
                i,
                value,
                ha="center",
                va="center",
                color="white" if value > threshold else "black",
            )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
