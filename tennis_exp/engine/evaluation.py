"""Scoring a model on a split: the one evaluation path, for validation, the test step of a
training run and the evaluate command (`evaluate_checkpoint`, with its report)."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from tennis_exp.config import Config, Precision, Strategy, from_container, validate
from tennis_exp.data.frames import WindowDataset, build_split
from tennis_exp.data.loaders import make_loader
from tennis_exp.engine import checkpoint
from tennis_exp.engine.distributed import Dist
from tennis_exp.engine.hardware import autocast, plan_run, wrap_model
from tennis_exp.engine.metrics import (
    classification_metrics,
    confusion_matrix,
    metric_name,
    plot_confusion,
)
from tennis_exp.models.cnn_lstm import CNNLSTM, build_model
from tennis_exp.tracking.runs import ensure_experiment, mlflow_run, tracking_uri

log = logging.getLogger(__name__)


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


# --- the evaluate command ---------------------------------------------------------------------


def evaluate_checkpoint(cfg: DictConfig, output_dir: Path) -> Evaluation:
    """Score a checkpoint on a split (or folder) and report it: printed, as files in
    `output_dir`, and as an MLflow run tagged as an evaluation. Everything a mistake can stop
    is checked before the run starts."""
    validate(cfg)
    model, ckpt = trained_model(cfg)
    events = list(cfg.data.events)
    dataset = build_split(cfg.data, cfg.seed, cfg.split.value, cfg.folder)
    # One process: DataParallel over the profile's GPUs whatever its training strategy.
    plan = replace(plan_run(cfg), strategy=Strategy.dp)
    loader = make_loader(dataset, plan.loader_batch_size, cfg.training, plan.device, cfg.seed)
    scored = dataset.index.split
    uri = tracking_uri(cfg)
    ensure_experiment(uri, cfg.experiment_name)
    tags, parent = lineage(uri, ckpt, "evaluation")
    with mlflow_run(uri, cfg.experiment_name, f"evaluate-{scored}", tags, parent_id=parent) as run:
        result = evaluate(
            wrap_model(model, plan), loader, plan.device, plan.precision, events, None, Dist(), True
        )
        files = write_report(result, dataset, events, scored, output_dir)
        run.log_params({"checkpoint": str(ckpt.path), "scored": scored, "data.root": cfg.data.root})
        run.log_metrics({f"{scored}/{k}": v for k, v in result.metrics.items()}, step=0)
        for path in files:
            run.log_artifact(path)
    return result


def trained_model(cfg: DictConfig) -> tuple[CNNLSTM, checkpoint.Checkpoint]:
    """The model in `cfg.checkpoint`, rebuilt from the checkpoint's own config when it holds
    ours (else from cfg.model: the old script's files), with its weights; cfg.data.events
    becomes the model's classes, in its order."""
    ckpt = checkpoint.load(cfg.checkpoint)
    trained = trained_config(ckpt)
    if trained is not None:
        cfg.data.events = list(trained.data.events)
    model_cfg = trained.model if trained is not None else cfg.model
    model = build_model(model_cfg, len(cfg.data.events), weights_follow=True)
    checkpoint.load_weights(model, ckpt)
    return model, ckpt


def trained_config(ckpt: checkpoint.Checkpoint) -> DictConfig | None:
    """The config of the run that wrote the checkpoint; None for files of the old script, whose
    `config` is theirs (or absent)."""
    ours = {field.name for field in dataclasses.fields(Config)}
    if not ckpt.config or not ours <= set(ckpt.config):
        return None
    try:
        return from_container(ckpt.config)
    except OmegaConfBaseException:
        return None


def lineage(uri: str, ckpt: checkpoint.Checkpoint, role: str) -> tuple[dict[str, str], str | None]:
    """Tags of a run that uses a checkpoint (`role`: evaluation, prediction) naming it, and the
    run that trained it if it is in this store: the new run is nested under it."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    tags = {"tennis_exp.role": role, "checkpoint": str(ckpt.path.resolve())}
    if not ckpt.mlflow_run_id:
        return tags, None
    tags["trained_by_run"] = ckpt.mlflow_run_id
    try:
        MlflowClient(uri).get_run(ckpt.mlflow_run_id)
    except MlflowException:
        return tags, None
    return tags, ckpt.mlflow_run_id


def write_report(
    result: Evaluation, dataset: WindowDataset, events: list[str], scored: str, out: Path
) -> list[Path]:
    """The users' classification report and more: report.txt / .json, predictions.csv with
    every window's probabilities, and the confusion matrix (counts and row-normalised)."""
    out.mkdir(parents=True, exist_ok=True)
    video_acc, videos = video_accuracy(result.probabilities, dataset)
    table = report_table(result, events, video_acc, videos)
    log.info("%s: %d windows from %d videos\n%s", scored, len(dataset), videos, table)
    paths = {name: out / name for name in ("report.txt", "report.json", "predictions.csv")}
    paths["report.txt"].write_text(table + "\n")
    summary = {**result.metrics, "video_acc": video_acc, "videos": videos, "windows": len(dataset)}
    paths["report.json"].write_text(json.dumps(summary, indent=2) + "\n")
    write_predictions(paths["predictions.csv"], result.probabilities, dataset, events)
    figure = out / "confusion_matrix.png"
    plot_confusion(result.confusion, events, scored, figure)
    return [*paths.values(), figure]


def video_accuracy(probabilities: torch.Tensor, dataset: WindowDataset) -> tuple[float, int]:
    """The share of videos whose windows' majority vote is their event (ties go to the class
    with the larger summed probability); and the number of videos."""
    index = dataset.index
    video_of = torch.as_tensor(index.windows[:, 0])
    correct = 0
    for video, label in enumerate(index.video_labels):
        mine = probabilities[video_of == video]
        votes = torch.bincount(mine.argmax(1), minlength=mine.shape[1]).double()
        winner = int((votes + mine.sum(0) / (len(mine) + 1)).argmax())  # sum < 1 per vote
        correct += winner == label
    return correct / len(index.video_labels), len(index.video_labels)


def report_table(result: Evaluation, events: list[str], video_acc: float, videos: int) -> str:
    m, support = result.metrics, result.confusion.sum(1).tolist()
    lines = [f"{'':>22}{'precision':>10}{'recall':>10}{'f1-score':>10}{'support':>10}"]
    for event, n in zip(events, support, strict=True):
        key = metric_name(event)
        lines.append(
            f"{event:>22}{m[f'precision_{key}']:>10.3f}{m[f'recall_{key}']:>10.3f}"
            f"{m[f'f1_{key}']:>10.3f}{n:>10d}"
        )
    total = sum(support)
    lines += [
        "",
        f"{'accuracy':>22}{'':>20}{m['acc']:>10.3f}{total:>10d}",
        f"{'macro avg':>22}{m['macro_precision']:>10.3f}{m['macro_recall']:>10.3f}"
        f"{m['macro_f1']:>10.3f}{total:>10d}",
        f"{'video accuracy (vote)':>22}{'':>20}{video_acc:>10.3f}{videos:>10d}",
    ]
    return "\n".join(lines)


def write_predictions(
    path: Path, probabilities: torch.Tensor, dataset: WindowDataset, events: list[str]
) -> None:
    index = dataset.index
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "first_frame", "true", "predicted", *(f"p_{e}" for e in events)])
        for (video, start), label, probs in zip(
            index.windows, index.labels, probabilities.tolist(), strict=True
        ):
            frames = index.videos[video]
            writer.writerow(
                [
                    str(Path(frames.folder).relative_to(Path(frames.folder).parents[1])),
                    frames.names[start],
                    events[label],
                    events[max(range(len(probs)), key=probs.__getitem__)],
                    *(f"{p:.6f}" for p in probs),
                ]
            )
