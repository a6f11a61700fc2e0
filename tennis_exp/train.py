"""One training run, top to bottom: plan, data, model, devices, loop, test, tracking."""

from __future__ import annotations

import logging
import os
import random
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Subset
from tqdm import tqdm

from tennis_exp import distributed
from tennis_exp.checkpoint import (
    load_checkpoint,
    load_model_weights,
    model_state,
    resume_checkpoint,
    save_checkpoint,
    signals_deferred,
    unwrap,
)
from tennis_exp.config import Accelerator, Strategy, from_container, validate
from tennis_exp.data import build_datasets
from tennis_exp.distributed import Dist
from tennis_exp.errors import UserError
from tennis_exp.hardware import (
    DeviceSetup,
    ScalingPlan,
    banner,
    loader_batch_size,
    plan_scaling,
    select_devices,
    wrap_model,
)
from tennis_exp.metrics import classification_metrics, confusion_matrix, plot_confusion
from tennis_exp.models import build_model
from tennis_exp.tracking import Run, config_params, ensure_experiment, mlflow_run, tracking_uri

log = logging.getLogger(__name__)

# Steps left out of the throughput figure: the first ones pay for allocator and cuDNN warm-up.
TIMING_WARMUP_STEPS = 3


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
        if dist.active and hw.strategy is not Strategy.ddp:
            raise UserError("torchrun starts DDP workers: add hardware.strategy=ddp")
        if dist.active and hw.devices != int(os.environ["LOCAL_WORLD_SIZE"]):
            raise UserError(
                f"hardware.devices={hw.devices} but torchrun started "
                f"{os.environ['LOCAL_WORLD_SIZE']} process(es) per node: make them equal"
            )
        plan, setup = plan_run(cfg, dist)
        if cfg.dry_run:
            for line in banner(setup, plan, None, distributed.backend(cfg)):
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
            for line in banner(setup, plan, len(datasets["train"]), distributed.backend(cfg)):
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
    log.info("Resuming %s after epoch %d", output_dir, payload["epoch"])
    return cfg, output_dir, payload["mlflow_run_id"]


