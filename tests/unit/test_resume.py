"""Killed with SIGTERM and resumed, mid-epoch too: the same MLflow run, the same numbers."""

from __future__ import annotations

import copy
import os
import signal

import pytest
import torch
from torch.utils.data import Dataset

from tennis_exp.engine import train as train_module

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
