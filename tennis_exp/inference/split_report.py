"""`python -m tennis_exp.evaluate`'s work: a checkpoint scored on a split (or a folder in the
layout of one) by the training run's own evaluation loop, with the users' classification
report, every window's probabilities, the confusion matrix and a gallery of its mistakes, and an
MLflow run."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from tennis_exp.config import BACKGROUND, metric_name, validate
from tennis_exp.data.frames import WindowDataset, build_split
from tennis_exp.data.loaders import make_loader
from tennis_exp.engine.distributed import Dist
from tennis_exp.engine.evaluation import Evaluation, evaluate
from tennis_exp.engine.hardware import wrap_model
from tennis_exp.inference.trained_model import checkpoint_run, one_process_plan, trained_model
from tennis_exp.tracking.plots import gallery_figure, plot_confusion, save

log = logging.getLogger(__name__)

# The misclassified windows the gallery shows for each confused pair of events.
GALLERY_WINDOWS = 3


def evaluate_checkpoint(cfg: DictConfig, output_dir: Path) -> Evaluation:
    """Score a checkpoint on a split (or folder) and report it: printed, as files in
    `output_dir`, and as an MLflow run tagged as an evaluation. Everything a mistake can stop
    is checked before the run starts."""
    validate(cfg)
    model, ckpt = trained_model(cfg)
    events = list(cfg.data.events)
    dataset = build_split(cfg.data, cfg.seed, cfg.split.value, cfg.folder)
    plan = one_process_plan(cfg)
    loader = make_loader(dataset, plan.loader_batch_size, cfg.training, plan.device, cfg.seed)
    scored = dataset.index.split
    with checkpoint_run(cfg, ckpt, "evaluation", f"evaluate-{scored}") as run:
        result = evaluate(
            wrap_model(model, plan), loader, plan.device, plan.precision, events, None, Dist(), True
        )
        files = write_report(result, dataset, events, scored, output_dir)
        gallery = write_gallery(result.probabilities, dataset, events, output_dir / "errors")
        run.log_params({"checkpoint": ckpt.name, "scored": scored, "data.root": cfg.data.root})
        run.log_metrics({f"{scored}/{k}": v for k, v in result.metrics.items()}, step=0)
        for path in files:
            run.log_artifact(path)
        for path in gallery:
            run.log_artifact(path, "errors")
    return result


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


def most_confident_mistakes(
    probabilities: torch.Tensor, labels: np.ndarray, per_pair: int = GALLERY_WINDOWS
) -> dict[tuple[int, int], list[int]]:
    """For each confused pair (true a, predicted b), in that order, the windows of a predicted
    as b with the highest probability of b, at most `per_pair`: the most confident mistakes
    first, ties in window order, the same on every run."""
    predicted = probabilities.argmax(1).numpy()
    confidence = probabilities.max(1).values.numpy()
    chosen: dict[tuple[int, int], list[int]] = {}
    for i in np.argsort(-confidence, kind="stable"):
        pair = (int(labels[i]), int(predicted[i]))
        if pair[0] != pair[1] and len(chosen.setdefault(pair, [])) < per_pair:
            chosen[pair].append(int(i))
    return dict(sorted(chosen.items()))


def write_gallery(
    probabilities: torch.Tensor, dataset: WindowDataset, events: list[str], out: Path
) -> list[Path]:
    """errors/<true>_as_<predicted>.png for each confused pair: its most confident mistakes
    as frame strips, each labelled with its video, first frame and probabilities."""
    labels = dataset.index.labels
    chosen = most_confident_mistakes(probabilities, labels)
    if not chosen:
        log.info("error gallery: no misclassified window, nothing to draw")
        return []
    predicted = probabilities.argmax(1).numpy()
    paths = []
    for (true, wrong), windows in chosen.items():
        total = int(((labels == true) & (predicted == wrong)).sum())
        captions = [
            "{} {}: ".format(*window_source(dataset, i))
            + "  ".join(
                f"{e} {p:.2f}" for e, p in zip(events, probabilities[i].tolist(), strict=True)
            )
            for i in windows
        ]
        figure = gallery_figure(
            [dataset[i][0].numpy() for i in windows],
            captions,
            f"true {events[true]}, predicted {events[wrong]}: "
            f"{len(windows)} of {total} windows, the most confident first",
        )
        name = f"{metric_name(events[true])}_as_{metric_name(events[wrong])}.png"
        paths.append(save(figure, out / name))
    log.info("error gallery: %d confused pairs drawn in %s", len(paths), out)
    return paths


def window_source(dataset: WindowDataset, i: int) -> tuple[str, str]:
    """Window i's video (action/video, as under the split's folder) and its first frame."""
    video, start = (int(x) for x in dataset.index.windows[i])
    frames = dataset.index.videos[video]
    folder = Path(frames.folder)
    return str(folder.relative_to(folder.parents[1])), frames.names[start]


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
    if "event_macro_f1" in m:  # the background class: the events on their own windows
        on_events = total - support[events.index(BACKGROUND)]
        lines.append(
            f"{'events alone, macro F1':>22}{'':>20}{m['event_macro_f1']:>10.3f}{on_events:>10d}"
        )
    return "\n".join(lines)


def write_predictions(
    path: Path, probabilities: torch.Tensor, dataset: WindowDataset, events: list[str]
) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "first_frame", "true", "predicted", *(f"p_{e}" for e in events)])
        for i, (label, probs) in enumerate(
            zip(dataset.index.labels, probabilities.tolist(), strict=True)
        ):
            writer.writerow(
                [
                    *window_source(dataset, i),
                    events[label],
                    events[max(range(len(probs)), key=probs.__getitem__)],
                    *(f"{p:.6f}" for p in probs),
                ]
            )