def plan_run(cfg: DictConfig, dist: Dist) -> tuple[ScalingPlan, DeviceSetup]:
    """The scaling plan and the devices; across torchrun nodes the world is larger than one
    node's devices."""
    hw = cfg.hardware
    plan = plan_scaling(
        cfg.training.batch_size,
        cfg.training.learning_rate,
        dist.world_size if dist.active else hw.devices,
        hw.batch_scaling,
        hw.lr_scaling,
    )
    visible = torch.cuda.device_count() if hw.accelerator is Accelerator.cuda else 0
    return plan, select_devices(hw, visible, dry_run=cfg.dry_run)


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
    writes checkpoints and returns the result)."""
    hw, tcfg = cfg.hardware, cfg.training
    events = list(cfg.data.events)
    plan, setup = plan_run(cfg, dist)
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

    batch = loader_batch_size(plan, hw.strategy)
    # Shuffles are seeded per epoch (seed + epoch), so a resumed run sees the same order.
    shuffle_generator = torch.Generator()
    train_sampler = (
        DistributedSampler(datasets["train"], dist.world_size, dist.rank, seed=cfg.seed)
        if dist.active
        else RandomSampler(datasets["train"], generator=shuffle_generator)
    )
    loaders = {
        "train": make_loader(
            datasets["train"], batch, tcfg.num_workers, setup, cfg.seed, sampler=train_sampler
        ),
        # Each rank evaluates every world_size-th window: the split exactly once, no padding.
        **{
            split: make_loader(
                Subset(datasets[split], range(dist.rank, len(datasets[split]), dist.world_size)),
                batch,
                tcfg.num_workers,
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
    first_epoch, best_f1, step = 1, -1.0, 0
    if resume:
        optimizer.load_state_dict(resume["optimizer_state_dict"])
        plateau.load_state_dict(resume["scheduler_state_dict"])
        first_epoch, best_f1, step = resume["epoch"] + 1, resume["best_f1"], resume["global_step"]
        set_rng_state(resume["rng_states"][dist.rank], setup)

    for epoch in range(first_epoch, tcfg.epochs + 1):
        start = time.perf_counter()
        if dist.active:
            train_sampler.set_epoch(epoch)  # a new shuffle every epoch, the same on every rank
        else:
            shuffle_generator.manual_seed(cfg.seed + epoch)
        if setup.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(setup.device)
            for i in setup.device_ids if hw.strategy is Strategy.dp else []:
                torch.cuda.reset_peak_memory_stats(i)
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        timed_samples, timed_from = 0, None
        batches = islice(loaders["train"], steps_per_epoch)
        bar = tqdm(
            batches,
            total=steps_per_epoch,
            desc=f"epoch {epoch}",
            disable=not show_bar,
            leave=False,
            dynamic_ncols=True,
        )
        for i, (frames, labels) in enumerate(bar):
            if i == min(TIMING_WARMUP_STEPS, steps_per_epoch // 2):
                synchronize(setup)
                timed_from = time.perf_counter()
            if step < warmup_steps:
                ramp = (1 + step * (plan.lr_factor - 1) / warmup_steps) / plan.lr_factor
                for group in optimizer.param_groups:
                    group["lr"] = plan.learning_rate * ramp
            frames = frames.to(setup.device, non_blocking=True)
            labels = labels.to(setup.device, non_blocking=True)
            try:
                logits = model(frames)
                loss = F.cross_entropy(logits, labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            except torch.cuda.OutOfMemoryError:
                raise UserError(
                    f"CUDA out of memory with {plan.per_device_batch_size} windows per device "
                    f"(training.batch_size={tcfg.batch_size}, hardware.batch_scaling="
                    f"{hw.batch_scaling.value}): lower training.batch_size, or keep the "
                    "effective batch with hardware.batch_scaling=constant"
                ) from None
            if tcfg.grad_clip:
                nn.utils.clip_grad_norm_(trainable, tcfg.grad_clip)
            optimizer.step()
            step += 1
            loss_value = loss.item()
            if not np.isfinite(loss_value):
                last = ckpt_dir / "last.pth"
                raise UserError(
                    f"training loss became {loss_value} at epoch {epoch} step {i + 1}; "
                    f"lower training.learning_rate (the run used {plan.learning_rate:g}); "
                    + (
                        f"the last good checkpoint is {last}"
                        if last.exists()
                        else "no epoch had finished, so there is no checkpoint"
                    )
                )
            loss_sum += loss_value * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(labels)
            if timed_from is not None:
                timed_samples += len(labels)
            bar.set_postfix(loss=f"{loss_value:.4f}")
        synchronize(setup)
        end = time.perf_counter()
        loss_sum, correct, seen, timed_samples = dist.all_reduce(
            [loss_sum, correct, seen, timed_samples], setup.device
        )
        # Steady-state throughput of the whole job; a very short epoch counts all of it.
        samples_per_sec = (
            timed_samples / (end - timed_from) if timed_samples else seen / (end - start)
        )

        val, _ = evaluate(model, loaders["val"], setup, events, tcfg.max_batches, dist)
        epoch_time = time.perf_counter() - start
        if step >= warmup_steps:
            plateau.step(val["macro_f1"])  # the same reduced value on every rank
        improved = val["macro_f1"] > best_f1
        best_f1 = max(best_f1, val["macro_f1"])
        rng_states = dist.all_gather(get_rng_state(setup))  # every rank's, for an exact resume
        if not dist.is_main:
            continue
        metrics = {
            "train/loss": loss_sum / seen,
            "train/acc": correct / seen,
            **{f"val/{k}": v for k, v in val.items()},
            "lr": optimizer.param_groups[0]["lr"],
            "perf/samples_per_sec": samples_per_sec,
            "perf/epoch_time_s": epoch_time,
            **peak_memory(setup, hw.strategy),
        }
        payload = {
            "model_state_dict": unwrap(model).state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
            "scheduler_state_dict": plateau.state_dict(),
            "epoch": epoch,
            "best_f1": best_f1,
            "global_step": step,
            "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
            "rng_states": rng_states,
            "mlflow_run_id": run_id,
            "mlflow_tracking_uri": tracking_uri(cfg),
        }
        # A kill lands before or after this block, never between an epoch's metrics and its
        # checkpoint: a resumed run neither repeats nor skips a logged epoch.
        with signals_deferred():
            if run:
                run.log_metrics(metrics, step=epoch)
            if improved:
                save_checkpoint(ckpt_dir / "best.pth", payload)
            save_checkpoint(ckpt_dir / "last.pth", payload)
            log.info(
                "epoch %d/%d  train loss %.4f acc %.3f | val loss %.4f acc %.3f macro-F1 %.3f | "
                "lr %.2g | %.1f samples/s | %.1f s",
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

    dist.barrier()  # best.pth is written before any rank reads it
    load_model_weights(model, ckpt_dir / "best.pth")
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


def make_loader(dataset, batch_size, num_workers, setup: DeviceSetup, seed: int, sampler=None):
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=setup.device.type == "cuda",
        persistent_workers=num_workers > 0,
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
