"""One training run, top to bottom: plan, data, model, devices, loop, test, tracking."""

from __future__ import annotations

import logging
import os
import random
import sys
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler, Subset
from tqdm import tqdm

from tennis_exp import distributed
from tennis_exp.checkpoint import (
    StopSignal,
    load_checkpoint,
    load_model_weights,
    model_state,
    resume_checkpoint,
    save_checkpoint,
    signals_deferred,
    unwrap,
)
from tennis_exp.config import Accelerator, Precision, Strategy, from_container, validate
from tennis_exp.data import build_datasets
from tennis_exp.distributed import Dist
from tennis_exp.errors import UserError
from tennis_exp.features import cached_features
from tennis_exp.hardware import (
    DeviceSetup,
    ScalingPlan,
    autocast,
    banner,
    loader_batch_size,
    plan_scaling,
    resolve_precision,
    select_devices,
    wrap_model,
)
from tennis_exp.metrics import classification_metrics, confusion_matrix, plot_confusion
from tennis_exp.models import build_model
from tennis_exp.tracking import Run, config_params, ensure_experiment, mlflow_run, tracking_uri

log = logging.getLogger(__name__)

# Steps left out of the throughput figure: the first ones pay for allocator and cuDNN warm-up.
TIMING_WARMUP_STEPS = 3
# Above this share of the training time spent waiting for batches, the loader is the bottleneck.
LOADER_BOUND = 0.25


def train(
    cfg: DictConfig,
    output_dir: Path,
    overrides: list[str] | None = None,
    sweep_dir: str | None = None,
) -> float:
    """Train, validate every epoch, test the best weights; return the best val macro-F1.

    This process plans the run, prepares the data once and owns the MLflow run. With
    `hardware.strategy=ddp` it then launches one worker per device; under torchrun it is
    itself one of the workers.
    """
    validate(cfg)
    resume_id = None
    if cfg.resume:
        cfg, output_dir, resume_id = resumed(cfg, overrides)
    hw = cfg.hardware
    dist = distributed.init_process_group(cfg) if distributed.launched_by_torchrun() else Dist()
    try:
        with distributed.failures_shared(dist):
            if dist.active and hw.strategy is not Strategy.ddp:
                raise UserError("torchrun starts DDP workers: add hardware.strategy=ddp")
            if dist.active and hw.devices != int(os.environ["LOCAL_WORLD_SIZE"]):
                raise UserError(
                    f"hardware.devices={hw.devices} but torchrun started "
                    f"{os.environ['LOCAL_WORLD_SIZE']} process(es) per node: make them equal"
                )
            plan, setup, precision = plan_run(cfg, dist)
            if cfg.dry_run:
                for line in banner(setup, plan, precision, None, distributed.backend(cfg)):
                    log.info(line)
                log.info("Dry run: nothing trained")
                return float("nan")

            uri = tracking_uri(cfg)
            if dist.is_main:
                ensure_experiment(uri, cfg.experiment_name)  # a bad store fails before any work
            # Rank 0 generates data and builds caches; the other ranks then find them ready.
            if not dist.is_main:
                dist.barrier()
            datasets = build_datasets(cfg.data, cfg.seed)
            if dist.is_main:
                dist.barrier()
                train_size = len(datasets["train"])
                for line in banner(setup, plan, precision, train_size, distributed.backend(cfg)):
                    log.info(line)
            output_dir = Path(dist.broadcast(str(output_dir)))  # torchrun ranks share rank 0's dir
        if not dist.is_main:
            return train_process(cfg, output_dir, None, dist, datasets)

        output_dir.mkdir(parents=True, exist_ok=True)
        tags = {
            "hardware": hw.name,
            "strategy": hw.strategy.value,
            "output_dir": str(output_dir.resolve()),
        }
        if sweep_dir:
            tags["sweep_dir"] = str(Path(sweep_dir).resolve())
        system_metrics = cfg.tracking.system_metrics
        if system_metrics is None:
            system_metrics = setup.device.type == "cuda"
        with mlflow_run(
            uri, cfg.experiment_name, run_name(cfg, plan), tags, resume_id, system_metrics
        ) as run:
            if not resume_id:
                log_run_inputs(run, cfg, plan, output_dir, overrides)
            if hw.strategy is Strategy.ddp and not dist.active:
                return distributed.launch(cfg, output_dir, run.run_id, nprocs=hw.devices)
            return train_process(cfg, output_dir, run.run_id, dist, datasets)
    finally:
        if distributed.launched_by_torchrun():
            distributed.destroy_process_group()


