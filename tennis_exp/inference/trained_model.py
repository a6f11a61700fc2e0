"""A trained model as the commands that use one (evaluate, predict) load and run it: rebuilt
from its checkpoint, in one process, in an MLflow run nested under the run that trained it."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from tennis_exp.config import Config, Strategy, from_container, with_background
from tennis_exp.engine import checkpoint
from tennis_exp.engine.hardware import RunPlan, plan_run
from tennis_exp.models.cnn_lstm import CNNLSTM, build_model
from tennis_exp.tracking.models import load_checkpoint
from tennis_exp.tracking.runs import ensure_experiment, mlflow_run, tracking_uri


def trained_model(cfg: DictConfig) -> tuple[CNNLSTM, checkpoint.Checkpoint]:
    """The model in `cfg.checkpoint` (a file or a model URI in the configured store), rebuilt
    from the checkpoint's own config when it holds ours (else from cfg.model: the old script's
    files), with its weights; cfg.data.events becomes the model's classes, in its order."""
    ckpt = load_checkpoint(cfg.checkpoint, tracking_uri(cfg))
    trained = trained_config(ckpt)
    if trained is not None:
        cfg.data.events = list(trained.data.events)
        # A model with the background class reads (and its twin holds) the idle folder too.
        cfg.data.background = trained.data.background
        with_background(cfg.data)
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

    tags = {"tennis_exp.role": role, "checkpoint": ckpt.source or str(ckpt.path.resolve())}
    if not ckpt.mlflow_run_id:
        return tags, None
    tags["trained_by_run"] = ckpt.mlflow_run_id
    try:
        MlflowClient(uri).get_run(ckpt.mlflow_run_id)
    except MlflowException:
        return tags, None
    return tags, ckpt.mlflow_run_id


def one_process_plan(cfg: DictConfig) -> RunPlan:
    """One process: DataParallel over the profile's GPUs whatever its training strategy."""
    return replace(plan_run(cfg), strategy=Strategy.dp)


def checkpoint_run(cfg: DictConfig, ckpt: checkpoint.Checkpoint, role: str, name: str):
    """The MLflow run (a context manager) of a command that uses `ckpt` in `role`."""
    uri = tracking_uri(cfg)
    ensure_experiment(uri, cfg.experiment_name)
    tags, parent = lineage(uri, ckpt, role)
    return mlflow_run(uri, cfg.experiment_name, name, tags, parent_id=parent)
