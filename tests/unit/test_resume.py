"""Killed with SIGTERM and resumed, mid-epoch too: the same MLflow run, the same numbers. What
may come with resume=: the allowed keys, the epochs a resumed run trains to, its config."""

from __future__ import annotations

import copy
import os
import signal
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import Dataset

from tennis_exp.engine import train as train_module
from tennis_exp.engine.checkpoint import Checkpoint
from tennis_exp.engine.resume import (
    RESUME_KEYS,
    ResumeCheck,
    allowed_keys,
    epochs_to_run,
    resumed_config,
)
from tennis_exp.errors import RefusedBeforeRun, UserError

from ..helpers.configs import compose_config
from ..helpers.store import CURVES, only_run_history, sqlite_uri


class _SigtermAt(Dataset):
    """Sends this process SIGTERM while the loader fetches its `at`-th window (no workers)."""

    def __init__(self, dataset, at: int):
        self.dataset, self.at, self.fetched = dataset, at, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        self.fetched += 1
        if self.fetched == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return self.dataset[i]


def _in_process(smoke_cfg, tmp_path, store):
    cfg = copy.deepcopy(smoke_cfg)
    cfg.training.epochs = 3
    cfg.training.max_batches = None
    cfg.training.batch_size = 2  # 36 steps an epoch
    cfg.tracking.uri = sqlite_uri(tmp_path, store)
    return cfg


def _as_the_previous_release_wrote_it(path):
    """The checkpoint with its plateau state as the previous release saved it: the state dict
    of torch's ReduceLROnPlateau (and no format change besides)."""
    payload = torch.load(path, weights_only=True)
    plateau, training = payload["scheduler_state_dict"], payload["config"]["training"]
    lr = training["learning_rate"] * plateau["scale"]  # hardware=cpu: the plan is the LR given
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    old = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=training["lr_factor"], patience=training["lr_patience"]
    )
    old.best, old.num_bad_epochs = plateau["best"], plateau["bad_epochs"]
    payload["scheduler_state_dict"] = old.state_dict()
    torch.save(payload, path)


@pytest.mark.parametrize("written_by", ["this release", "the previous release"])
def test_stopped_mid_epoch_resumes_at_the_same_step(smoke_cfg, tmp_path, monkeypatch, written_by):
    straight = _in_process(smoke_cfg, tmp_path, "a.db")
    train_module.train(straight, tmp_path / "straight")

    build = train_module.build_datasets
    at = 36 * 2 + 10 * 2 + 1  # the first window of epoch 2's 11th batch
    monkeypatch.setattr(
        train_module,
        "build_datasets",
        lambda *a: {**build(*a), "train": _SigtermAt(build(*a)["train"], at)},
    )
    run_dir = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt, match="stopped by SIGTERM"):
        train_module.train(_in_process(smoke_cfg, tmp_path, "b.db"), run_dir)
    monkeypatch.setattr(train_module, "build_datasets", build)
    last = torch.load(run_dir / "checkpoints" / "last.pth", weights_only=True)
    assert last["epoch"] == 1
    assert (last["epoch_progress"]["epoch"], last["epoch_progress"]["batches_done"]) == (2, 10)
    assert only_run_history(sqlite_uri(tmp_path, "b.db"), CURVES)[0].info.status == "KILLED"
    if written_by == "the previous release":
        _as_the_previous_release_wrote_it(run_dir / "checkpoints" / "last.pth")

    resume = copy.deepcopy(smoke_cfg)
    resume.resume = str(run_dir)
    train_module.train(resume, tmp_path / "unused", overrides=[f"resume={run_dir}"])
    run, history = only_run_history(sqlite_uri(tmp_path, "b.db"), CURVES)
    assert run.info.status == "FINISHED"
    assert history == only_run_history(sqlite_uri(tmp_path, "a.db"), CURVES)[1]  # bit for bit