def resumed(cfg: DictConfig, overrides: list[str] | None) -> tuple[DictConfig, Path, str]:
    """The config, output directory and MLflow run of the run that `resume` continues."""
    ckpt_path, payload = resume_checkpoint(cfg.resume)
    ignored = [o for o in overrides or [] if not o.startswith("resume=")]
    if ignored:
        log.warning("resume continues with the run's saved config; ignoring %s", ignored)
    cfg = from_container(payload["config"])
    cfg.resume = str(ckpt_path)
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        cfg.tracking.uri = payload["mlflow_tracking_uri"]
    output_dir = ckpt_path.parent.parent
    progress = payload.get("epoch_progress")
    log.info(
        "Resuming %s after epoch %d%s",
        output_dir,
        payload["epoch"],
        f" and {progress['batches_done']} batches of the next" if progress else "",
    )
    return cfg, output_dir, payload["mlflow_run_id"]


def plan_run(cfg: DictConfig, dist: Dist) -> tuple[ScalingPlan, DeviceSetup, Precision]:
    """The scaling plan, the devices and the precision; across torchrun nodes the world is
    larger than one node's devices. A dry run shows the precision as asked (no device to ask)."""
    hw = cfg.hardware
    plan = plan_scaling(
        cfg.training.batch_size,
        cfg.training.learning_rate,
        dist.world_size if dist.active else hw.devices,
        hw.batch_scaling,
        hw.lr_scaling,
    )
    visible = torch.cuda.device_count() if hw.accelerator is Accelerator.cuda else 0
    setup = select_devices(hw, visible, dry_run=cfg.dry_run)
    if cfg.dry_run:
        return plan, setup, hw.precision
    bf16 = setup.device.type == "cuda" and torch.cuda.is_bf16_supported()
    return plan, setup, resolve_precision(hw.precision, setup.device.type, bf16)


def log_run_inputs(
    run: Run, cfg: DictConfig, plan: ScalingPlan, output_dir: Path, overrides: list[str] | None
) -> None:
    """Params (the resolved config and the scaling plan), the config and overrides as files."""
    run.log_params(
        {
            **config_params(cfg),
            "scaling.devices": plan.devices,
            "scaling.world_size": plan.devices if cfg.hardware.strategy is Strategy.ddp else 1,
            "scaling.per_device_batch_size": plan.per_device_batch_size,
            "scaling.effective_batch_size": plan.effective_batch_size,
            "scaling.learning_rate": plan.learning_rate,
        }
    )
    for name, text in [
        ("resolved_config.yaml", OmegaConf.to_yaml(cfg, resolve=True)),
        ("overrides.yaml", OmegaConf.to_yaml(list(overrides or []))),
    ]:
        (output_dir / name).write_text(text)
        run.log_artifact(output_dir / name)


def train_process(
    cfg: DictConfig, output_dir: Path, run_id: str | None, dist: Dist, datasets=None
) -> float:
    """The training loop of one process: the only one, or one DDP rank (rank 0 logs to MLflow,
    writes checkpoints and returns the result). A rank's failure is shared with the others."""
    with distributed.failures_shared(dist):
        return _training_loop(cfg, output_dir, run_id, dist, datasets)


