"""`train(cfg)`: one training run as a list of phases. Plan, data, tracking, then fit and test,
in this process or in one worker process per device (DDP).

The process that runs `train` plans the run, prepares the data and owns the MLflow run; with
`hardware.strategy=ddp` it then launches one worker per device (`run_worker`), and under
torchrun or a SLURM task per device it is itself one of the workers.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from torch.distributed.elastic.multiprocessing.errors import record

from tennis_exp.config import Strategy, jobnames, metric_name, validate
from tennis_exp.data.frames import WindowDataset, build_datasets
from tennis_exp.engine import checkpoint, distributed
from tennis_exp.engine.checkpoint import Checkpoint
from tennis_exp.engine.distributed import Dist
from tennis_exp.engine.hardware import RunPlan, plan_run
from tennis_exp.engine.loop import Job, Trainer
from tennis_exp.engine.objective import class_weights
from tennis_exp.engine.resume import EPOCHS_TAG, resume_run
from tennis_exp.engine.rng import seed_everything
from tennis_exp.models.cnn_lstm import CNNLSTM, build_model
from tennis_exp.tracking.models import load_checkpoint, log_model
from tennis_exp.tracking.runs import (
    OVERRIDES_TAG,
    Run,
    config_params,
    ensure_experiment,
    mlflow_run,
    overrides_tag,
    tracking_uri,
)
from tennis_exp.tracking.sweep import job_parent

log = logging.getLogger(__name__)


def train(
    cfg: DictConfig,
    output_dir: Path,
    overrides: list[str] | None = None,
    sweep_dir: str | None = None,
) -> float | None:
    """Train, validate every epoch, test the best weights; return the best val macro-F1 (None
    for a dry run: no trial for a sweeper to score)."""
    validate(cfg)
    resume = None
    if cfg.resume:
        resume, cfg = resume_run(cfg, overrides)
        output_dir = resume.run_dir
        log_resume(resume, cfg)
    with distributed.joined(cfg) as dist, distributed.failures_shared(dist):
        plan = plan_run(cfg, dist.world_size if dist.active else None)
        if cfg.dry_run:
            show_plan(plan, None)
            log.info("Dry run: nothing trained")
            return None
        if dist.is_main:
            uri = tracking_uri(cfg)
            experiment_id = ensure_experiment(uri, cfg.experiment_name)  # a bad store fails first
            parent = job_parent(uri, experiment_id, sweep_dir) if sweep_dir else None
        datasets = prepare_data(cfg, dist)
        if dist.is_main:
            show_plan(plan, len(datasets["train"]))
        output_dir = Path(dist.broadcast(str(output_dir)))  # torchrun ranks share rank 0's dir
        weights = class_weights(cfg.training.class_weights, datasets["train"], cfg.data.events)
        job = Job(cfg, plan, output_dir, None, tracking_uri(cfg), weights)
        if not dist.is_main:
            return fit_and_test(job, dist, datasets, resume)
        with track(job, sweep_dir, parent, resume, overrides) as run:
            job = replace(job, run_id=run.run_id)
            if resume is None:
                log_run_inputs(run, job, overrides)
            elif cfg.training.epochs != resume.config["training"]["epochs"]:
                run.set_tag(EPOCHS_TAG, str(cfg.training.epochs))
            if plan.strategy is Strategy.ddp and not dist.active:
                worker_job = replace(job, resume_from=resume.path if resume else None)
                ranks_dir = output_dir / "ranks"
                return distributed.launch(run_worker, (worker_job,), plan.world_size, ranks_dir)
            return fit_and_test(job, dist, datasets, resume)


def log_resume(resume: Checkpoint, cfg: DictConfig) -> None:
    progress = resume.train_state.get("epoch_progress")
    planned = resume.config["training"]["epochs"]
    log.info(
        "Resuming %s after epoch %d%s%s",
        resume.run_dir,
        resume.train_state["epoch"],
        f" and {progress['batches_done']} batches of the next" if progress else "",
        f", now to epoch {cfg.training.epochs} (planned: {planned})"
        if cfg.training.epochs != planned
        else "",
    )


def show_plan(plan: RunPlan, train_size: int | None) -> None:
    for line in plan.banner(train_size):
        log.info(line)


def prepare_data(cfg: DictConfig, dist: Dist) -> dict[str, WindowDataset]:
    """The splits, generated and cached by each machine's first rank (nodes need not share a
    disk), then read by the others, which find them ready."""
    if not dist.is_node_main:
        dist.barrier()
    datasets = build_datasets(cfg.data, cfg.seed)
    if dist.is_node_main:
        dist.barrier()
    return datasets


def track(
    job: Job,
    sweep_dir: str | None,
    parent: str | None,
    resume: Checkpoint | None,
    overrides: list[str] | None,
):
    """The job's MLflow run: a new one (nested under its sweep's run `parent`), or the resumed
    one."""
    cfg, plan = job.cfg, job.plan
    job.output_dir.mkdir(parents=True, exist_ok=True)
    tags = {
        "hardware": plan.hardware,
        "strategy": plan.strategy.value,
        "output_dir": str(job.output_dir.resolve()),
        OVERRIDES_TAG: overrides_tag(overrides),
    }
    if plan.setup.fallback:
        tags["fallback"] = "cpu: no CUDA device was visible"
    if sweep_dir:
        tags["sweep_dir"] = str(Path(sweep_dir).resolve())
    system_metrics = cfg.tracking.system_metrics
    if system_metrics is None:
        system_metrics = plan.device.type == "cuda"
    return mlflow_run(
        job.tracking_uri,
        cfg.experiment_name,
        run_name(plan, cfg, overrides),
        tags,
        resume.mlflow_run_id if resume else None,
        parent,
        system_metrics,
        cfg.tracking.retry_s,
    )


def log_run_inputs(run: Run, job: Job, overrides: list[str] | None) -> None:
    """Params (the resolved config and what the run really uses); the config and overrides
    as files."""
    weights = {
        f"class_weight.{metric_name(event)}": weight
        for event, weight in zip(job.cfg.data.events, job.class_weights or [], strict=False)
    }
    run.log_params({**config_params(job.cfg), **job.plan.params(), **weights})
    for name, text in [
        ("resolved_config.yaml", OmegaConf.to_yaml(job.cfg, resolve=True)),
        ("overrides.yaml", OmegaConf.to_yaml(list(overrides or []))),
    ]:
        (job.output_dir / name).write_text(text)
        run.log_artifact(job.output_dir / name)


def run_name(plan: RunPlan, cfg: DictConfig, overrides: list[str] | None) -> str:
    """A sweep's job: its swept values and the hardware that ran (badminton_scratch@cpu); a
    run alone: e.g. gpu2-dp-bs64-lr2e-4 (cpu-... where a GPU profile fell back to the CPU)."""
    mantissa, exponent = f"{plan.scaling.learning_rate:.2e}".split("e")
    lr = f"{float(mantissa):g}e{int(exponent)}"
    setup = f"{plan.strategy.value}-bs{plan.scaling.effective_batch_size}-lr{lr}"
    values = jobnames.job_values(overrides or [], os.environ.get(jobnames.SWEPT_ENV))
    ran = "cpu" if plan.setup.fallback else plan.hardware
    return jobnames.run_name(values, jobnames.groups_in(cfg, values), ran, setup)


def fit_and_test(
    job: Job, dist: Dist, datasets: dict[str, WindowDataset] | None, resume: Checkpoint | None
) -> float:
    """One process's share of the run: the model, then fit and test; the best val macro-F1.
    A failure is shared with the other ranks here, inside the MLflow run that records it."""
    with distributed.failures_shared(dist):
        if datasets is None:
            datasets = build_datasets(job.cfg.data, job.cfg.seed)
        seed_everything(job.cfg.seed)  # the same initial model on every rank
        model = initial_model(job.cfg, resume)
        seed_everything(job.cfg.seed + dist.rank)  # each rank its own dropout and augmentation
        trainer = Trainer(job, dist, model, datasets, resume)
        trainer.fit()
        trainer.test()
        if trainer.run and job.cfg.tracking.log_model:  # the process that logs, once
            log_model(trainer.run, job.cfg, trainer.ckpt_dir / "best.pth", job.cfg.training.epochs)
        return trainer.state.best_f1


def initial_model(cfg: DictConfig, resume: Checkpoint | None) -> CNNLSTM:
    """The model with the weights it starts from: the resumed run's, `model.init_from`'s (a
    file or a model URI in the configured store), or the configured initial ones."""
    start = resume
    if start is None and cfg.model.init_from:
        start = load_checkpoint(cfg.model.init_from, tracking_uri(cfg))
    model = build_model(cfg.model, len(cfg.data.events), weights_follow=start is not None)
    if start is not None:
        checkpoint.load_weights(model, start)
        if resume is None:
            log.info("Initialised from %s", cfg.model.init_from)
    return model


@record  # writes the error file through which the elastic agent learns why this rank failed
def run_worker(job: Job) -> float:
    """One rank that `distributed.launch` started: join the group, then fit and test."""
    with distributed.joined(job.cfg) as dist:
        distributed.setup_rank_logging(dist, job.output_dir)
        resume = checkpoint.load(job.resume_from) if job.resume_from else None
        if not dist.is_main:
            return fit_and_test(job, dist, None, resume)
        # Rank 0 logs the epochs: what it held back is sent, or told, before its process ends.
        with Run.open(job.tracking_uri, job.run_id, job.cfg.tracking.retry_s):
            return fit_and_test(job, dist, None, resume)