ALLOWED = ", ".join(RESUME_KEYS)


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        ([], None),
        (["resume=runs/a"], None),
        (["resume=runs/a", "training.epochs=30"], None),
        (["training.num_workers=8", "training.prefetch_factor=2", "progress_bar=false"], None),
        (["tracking.uri=sqlite:///moved.db", "tracking.retry_s=60"], None),
        (["tracking.system_metrics=true", "tracking.log_checkpoint=false"], None),
        (["hardware.device_ids=[2,3]", "+training.epochs=3"], None),
        (["training.learning_rate=1"], "training.learning_rate"),
        (["training.epochs=3", "data.root=x", "seed=1"], "data.root, seed"),
        (["hardware=gpu2"], "hardware"),  # another profile: other scaling
        (["hardware.devices=2"], "hardware.devices"),
        (["debug=smoke"], "debug"),
        (["experiment_name=other"], "experiment_name"),
        (["training.batch_size=64"], "training.batch_size"),
    ],
)
def test_only_the_named_keys_may_come_with_resume(overrides, refused):
    if refused is None:
        assert set(allowed_keys("runs/a", overrides)) <= set(RESUME_KEYS)
        return
    with pytest.raises(UserError) as err:
        allowed_keys("runs/a", overrides)
    assert str(err.value) == (
        f"resume=runs/a continues the run as it was configured; {refused} cannot change on "
        f"resume (allowed: {ALLOWED})"
    )


@pytest.mark.parametrize(
    ("done", "planned", "requested", "expected"),
    [
        (3, 10, None, 10),  # interrupted: as planned
        (10, 10, None, 10),  # finished: scored on test again, nothing trained
        (10, 10, 10, 10),  # the planned number again: a plain resume
        (10, 10, 15, 15),  # a finished run extended
        (3, 10, 15, 15),  # an interrupted one extended
        (3, 10, 5, 5),  # an interrupted one ended sooner
        (0, 10, 1, 1),  # stopped inside its first epoch
        (10, 10, 8, "has done 10 epochs already"),
        (5, 10, 5, "has done 5 epochs already"),
        (5, 10, 0, "has done 5 epochs already"),
    ],
)
def test_the_epochs_a_resumed_run_trains_to(done, planned, requested, expected):
    if isinstance(expected, int):
        assert epochs_to_run(done, planned, requested) == expected
        return
    with pytest.raises(UserError, match=expected) as err:
        epochs_to_run(done, planned, requested)
    assert str(err.value) == (
        f"training.epochs={requested}: the run to resume has done {done} epochs already; give "
        "more to extend it, or leave training.epochs out to resume it as planned "
        f"({planned} epochs)"
    )


def _saved_run(epochs_done: int) -> Checkpoint:
    saved = compose_config(["debug=smoke", "hardware=cpu", "training.learning_rate=3e-4"])
    container = OmegaConf.to_container(saved, resolve=True, enum_to_str=True)
    return Checkpoint(
        {},
        container,
        {"epoch": epochs_done},
        "run-id",
        "sqlite:////runs/mlflow.db",
        Path("/runs/a/checkpoints/last.pth"),
    )


@pytest.mark.parametrize("env_uri", [None, "http://lab:5000"])
def test_a_resumed_run_keeps_its_config_but_the_allowed_keys(env_uri, monkeypatch):
    if env_uri:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", env_uri)
    else:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    overrides = ["resume=/runs/a", "training.epochs=4", "training.num_workers=6"]
    typed = compose_config(overrides)  # the command's config: the defaults, not the run's
    cfg = resumed_config(_saved_run(1), typed, allowed_keys("/runs/a", overrides))
    assert (cfg.training.epochs, cfg.training.num_workers) == (4, 6)
    assert (cfg.training.learning_rate, cfg.hardware.name) == (3e-4, "cpu")  # the run's
    assert cfg.data.image_size == 32 and cfg.resume == "/runs/a/checkpoints/last.pth"
    assert cfg.tracking.uri == (None if env_uri else "sqlite:////runs/mlflow.db")

    overrides = ["resume=/runs/a", "tracking.uri=sqlite:////moved/mlflow.db"]
    typed = compose_config(overrides)
    cfg = resumed_config(_saved_run(1), typed, allowed_keys("/runs/a", overrides))
    assert cfg.tracking.uri == "sqlite:////moved/mlflow.db" and cfg.training.epochs == 1


def test_a_refused_resume_stops_before_hydra_writes_the_job_folder(tmp_path):
    # The callback runs before Hydra makes the job's folder; Hydra would turn an Exception into
    # a warning and go on, so the refusal is a RefusedBeforeRun. The keys are checked first:
    # the run need not even exist.
    config = compose_config([f"resume={tmp_path}", "training.learning_rate=1"], hydra=True)
    with pytest.raises(RefusedBeforeRun, match="training.learning_rate cannot change"):
        ResumeCheck().on_run_start(config=config)
    ResumeCheck().on_run_start(config=compose_config([], hydra=True))  # no resume: nothing
