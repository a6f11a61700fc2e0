"""Classification metrics from a confusion matrix, and its plot."""

from __future__ import annotations

from pathlib import Path

import torch


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[true, predicted] counts."""
    index = labels.long() * num_classes + preds.long()
    return torch.bincount(index, minlength=num_classes**2).view(num_classes, num_classes)


def classification_metrics(cm: torch.Tensor, class_names: list[str]) -> dict[str, float]:
    """Accuracy, macro precision/recall/F1, and per class precision, recall and F1.

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
    for i, name in enumerate(class_names):
        key = metric_name(name)
        out[f"precision_{key}"] = precision[i].item()
        out[f"recall_{key}"] = recall[i].item()
        out[f"f1_{key}"] = f1[i].item()
    return out


def metric_name(class_name: str) -> str:
    """'Net Play' -> 'net_play'."""
    return class_name.lower().replace(" ", "_")


def plot_confusion(cm: torch.Tensor, class_names: list[str], title: str, path: Path) -> None:
    """Counts, and each true class's row as shares of it (recall on the diagonal)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = cm.numpy()
    rows = cm.double() / cm.sum(1, keepdim=True).clamp(min=1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, values, fmt, subtitle in [
        (axes[0], counts, "{:d}", "counts"),
        (axes[1], rows.numpy(), "{:.2f}", "row-normalised"),
    ]:
        ax.imshow(values, cmap="Blues", vmin=0)
        ticks = range(len(class_names))
        ax.set(xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="true")
        ax.set_title(f"{title}: {subtitle}", fontsize=10)
        ax.set_xticklabels(class_names, rotation=30, ha="right")
        ax.set_yticklabels(class_names)
        threshold = values.max() / 2
        for i in ticks:
            for j in ticks:
                value = values[i, j]
                ax.text(j, i, fmt.format(value.item()), ha="center", va="center",
                        color="white" if value > threshold else "black")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