def _training_loop(
    cfg: DictConfig, output_dir: Path, run_id: str | None, dist: Dist, datasets
) -> float:
    hw, tcfg = cfg.hardware, cfg.training
    events = list(cfg.data.events)
    plan, setup, precision = plan_run(cfg, dist)
    setup = setup.for_rank(dist.local_rank)
    run = Run.open(tracking_uri(cfg), run_id) if dist.is_main and run_id else None
    seed_everything(cfg.seed + dist.rank)
    if datasets is None:
        datasets = build_datasets(cfg.data, cfg.seed)

    model = build_model(cfg.model, num_classes=len(events))
    resume = load_checkpoint(cfg.resume) if cfg.resume else None
    if resume:
        model.load_state_dict(model_state(resume))
    elif cfg.model.init_from:
        load_model_weights(model, cfg.model.init_from)
        log.info("Initialised from %s", cfg.model.init_from)
    model = wrap_model(model, setup, distributed=dist.active)
    if cfg.model.freeze_backbone and cfg.model.feature_cache:
        cache_dir = Path(cfg.model.feature_cache_dir).expanduser().absolute()
        datasets = cached_features(
            unwrap(model), datasets, cache_dir, precision, setup.device, dist
        )
    if tcfg.compile:
        model = torch.compile(model)
    scaler = torch.amp.GradScaler(setup.device.type, enabled=precision is Precision.fp16)

    batch = loader_batch_size(plan, hw.strategy)
    # Shuffles are seeded per epoch (seed + epoch), so a resumed run sees the same order.
    shuffle_generator = torch.Generator()
    train_sampler = ResumableSampler(
        DistributedSampler(datasets["train"], dist.world_size, dist.rank, seed=cfg.seed)
        if dist.active
        else RandomSampler(datasets["train"], generator=shuffle_generator)
    )
    loaders = {
        "train": make_loader(
            datasets["train"], batch, tcfg, setup, cfg.seed, sampler=train_sampler
        ),
        # Each rank evaluates every world_size-th window: the split exactly once, no padding.
        **{
            split: make_loader(
                Subset(datasets[split], range(dist.rank, len(datasets[split]), dist.world_size)),
                batch,
                tcfg,
                setup,
                cfg.seed,
            )
            for split in ("val", "test")
        },
    }
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=plan.learning_rate, weight_decay=tcfg.weight_decay)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=tcfg.lr_factor, patience=tcfg.lr_patience
    )
    steps_per_epoch = min(len(loaders["train"]), tcfg.max_batches or len(loaders["train"]))
    # Goyal et al.: a linearly scaled-up LR is reached by a linear ramp from the unscaled one.
    warmup_steps = tcfg.warmup_epochs * steps_per_epoch if plan.lr_factor > 1 else 0
    show_bar = dist.is_main and (
        cfg.progress_bar if cfg.progress_bar is not None else sys.stderr.isatty()
    )
    ckpt_dir = output_dir / "checkpoints"
    first_epoch, best_f1, step, progress = 1, -1.0, 0, None
    if resume:
        optimizer.load_state_dict(resume["optimizer_state_dict"])
        plateau.load_state_dict(resume["scheduler_state_dict"])
        scaler.load_state_dict(resume.get("scaler_state_dict", {}))
        first_epoch, best_f1, step = resume["epoch"] + 1, resume["best_f1"], resume["global_step"]
        progress = resume.get("epoch_progress")  # set when it was stopped mid-epoch
        set_rng_state(resume["rng_states"][dist.rank], setup)

    def checkpoint(epoch_done: int, epoch_progress: dict | None = None) -> dict | None:
        """What `resume` needs, on rank 0 (every rank must call it: RNG states are gathered)."""
        rng_states = dist.all_gather(get_rng_state(setup))
        if not dist.is_main:
            return None
        return {
            "model_state_dict": unwrap(model).state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
            "scheduler_state_dict": plateau.state_dict(),
            "scaler_state_dict": scaler.state_dict(),
            "epoch": epoch_done,
            "epoch_progress": epoch_progress,
            "best_f1": best_f1,
            "global_step": step,
            "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
            "rng_states": rng_states,
            "mlflow_run_id": run_id,
            "mlflow_tracking_uri": tracking_uri(cfg),
        }

    loader_warned = False
    with StopSignal() as stop:
        for epoch in range(first_epoch, tcfg.epochs + 1):
            start = time.perf_counter()
            if dist.active:
                train_sampler.base.set_epoch(epoch)  # a new shuffle each epoch, equal on all ranks
            else:
                shuffle_generator.manual_seed(cfg.seed + epoch)
            if setup.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(setup.device)
                for i in setup.device_ids if hw.strategy is Strategy.dp else []:
                    torch.cuda.reset_peak_memory_stats(i)
            model.train()
            done, loss_sum, correct, seen = 0, 0.0, 0, 0
            if progress and progress["epoch"] == epoch:  # resumed mid-epoch: the rest of it
                done, loss_sum, correct, seen = (
                    progress[k] for k in ("batches_done", "loss_sum", "correct", "seen")
                )
            train_sampler.skip = done * batch
            timed_step = done + min(TIMING_WARMUP_STEPS, (steps_per_epoch - done) // 2)
            # Counted on the device: no second sync per step (loss.item() is the one).
            correct = torch.tensor(correct, device=setup.device)
            timed_samples, timed_from, waited = 0, None, 0.0
            bar = tqdm(
                islice(loaders["train"], steps_per_epoch - done),
                total=steps_per_epoch,
                initial=done,
                desc=f"epoch {epoch}",
                disable=not show_bar,
                leave=False,
                dynamic_ncols=True,
            )
            try:
                fetched = time.perf_counter()
                for i, (frames, labels) in enumerate(bar, start=done):
                    if timed_from is not None:
                        waited += time.perf_counter() - fetched
                    if stop_agreed(stop, dist, setup):
                        raise _Stop
                    if i == timed_step:
                        synchronize(setup)
                        timed_from = time.perf_counter()
                    if step < warmup_steps:
                        ramp = (1 + step * (plan.lr_factor - 1) / warmup_steps) / plan.lr_factor
                        for group in optimizer.param_groups:
                            group["lr"] = plan.learning_rate * ramp
                    frames = frames.to(setup.device, non_blocking=True)
                    labels = labels.to(setup.device, non_blocking=True)
                    try:
                        with autocast(precision, setup.device.type):
                            logits = model(frames)
                            loss = F.cross_entropy(logits, labels)
                        optimizer.zero_grad(set_to_none=True)
                        scaler.scale(loss).backward()
                    except torch.cuda.OutOfMemoryError:
                        raise UserError(
                            f"CUDA out of memory with {plan.per_device_batch_size} windows per "
                            f"device (training.batch_size={tcfg.batch_size}, "
                            f"hardware.batch_scaling={hw.batch_scaling.value}): lower "
                            "training.batch_size, or keep the effective batch with "
                            "hardware.batch_scaling=constant"
                        ) from None
                    if tcfg.grad_clip:
                        scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(trainable, tcfg.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    step += 1
                    loss_value = loss.item()
                    if not np.isfinite(loss_value):
                        last = ckpt_dir / "last.pth"
                        raise UserError(
                            f"training loss became {loss_value} at epoch {epoch} step {i + 1}; "
                            f"lower training.learning_rate (the run used {plan.learning_rate:g})"
                            "; "
                            + (
                                f"the last good checkpoint is {last}"
                                if last.exists()
                                else "no epoch had finished, so there is no checkpoint"
                            )
                        )
                    loss_sum += loss_value * len(labels)
                    correct += (logits.argmax(1) == labels).sum()
                    seen += len(labels)
                    done = i + 1
                    if timed_from is not None:
                        timed_samples += len(labels)
                    bar.set_postfix(loss=f"{loss_value:.4f}")
                    fetched = time.perf_counter()
            except Exception as err:
                # Loader workers hit by the same signal may die before the next step boundary.
                if not isinstance(err, _Stop) and (stop.name is None or isinstance(err, UserError)):
                    raise
                payload = checkpoint(
                    epoch - 1,
                    {
                        "epoch": epoch,
                        "batches_done": done,
                        "loss_sum": loss_sum,
                        "correct": int(correct),
                        "seen": seen,
                    },
                )
                if payload:
                    save_checkpoint(ckpt_dir / "last.pth", payload)
                    log.info(
                        "stopped in epoch %d after %d batches: %s saved", epoch, done, "last.pth"
                    )
                raise KeyboardInterrupt(f"stopped by {stop.name or 'another rank'}") from None
            synchronize(setup)
            end = time.perf_counter()
            loss_sum, correct, seen, timed_samples, waited = dist.all_reduce(
                [loss_sum, int(correct), seen, timed_samples, waited], setup.device
            )
            # Steady-state throughput of the whole job; a very short epoch counts all of it.
            timed = end - timed_from if timed_samples else end - start
            samples_per_sec = (timed_samples or seen) / timed
            data_wait = waited / dist.world_size / timed
            if data_wait > LOADER_BOUND and not loader_warned:
                loader_warned = True
                log.warning(
                    "epoch %d waited for batches %.0f%% of its training time: the data loader, "
                    "not the model, is the bottleneck; raise training.num_workers (now %d)%s",
                    epoch,
                    100 * data_wait,
                    tcfg.num_workers,
                    "" if cfg.data.frame_cache else " and set data.frame_cache=true",
                )

            with autocast(precision, setup.device.type):
                val, _ = evaluate(model, loaders["val"], setup, events, tcfg.max_batches, dist)
            epoch_time = time.perf_counter() - start
            if step >= warmup_steps:
                plateau.step(val["macro_f1"])  # the same reduced value on every rank
            improved = val["macro_f1"] > best_f1
            best_f1 = max(best_f1, val["macro_f1"])
            payload = checkpoint(epoch)
            if dist.is_main:
                metrics = {
                    "train/loss": loss_sum / seen,
                    "train/acc": correct / seen,
                    **{f"val/{k}": v for k, v in val.items()},
                    "lr": optimizer.param_groups[0]["lr"],
                    "perf/samples_per_sec": samples_per_sec,
                    "perf/epoch_time_s": epoch_time,
                    "perf/data_wait_frac": data_wait,
                    **peak_memory(setup, hw.strategy),
                }
                # A kill lands before or after this block, never between an epoch's metrics and
                # its checkpoint: a resumed run neither repeats nor skips a logged epoch.
                with signals_deferred():
                    if run:
                        run.log_metrics(metrics, step=epoch)
                    if improved:
                        save_checkpoint(ckpt_dir / "best.pth", payload)
                    save_checkpoint(ckpt_dir / "last.pth", payload)
                    log.info(
                        "epoch %d/%d  train loss %.4f acc %.3f | val loss %.4f acc %.3f "
                        "macro-F1 %.3f | lr %.2g | %.1f samples/s | %.1f s",
                        epoch,
                        tcfg.epochs,
                        metrics["train/loss"],
                        metrics["train/acc"],
                        val["loss"],
                        val["acc"],
                        val["macro_f1"],
                        metrics["lr"],
                        samples_per_sec,
                        epoch_time,
                    )
            # A signal during evaluation takes effect here, once the epoch is saved.
            if stop_agreed(stop, dist, setup):
                raise KeyboardInterrupt(f"stopped by {stop.name or 'another rank'}")

    dist.barrier()  # best.pth is written before any rank reads it
    load_model_weights(model, ckpt_dir / "best.pth")
    with autocast(precision, setup.device.type):
        test, cm = evaluate(model, loaders["test"], setup, events, tcfg.max_batches, dist)
    if dist.is_main:
        log.info("test (best val weights): acc %.3f macro-F1 %.3f", test["acc"], test["macro_f1"])
        plot_confusion(cm, events, "test, best val weights", output_dir / "confusion_matrix.png")
        if run:
            run.log_metrics({f"test/{k}": v for k, v in test.items()}, step=tcfg.epochs)
            run.log_artifact(output_dir / "confusion_matrix.png")
            if cfg.tracking.log_checkpoint:
                run.log_artifact(ckpt_dir / "best.pth", "checkpoints")
    return best_f1


class _Stop(Exception):
    """A stop was requested: raised at a step boundary."""


def stop_agreed(stop: StopSignal, dist: Dist, setup: DeviceSetup) -> bool:
    """Whether any rank was asked to stop; all ranks then stop at the same step."""
    requested = stop.name is not None
    if not dist.active:
        return requested
    return dist.all_reduce([float(requested)], setup.device)[0] > 0


class ResumableSampler(Sampler[int]):
    """A sampler whose next pass starts `skip` samples in: a run resumed mid-epoch trains on
    the rest of that epoch's order."""

    def __init__(self, base: Sampler[int]) -> None:
        self.base = base
        self.skip = 0

    def __len__(self) -> int:
        return len(self.base)

    def __iter__(self) -> Iterator[int]:
        skip, self.skip = self.skip, 0
        return islice(iter(self.base), skip, None)


@torch.no_grad()
def evaluate(
    model, loader, setup: DeviceSetup, events: list[str], max_batches: int | None, dist: Dist
):
    """Loss and classification metrics over a split, summed over ranks; (metrics, confusion)."""
    model.eval()
    cm = torch.zeros(len(events), len(events), dtype=torch.long)
    loss_sum, seen = 0.0, 0
    for frames, labels in islice(loader, max_batches):
        logits = model(frames.to(setup.device, non_blocking=True))
        labels = labels.to(setup.device, non_blocking=True)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        seen += len(labels)
        cm += confusion_matrix(logits.argmax(1).cpu(), labels.cpu(), len(events))
    loss_sum, seen = dist.all_reduce([loss_sum, seen], setup.device)
    cm = dist.all_reduce_tensor(cm, setup.device)
    return {"loss": loss_sum / max(seen, 1), **classification_metrics(cm, events)}, cm


def make_loader(dataset, batch_size, training, setup: DeviceSetup, seed: int, sampler=None):
    """`training`: the run's training config (its num_workers and prefetch_factor)."""
    workers = training.num_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=setup.device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=training.prefetch_factor if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
    )


def run_name(cfg: DictConfig, plan: ScalingPlan) -> str:
    """e.g. gpu2-dp-bs64-lr2e-4"""
    mantissa, exponent = f"{plan.learning_rate:.2e}".split("e")
    lr = f"{float(mantissa):g}e{int(exponent)}"
    hw = cfg.hardware
    return f"{hw.name}-{hw.strategy.value}-bs{plan.effective_batch_size}-lr{lr}"


def peak_memory(setup: DeviceSetup, strategy: Strategy) -> dict[str, float]:
    """Peak allocated memory per GPU this epoch, in MiB (GPU 0 carries DataParallel's extra).

    Under DDP each rank sees only its own GPU: this is rank 0's."""
    if setup.device.type != "cuda":
        return {}
    ids = setup.device_ids if strategy is Strategy.dp else [setup.device.index]
    return {f"perf/peak_mem_mb/gpu{i}": torch.cuda.max_memory_allocated(i) / 2**20 for i in ids}


def synchronize(setup: DeviceSetup) -> None:
    if setup.device.type == "cuda":
        torch.cuda.synchronize(setup.device)


def get_rng_state(setup: DeviceSetup) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if setup.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(setup.device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], setup: DeviceSetup) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], setup.device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
