"""Scoring a model on a split: the one evaluation loop, for validation, the test step of a
training run and the evaluate command (inference/split_report.py)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice

import torch
import torch.nn.functional as F

from tennis_exp.config import Precision
from tennis_exp.engine.distributed import Dist
from tennis_exp.engine.hardware import autocast
from tennis_exp.engine.metrics import classification_metrics, confusion_matrix


@dataclass
class Evaluation:
    metrics: dict[str, float]  # loss, accuracy, macro and per-class precision, recall, F1
    confusion: torch.Tensor  # [true, predicted] counts
    probabilities: torch.Tensor | None = None  # [windows, classes], in the loader's order


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader,
    device: torch.device,
    precision: Precision,
    events: list[str],
    max_batches: int | None,
    dist: Dist,
    keep_probabilities: bool = False,
) -> Evaluation:
    """Loss and classification metrics over a split, summed over ranks (each rank scores its
    share of the windows); with `keep_probabilities`, this rank's class probabilities too."""
    model.eval()
    cm = torch.zeros(len(events), len(events), dtype=torch.long)
    loss_sum, seen, kept = 0.0, 0, []
    for frames, labels in islice(loader, max_batches):
        with autocast(precision, device.type):
            logits = model(frames.to(device, non_blocking=True)).float()
        labels = labels.to(device, non_blocking=True)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        seen += len(labels)
        cm += confusion_matrix(logits.argmax(1).cpu(), labels.cpu(), len(events))
        if keep_probabilities:
            kept.append(logits.softmax(1).cpu())
    loss_sum, seen = dist.all_reduce([loss_sum, seen], device)
    cm = dist.all_reduce_tensor(cm, device)
    metrics = {"loss": loss_sum / max(seen, 1), **classification_metrics(cm, events)}
    probabilities = torch.cat(kept) if kept else None
    return Evaluation(metrics, cm, probabilities)
