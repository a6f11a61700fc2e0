"""Killed with SIGTERM and resumed, mid-epoch too: the same MLflow run, the same numbers."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys

import pytest
import torch
from torch.utils.data import Dataset

from tennis_exp.engine import train as train_module

from ..helpers.commands import run_cli, smoke_args
from ..helpers.store import history, only_run, sqlite_uri

METRICS = ["train/loss", "train/acc", "val/loss", "val/macro_f1", "lr"]


def _args(tmp_path, store, run_dir):
    # Data of its own: the twin generated at data.image_size=48, not the session's (32).
    return [
        *smoke_args(tmp_path / "data", tmp_path, store=False),
        "hardware=cpu",
        "training.epochs=3",
        "training.max_batches=null",
        "training.batch_size=2",
        "data.image_size=48",
        f"tracking.uri={sqlite_uri(tmp_path, store)}",
        f"hydra.run.dir={tmp_path / run_dir}",
    ]


def _only_run(tmp_path, store):
    uri = sqlite_uri(tmp_path, store)
    run = only_run(uri)
    return run, history(uri, run, [*METRICS, "test/macro_f1", "test/loss"])


def test_sigterm_then_resume_matches_a_straight_run(tmp_path):
    straight = run_cli(_args(tmp_path, "a.db", "straight"), cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tennis_exp", *_args(tmp_path, "b.db", "interrupted")],
        cwd=tmp_path,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in proc.stdout:
        if "epoch 1/3" in line:
            proc.send_signal(signal.SIGTERM)  # a real kill, at the start of epoch 2
            break
    output = proc.stdout.read()
    assert proc.wait(timeout=120) != 0
    assert "Interrupted" in output
    killed, _ = _only_run(tmp_path, "b.db")
    assert killed.info.status == "KILLED"
    last = torch.load(tmp_path / "interrupted" / "checkpoints" / "last.pth", weights_only=True)
    assert last["epoch"] == 1  # epoch 1 complete; epoch 2 had barely started, if at all

    resumed = run_cli([f"resume={tmp_path / 'interrupted'}"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resuming {tmp_path / 'interrupted'} after epoch 1" in resumed.stdout

    run, history = _only_run(tmp_path, "b.db")
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert "error" not in run.data.tags
    _, expected = _only_run(tmp_path, "a.db")
    assert [step for step, _ in history["val/macro_f1"]] == [1, 2, 3]  # no epoch twice
    assert history == expected  # bit for bit, on the CPU with a fixed seed


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
    assert _only_run(tmp_path, "b.db")[0].info.status == "KILLED"
    if written_by == "the previous release":
        _as_the_previous_release_wrote_it(run_dir / "checkpoints" / "last.pth")

    resume = copy.deepcopy(smoke_cfg)
    resume.resume = str(run_dir)
    train_module.train(resume, tmp_path / "unused", overrides=[f"resume={run_dir}"])
    run, history = _only_run(tmp_path, "b.db")
    assert run.info.status == "FINISHED"
    assert history == _only_run(tmp_path, "a.db")[1]  # bit for bit


def test_resume_refuses_a_checkpoint_without_training_state(tmp_path):
    torch.save({"model_state_dict": {}}, tmp_path / "weights.pth")
    out = run_cli([f"resume={tmp_path / 'weights.pth'}"], cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"Error: resume={tmp_path / 'weights.pth'}: {tmp_path / 'weights.pth'} cannot be resumed "
        "(it lacks optimizer_state_dict, scheduler_state_dict, epoch, best_f1, global_step, "
        "rng_states, config, mlflow_run_id, mlflow_tracking_uri); start from its weights with "
        "model.init_from instead"
    ]
