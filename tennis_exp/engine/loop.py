"""The training loop of one process (the only one, or one DDP rank): fit the epochs, each
`train_one_epoch`, `evaluate` on val and `end_epoch` (metrics, log, checkpoint, curves), then test
the best weights. Rank 0 logs to MLflow and writes the checkpoints and pictures."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm import tqdm

from tennis_exp.config import (
    Precision,
    feature_cache_blocker,
    shows_progress_bar,
    uses_feature_cache,
)
from tennis_exp.data.augment import augment
from tennis_exp.data.frames import WindowDataset
from tennis_exp.data.loaders import ResumableSampler, TimedBatches, device_batches, make_loaders
from tennis_exp.engine import checkpoint
from tennis_exp.engine.checkpoint import Checkpoint, StopSignal, signals_deferred, unwrap
from tennis_exp.engine.device_memory import peak_memory, reset_peak_memory, synchronize
from tennis_exp.engine.distributed import Dist
from tennis_exp.engine.evaluation import Evaluation, evaluate
from tennis_exp.engine.features import cached_features
from tennis_exp.engine.hardware import RunPlan, autocast, wrap_model
from tennis_exp.engine.metrics import classification_metrics
from tennis_exp.engine.rng import rng_state, set_rng_state
from tennis_exp.engine.schedule import LrSchedule, plateau_step
from tennis_exp.engine.state import EpochProgress, TrainState
from tennis_exp.errors import UserError
from tennis_exp.files import write_text
from tennis_exp.models.cnn_lstm import CNNLSTM
from tennis_exp.tracking.plots import (
    CONFUSION_FILE,
    CURVE_KEYS,
    curves_figure,
    plot_confusion,
    save,
)
from tennis_exp.tracking.runs import Run

log = logging.getLogger(__name__)

# Steps left out of the throughput figure: the first ones pay for allocator and cuDNN warm-up.
TIMING_WARMUP_STEPS = 3
# Above this share of the training time spent waiting for batches, the loader is the bottleneck.
LOADER_BOUND = 0.25
# DDP ranks agree whether to stop every this many steps: each agreement is a collective and a
# host sync. A signal between two agreements costs at most this many more steps.
STOP_CHECK_STEPS = 8


@dataclass(frozen=True)
class Job:
    """What every process of a run is given: its config and plan, where to write, which MLflow
    run to log to (rank 0), and the checkpoint a resumed run continues from."""

    cfg: DictConfig
    plan: RunPlan
    output_dir: Path
    run_id: str | None
    tracking_uri: str
    class_weights: list[float] | None = None  # the loss's, from the training split
    resume_from: Path | None = None


@dataclass
class EpochResult:
    """One epoch's training figures, summed over ranks."""

    loss: float
    acc: float
    macro_f1: float  # of the epoch's training predictions (augmented, weights changing)
    samples_per_sec: float
    data_wait: float  # share of the timed training time spent waiting for batches
    started: float  # time.perf_counter() when the epoch began


class Stopped(Exception):
    """A stop was requested (SIGINT, SIGTERM, or another rank's): raised at a step boundary."""


