"""Scoring a model on a split: the one evaluation path, for validation, the test step of a
training run and the evaluate command."""

from __future__ import annotations

from itertools import islice

import torch
import torch.nn.functional as F

from tennis_exp.config import Precision
from tennis_exp.engine.distributed import Dist
from tennis_exp.engine.hardware import autocast
from tennis_exp.engine.metrics import classification_metrics, confusion_matrix


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader,
    device: torch.device,
    precision: Precision,
    events: list[str],
    max_batches: int | None,
    dist: Dist,
) -> tuple[dict[str, float], torch.Tensor]:
    """Loss and classification metrics over a split, summed over ranks; (metrics, confusion)."""
    model.eval()
    cm = torch.zeros(len(events), len(events), dtype=torch.long)
    loss_sum, seen = 0.0, 0
    for frames, labels in islice(loader, max_batches):
        with autocast(precision, device.type):
            logits = model(frames.to(device, non_blocking=True))
        labels = labels.to(device, non_blocking=True)
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").item()
        seen += len(labels)
        cm += confusion_matrix(logits.argmax(1).cpu(), labels.cpu(), len(events))
    loss_sum, seen = dist.all_reduce([loss_sum, seen], device)
    cm = dist.all_reduce_tensor(cm, device)
    return {"loss": loss_sum / max(seen, 1), **classification_metrics(cm, events)}, cm
