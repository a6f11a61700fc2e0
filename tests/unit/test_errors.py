"""Failures mid-run: one clear line, the run marked, nothing lost."""

from __future__ import annotations

import pytest
import torch
from omegaconf import open_dict

from tennis_exp.cli import is_user_error, one_line
from tennis_exp.engine import checkpoint
from tennis_exp.engine import train as train_module
from tennis_exp.engine.devicepool import job_devices
from tennis_exp.errors import UserError, one_line_report

from ..helpers.commands import smoke_args
from ..helpers.configs import compose_config, fit_untracked
from ..helpers.mistakes import bad_override_params
from ..helpers.store import runs_of, sqlite_uri


@pytest.mark.parametrize(
    ("err", "report"),
    [
        (UserError("data.root is not set\nmore"), "data.root is not set"),
        (
            RuntimeError("  CUDA error: misaligned address\ntrace"),
            "RuntimeError: CUDA error: misaligned address",
        ),
        (KeyboardInterrupt(), "KeyboardInterrupt: KeyboardInterrupt"),
        (UserError(""), "UserError"),
    ],
)
def test_a_failure_is_reported_in_one_line(err, report):
    assert one_line_report(err) == report


class _OutOfMemory(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, frames):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_names_the_batch_and_the_fix(smoke_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "build_model", lambda *a, **k: _OutOfMemory())
    with pytest.raises(UserError) as err:
        fit_untracked(smoke_cfg, tmp_path / "run")
    message = str(err.value)
    assert "CUDA out of memory with 8 windows per device (training.batch_size=8" in message
    assert "lower training.batch_size" in message
    assert "hardware.batch_scaling=constant" in message


def test_full_disk_mid_run_keeps_the_last_good_checkpoint(smoke_cfg, tmp_path, monkeypatch):
    real_save, calls = torch.save, []

    def save_until_the_disk_fills(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) > 2:  # epoch 1 wrote best.pth and last.pth; then the disk is full
            raise OSError(28, "No space left on device")
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", save_until_the_disk_fills)
    smoke_cfg.training.epochs = 3
    with pytest.raises(UserError, match="no space left to write .*previous one is kept"):
        fit_untracked(smoke_cfg, tmp_path / "run")
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pth").train_state["epoch"] == 1
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] in (
        ["best.pth", "last.pth"],
        ["last.pth", "best.pth"],
    )


class _FullDiskClient:
    """A real MLflow client whose artifact store has no space left."""

    def __init__(self, client):
        self._client = client

    def __getattr__(self, name):
        return getattr(self._client, name)

    def log_artifact(self, *args):
        raise OSError(28, "No space left on device")


def test_full_disk_while_storing_an_artifact_fails_the_run_in_one_line(tmp_path):
    from tennis_exp.tracking.runs import mlflow_run

    uri = sqlite_uri(tmp_path)
    (tmp_path / "resolved_config.yaml").write_text("seed: 1\n")
    expected = "no space left to store resolved_config.yaml"
    with pytest.raises(UserError, match=expected), mlflow_run(uri, "e", "x", {}) as run:
        run.client = _FullDiskClient(run.client)
        run.log_artifact(tmp_path / "resolved_config.yaml")
    [failed] = runs_of(uri, "e")
    assert failed.info.status == "FAILED" and expected in failed.data.tags["error"]


@pytest.mark.parametrize(("override", "expected"), bad_override_params(slow_after_the_first=False))
def test_a_bad_override_is_one_user_error_line_before_any_run(
    tiny_twin, store, tmp_path, monkeypatch, override, expected
):
    # What the command does with its overrides, in-process: compose the job, give it its
    # devices, train; the mistake surfaces as an error the command reports in one line.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)  # CUDA_VISIBLE_DEVICES=""
    args = [] if override.startswith("data") else smoke_args(tiny_twin, tmp_path)
    overrides = [*args, f"tracking.uri={store}", *override.split()]
    with pytest.raises(Exception) as caught:
        cfg = compose_config(overrides, hydra=True)
        launcher = cfg.hydra.launcher
        with open_dict(cfg):
            del cfg["hydra"]
        with job_devices(cfg, None, launcher) as job_cfg:
            train_module.train(job_cfg, tmp_path / "run", overrides)
    assert is_user_error(caught.value), caught.value
    line = one_line(caught.value)
    assert expected in line and "\n" not in line
    assert runs_of(store) == []
