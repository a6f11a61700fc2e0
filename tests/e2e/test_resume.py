"""A run killed with SIGTERM and resumed, as users do it: the same MLflow run, the same numbers;
a finished run extended by more epochs; a checkpoint that cannot be resumed, or a resume that
would change the run, is one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from tennis_exp.engine.resume import RESUME_KEYS

from ..helpers.commands import run_cli, smoke_args
from ..helpers.store import CURVES, only_run, only_run_history, sqlite_uri


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


# A real SIGTERM to the command, 44 s on a quiet 2-core machine. In the fast suite the same
# stop-and-resume is checked bit for bit in-process (unit/test_resume.py), and the command's
# resume= by the extended run below.
@pytest.mark.slow
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
    killed, _ = only_run_history(sqlite_uri(tmp_path, "b.db"), CURVES)
    assert killed.info.status == "KILLED"
    last = torch.load(tmp_path / "interrupted" / "checkpoints" / "last.pth", weights_only=True)
    assert last["epoch"] == 1  # epoch 1 complete; epoch 2 had barely started, if at all

    resumed = run_cli([f"resume={tmp_path / 'interrupted'}"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resuming {tmp_path / 'interrupted'} after epoch 1" in resumed.stdout

    run, history = only_run_history(sqlite_uri(tmp_path, "b.db"), CURVES)
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert "error" not in run.data.tags
    _, expected = only_run_history(sqlite_uri(tmp_path, "a.db"), CURVES)
    assert [step for step, _ in history["val/macro_f1"]] == [1, 2, 3]  # no epoch twice
    assert history == expected  # bit for bit, on the CPU with a fixed seed


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


def _files(folder):
    """Every file under `folder` with its size and modification time."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_a_finished_run_is_extended_and_a_changed_key_refused(tiny_twin, store, tmp_path):
    run_dir = tmp_path / "run"
    first = run_cli(
        smoke_args(tiny_twin, tmp_path, "hardware=cpu", f"hydra.run.dir={run_dir}"), cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr
    finished = only_run(store)
    assert finished.info.status == "FINISHED"

    elsewhere = tmp_path / "elsewhere"  # resumed from another folder, as after a reboot
    elsewhere.mkdir()
    extended = run_cli([f"resume={run_dir}", "training.epochs=2"], cwd=elsewhere)
    assert extended.returncode == 0, extended.stderr
    assert f"Resuming {run_dir} after epoch 1, now to epoch 2 (planned: 1)" in extended.stdout
    run, history = only_run_history(store, CURVES)
    assert run.info.run_id == finished.info.run_id and run.info.status == "FINISHED"
    for key in ("train/loss", "val/macro_f1", "lr"):
        assert [step for step, _ in history[key]] == [1, 2], key  # each epoch once
    assert [step for step, _ in history["test/macro_f1"]] == [1, 2]  # scored again
    assert run.data.params["training.epochs"] == "1" and run.data.tags["training.epochs"] == "2"
    last = torch.load(run_dir / "checkpoints" / "last.pth", weights_only=True)
    assert (last["epoch"], last["config"]["training"]["epochs"]) == (2, 2)

    nowhere = tmp_path / "nowhere"
    nowhere.mkdir()
    before = _files(tmp_path)  # the run folder, the store, the frame cache, nowhere
    refused = run_cli(
        [f"resume={run_dir}", "training.epochs=3", "training.learning_rate=1"], cwd=nowhere
    )
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"Error: resume={run_dir} continues the run as it was configured; "
        f"training.learning_rate cannot change on resume (allowed: {', '.join(RESUME_KEYS)})"
    ]
    assert not any(nowhere.iterdir())  # no job folder, no store
    assert _files(tmp_path) == before  # nothing written, not even a modification time
    after = only_run(store)
    assert (after.info.status, after.info.end_time) == (run.info.status, run.info.end_time)