class Trainer:
    """The model, what trains of it, the optimizer and the train state of one process."""

    def __init__(
        self,
        job: Job,
        dist: Dist,
        model: CNNLSTM,
        datasets: dict[str, WindowDataset],
        resume: Checkpoint | None = None,
    ) -> None:
        cfg, self.tcfg = job.cfg, job.cfg.training
        self.job, self.dist, self.plan = job, dist, job.plan.for_rank(dist.local_rank)
        self.events = list(cfg.data.events)
        self.model = model.to(self.plan.device)
        self.trained, datasets = self._trained_part(datasets)
        self.class_weights = (
            torch.tensor(job.class_weights, device=self.plan.device) if job.class_weights else None
        )
        self.state = TrainState(
            torch.optim.Adam(
                self._param_groups(),
                lr=self.plan.scaling.learning_rate,
                weight_decay=self.tcfg.weight_decay,
            ),
            torch.amp.GradScaler(
                self.plan.device.type, enabled=self.plan.precision is Precision.fp16
            ),
        )
        self.params = [p for group in self.state.optimizer.param_groups for p in group["params"]]
        self.sampler = ResumableSampler(datasets["train"], cfg.seed, dist)
        batch, device = self.plan.loader_batch_size, self.plan.device
        self.loaders = device_batches(
            datasets, self.sampler, batch, device, dist, cfg.data.device_cache
        ) or make_loaders(datasets, self.sampler, batch, device, dist, self.tcfg, cfg.seed)
        train_batches = len(self.loaders["train"])
        self.steps_per_epoch = min(train_batches, self.tcfg.max_batches or train_batches)
        self.schedule = LrSchedule.for_run(
            self.plan.scaling.learning_rate,
            self.plan.scaling.lr_factor,
            self.tcfg.warmup_epochs,
            self.steps_per_epoch,
        )
        if resume is not None:
            self.state.load_state_dict(resume.train_state, self.plan.scaling.learning_rate)
            set_rng_state(self.state.rng_states[dist.rank], self.plan.device)
        self.run = Run.open(job.tracking_uri, job.run_id) if dist.is_main and job.run_id else None
        self.ckpt_dir = job.output_dir / "checkpoints"
        self.show_bar = dist.is_main and shows_progress_bar(cfg.progress_bar)
        self.loader_warned = False
        self.stop = StopSignal()
        # Each curve's (epoch, value) pairs for curves.png: a resumed run's earlier epochs are
        # in its MLflow run (they are logged with the checkpoint that ends each of them).
        self.history: dict[str, list[tuple[int, float]]] = {}
        if self.run and resume is not None:
            self.history = self.run.history(CURVE_KEYS, last_step=self.state.epoch)

    def _trained_part(self, datasets):
        """The module that trains, wrapped for the strategy: the whole model, or only its head
        on a frozen backbone's cached features (a wrapper then holds no backbone to copy)."""
        cfg = self.job.cfg
        trained: nn.Module = self.model
        auto = cfg.model.freeze_backbone and cfg.model.feature_cache == "auto"
        if auto and (blocker := feature_cache_blocker(cfg)):
            log.info("model.feature_cache=auto: no feature cache, as %s", blocker[0])
        if uses_feature_cache(cfg):
            cache_dir = Path(cfg.model.feature_cache_dir).expanduser().absolute()
            datasets = cached_features(
                self.model, datasets, cache_dir, self.plan.precision, self.plan.device, self.dist
            )
            trained = self.model.head()
        return self._wrapped(trained), datasets

    def _wrapped(self, module: nn.Module) -> nn.Module:
        wrapped = wrap_model(module, self.plan)
        return torch.compile(wrapped) if self.tcfg.compile else wrapped

    def _param_groups(self) -> list[dict]:
        """One group of what trains, or two when the backbone's LR differs from the head's
        (training.backbone_lr_factor) or it will be unfrozen: each group's `lr_scale` times
        the schedule's LR is its LR. A frozen backbone's parameters get no gradient until it
        is unfrozen, and Adam leaves them alone until then."""
        cfg = self.job.cfg
        factor, unfreeze = self.tcfg.backbone_lr_factor, cfg.model.unfreeze_at_epoch
        if factor == 1 and unfreeze is None:
            return [{"params": [p for p in self.trained.parameters() if p.requires_grad]}]
        backbone = list(self.model.backbone.parameters())
        held = {id(p) for p in backbone}
        head = [p for p in self.trained.parameters() if p.requires_grad and id(p) not in held]
        if cfg.model.freeze_backbone and unfreeze is None:
            return [{"params": head, "lr_scale": 1.0}]
        return [{"params": head, "lr_scale": 1.0}, {"params": backbone, "lr_scale": factor}]

    def unfreeze_if_due(self, epoch: int) -> None:
        """Staged unfreezing: from model.unfreeze_at_epoch on, the backbone trains too (and its
        BatchNorm statistics update); the wrapper is rebuilt around what now trains."""
        at = self.job.cfg.model.unfreeze_at_epoch
        if at is None or epoch < at or not self.model.freeze_backbone:
            return
        self.model.unfreeze_backbone()
        self.trained = self._wrapped(self.model)
        if self.dist.is_main:
            log.info(
                "epoch %d: the backbone is unfrozen, at %g x the head's LR",
                epoch,
                self.tcfg.backbone_lr_factor,
            )

    def fit(self) -> None:
        """Train from the state's epoch to the last, validating and saving every epoch."""
        with self.stop:
            for epoch in range(self.state.epoch + 1, self.tcfg.epochs + 1):
                self.unfreeze_if_due(epoch)
                result = self.train_one_epoch(epoch)
                self.end_epoch(epoch, result, self.score("val").metrics)
                # A signal during evaluation takes effect here, once the epoch is saved.
                if self.stop_agreed():
                    raise KeyboardInterrupt(f"stopped by {self.stop.name or 'another rank'}")

    def train_one_epoch(self, epoch: int) -> EpochResult:
        """One pass over this rank's share of the training windows (the rest of it, when the
        run was stopped mid-epoch)."""
        started = time.perf_counter()
        state, batch = self.state, self.plan.loader_batch_size
        if state.progress is None or state.progress.epoch != epoch:
            state.progress = EpochProgress(epoch)
        progress = state.progress
        self.sampler.start_epoch(epoch, skip=progress.batches_done * batch)
        reset_peak_memory(self.plan)
        self.trained.train()
        timed = TimedBatches(
            islice(self.loaders["train"], self.steps_per_epoch - progress.batches_done),
            warmup=min(TIMING_WARMUP_STEPS, (self.steps_per_epoch - progress.batches_done) // 2),
            sync=lambda: synchronize(self.plan.device),
        )
        # Counted on the device: loss.item() is the step's one host sync, these add none.
        correct = torch.tensor(progress.correct, device=self.plan.device)
        n = len(self.events)
        confusion = torch.tensor(progress.confusion or [[0] * n] * n, device=self.plan.device)
        try:
            for frames, labels in self.progress_bar(timed, epoch, progress.batches_done):
                if self.stop_agreed(progress.batches_done):
                    raise Stopped
                loss, predicted, labels = self.train_step(
                    frames, labels, epoch, progress.batches_done
                )
                progress.loss_sum += loss * len(labels)
                correct += (predicted == labels).sum()
                # [true, predicted] counts: index_add_ needs no host sync, unlike bincount.
                confusion.view(-1).index_add_(0, labels * n + predicted, torch.ones_like(labels))
                progress.seen += len(labels)
                progress.batches_done += 1
        except Exception as err:
            progress.correct, progress.confusion = int(correct), confusion.tolist()
            self.stopped_mid_epoch(err)
        progress.correct, progress.confusion = int(correct), confusion.tolist()
        synchronize(self.plan.device)
        return self.epoch_result(progress, timed, started)

    def train_step(
        self, frames, labels, epoch: int, batch_index: int
    ) -> tuple[float, torch.Tensor, torch.Tensor]:
        """One optimizer step at the schedule's LR; (loss, predicted classes, labels), the
        last two on the device."""
        state, plan = self.state, self.plan
        lr = self.schedule.lr(state.step, state.plateau.scale)
        for group in state.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        frames = augment(frames.to(plan.device, non_blocking=True), self.job.cfg.data.augment)
        labels = labels.to(plan.device, non_blocking=True)
        try:
            with autocast(plan.precision, plan.device.type):
                logits = self.trained(frames)
                loss = F.cross_entropy(logits, labels, weight=self.class_weights)
            state.optimizer.zero_grad(set_to_none=True)
            state.scaler.scale(loss).backward()
        except torch.cuda.OutOfMemoryError:
            raise UserError(
                f"CUDA out of memory with {plan.scaling.per_device_batch_size} windows per "
                f"device (training.batch_size={self.tcfg.batch_size}, "
                f"hardware.batch_scaling={self.job.cfg.hardware.batch_scaling.value}): lower "
                "training.batch_size, or keep the effective batch with "
                "hardware.batch_scaling=constant"
            ) from None
        if self.tcfg.grad_clip:
            state.scaler.unscale_(state.optimizer)
            nn.utils.clip_grad_norm_(self.params, self.tcfg.grad_clip)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.step += 1
        loss_value = loss.item()
        if not np.isfinite(loss_value):
            self.diverged(loss_value, epoch, batch_index + 1)
        return loss_value, logits.argmax(1), labels

    def diverged(self, loss: float, epoch: int, step: int) -> None:
        last = self.ckpt_dir / "last.pth"
        raise UserError(
            f"training loss became {loss} at epoch {epoch} step {step}; lower "
            f"training.learning_rate (the run used {self.plan.scaling.learning_rate:g}); "
            + (
                f"the last good checkpoint is {last}"
                if last.exists()
                else "no epoch had finished, so there is no checkpoint"
            )
        )

    def stopped_mid_epoch(self, err: Exception) -> None:
        """Save where the epoch stopped, then end the run as interrupted. Loader workers hit
        by the same signal may die before the next step boundary: that is the stop too."""
        if not isinstance(err, Stopped) and (self.stop.name is None or isinstance(err, UserError)):
            raise err
        self.save(["last.pth"])
        if self.dist.is_main:
            log.info(
                "stopped in epoch %d after %d batches: last.pth saved",
                self.state.progress.epoch,
                self.state.progress.batches_done,
            )
        raise KeyboardInterrupt(f"stopped by {self.stop.name or 'another rank'}") from None

    def epoch_result(self, progress: EpochProgress, timed: TimedBatches, started: float):
        end = time.perf_counter()
        loss_sum, correct, seen, samples, waited = self.dist.all_reduce(
            [progress.loss_sum, progress.correct, progress.seen, timed.samples, timed.waited],
            self.plan.device,
        )
        # Steady-state throughput of the whole job; a very short epoch counts all of it.
        seconds = end - timed.since if samples else end - started
        data_wait = waited / self.dist.world_size / seconds
        confusion = self.dist.all_reduce_tensor(torch.tensor(progress.confusion), self.plan.device)
        if data_wait > LOADER_BOUND and not self.loader_warned:
            self.loader_warned = True
            log.warning(
                "epoch %d waited for batches %.0f%% of its training time: the data loader, "
                "not the model, is the bottleneck; raise training.num_workers (now %d)%s",
                progress.epoch,
                100 * data_wait,
                self.tcfg.num_workers,
                "" if self.job.cfg.data.frame_cache else " and set data.frame_cache=true",
            )
        return EpochResult(
            loss_sum / seen,
            correct / seen,
            classification_metrics(confusion, self.events)["macro_f1"],
            (samples or seen) / seconds,
            data_wait,
            started,
        )

    def end_epoch(self, epoch: int, result: EpochResult, val: dict[str, float]) -> None:
        """Advance the state, then log the epoch and save its checkpoints, together."""
        epoch_time = time.perf_counter() - result.started
        state = self.state
        lr = self.schedule.lr(state.step - 1, state.plateau.scale)  # the epoch's last step's
        state.epoch, state.progress = epoch, None
        if not self.schedule.warming_up(state.step):
            tcfg = self.tcfg
            state.plateau = plateau_step(
                state.plateau,
                val["macro_f1"],
                tcfg.lr_patience,
                tcfg.lr_factor,
                self.schedule.planned,
            )
        improved = val["macro_f1"] > state.best_f1
        state.best_f1 = max(state.best_f1, val["macro_f1"])
        metrics = {
            "train/loss": result.loss,
            "train/acc": result.acc,
            "train/macro_f1": result.macro_f1,
            **{f"val/{k}": v for k, v in val.items()},
            "lr": lr,
            "perf/samples_per_sec": result.samples_per_sec,
            "perf/epoch_time_s": epoch_time,
            "perf/data_wait_frac": result.data_wait,
            **peak_memory(self.plan),
        }
        # A kill lands before or after this block, never between an epoch's metrics and its
        # checkpoint: a resumed run neither repeats nor skips a logged epoch.
        with signals_deferred():
            if self.run:
                self.run.log_metrics(metrics, step=epoch)
            self.save(["best.pth", "last.pth"] if improved else ["last.pth"])
        if self.dist.is_main:
            log.info(
                "epoch %d/%d  train loss %.4f acc %.3f | val loss %.4f acc %.3f macro-F1 %.3f | "
                "lr %.2g | %.1f samples/s | %.1f s",
                epoch,
                self.tcfg.epochs,
                result.loss,
                result.acc,
                val["loss"],
                val["acc"],
                val["macro_f1"],
                lr,
                result.samples_per_sec,
                epoch_time,
            )
            self.draw_curves(epoch, metrics)

    def draw_curves(self, epoch: int, metrics: dict[str, float]) -> None:
        """curves.png in the run folder, every epoch so far (a resumed run's earlier ones
        too), rewritten whole and logged again after each epoch."""
        for key in CURVE_KEYS:
            self.history.setdefault(key, []).append((epoch, metrics[key]))
        path = save(curves_figure(self.history), self.job.output_dir / "curves.png")
        if self.run:
            self.run.log_artifact(path)

    def save(self, names: list[str]) -> None:
        """Write the checkpoint files on rank 0; every rank calls it (RNG states are gathered)."""
        self.state.rng_states = self.dist.all_gather(rng_state(self.plan.device))
        if not self.dist.is_main:
            return
        ckpt = Checkpoint(
            unwrap(self.model).state_dict(),
            OmegaConf.to_container(self.job.cfg, resolve=True, enum_to_str=True),
            self.state.state_dict(),
            self.job.run_id,
            self.job.tracking_uri,
        )
        for name in names:
            checkpoint.save(self.ckpt_dir / name, ckpt)

    def stop_agreed(self, step: int | None = None) -> bool:
        """Whether any rank was asked to stop, so that all ranks stop at the same step. Under
        DDP that is a collective: asked every STOP_CHECK_STEPS steps, and between epochs."""
        requested = self.stop.name is not None
        if not self.dist.active:
            return requested
        if step is not None and step % STOP_CHECK_STEPS:
            return False
        return self.dist.all_reduce([float(requested)], self.plan.device)[0] > 0

    def test(self) -> dict[str, float]:
        """The best val weights on the test split, logged with a confusion matrix (its picture,
        and its counts for a sweep's comparison). Rank 0 reads them and hands them to the
        others: best.pth may be on its machine's disk alone."""
        if self.dist.is_main:
            checkpoint.load_weights(self.model, self.ckpt_dir / "best.pth")
        self.dist.broadcast_module(self.model)
        result = self.score("test")
        test, cm = result.metrics, result.confusion
        if self.dist.is_main:
            events = test.get("event_macro_f1")
            log.info(
                "test (best val weights): acc %.3f macro-F1 %.3f%s",
                test["acc"],
                test["macro_f1"],
                "" if events is None else f" (the events on their clips alone: {events:.3f})",
            )
            out = self.job.output_dir
            figure = plot_confusion(
                cm, self.events, "test, best val weights", out / "confusion_matrix.png"
            )
            counts = out / CONFUSION_FILE
            write_text(counts, json.dumps({"events": self.events, "counts": cm.tolist()}) + "\n")
            if self.run:
                self.run.log_metrics(
                    {f"test/{k}": v for k, v in test.items()}, step=self.tcfg.epochs
                )
                self.run.log_artifact(figure)
                self.run.log_artifact(counts)
                if self.job.cfg.tracking.log_checkpoint:
                    self.run.log_artifact(self.ckpt_dir / "best.pth", "checkpoints")
        return test

    def score(self, split: str) -> Evaluation:
        return evaluate(
            self.trained,
            self.loaders[split],
            self.plan.device,
            self.plan.precision,
            self.events,
            self.tcfg.max_batches,
            self.dist,
        )

    def progress_bar(self, batches: Iterable, epoch: int, done: int):
        return tqdm(
            batches,
            total=self.steps_per_epoch,
            initial=done,
            desc=f"epoch {epoch}",
            disable=not self.show_bar,
            leave=False,
            dynamic_ncols=True,
        )
