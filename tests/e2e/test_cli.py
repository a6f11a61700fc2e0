"""The command line as users type it, in subprocesses, against a real MLflow store."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from mlflow.tracking import MlflowClient

from tennis_exp.engine.checkpoint import load_weights
from tennis_exp.models.cnn_lstm import build_model

from ..helpers.commands import run_cli, run_sweep, smoke_args
from ..helpers.configs import compose_config
from ..helpers.frame_trees import make_tree
from ..helpers.mistakes import bad_override_params
from ..helpers.store import runs_of, sqlite_uri, sweep_of


def test_smoke_run_is_tracked_in_mlflow(tiny_twin, tmp_path):
    out = run_cli(
        smoke_args(tiny_twin, tmp_path, f"hydra.run.dir={tmp_path / 'run'}"), cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    log = out.stdout + out.stderr
    # gpu1 is the default profile; without CUDA it falls back to the CPU and says so.
    assert "falling back to the CPU" in log
    assert "Using device: cpu" in log
    assert "Train set: " in log and "Effective batch size: 8" in log

    client = MlflowClient(sqlite_uri(tmp_path))
    [run] = runs_of(sqlite_uri(tmp_path))
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "cpu-dp-bs8-lr1e-4"  # what ran, not the profile's gpu1
    params = run.data.params
    assert params["training.batch_size"] == "8"
    assert params["hardware.name"] == "gpu1"
    assert params["scaling.devices"] == "1"
    assert params["scaling.per_device_batch_size"] == "8"
    assert params["scaling.effective_batch_size"] == "8"
    assert float(params["scaling.learning_rate"]) == pytest.approx(1e-4)
    # What ran, beside what was asked: gpu1 fell back to the CPU, in fp32.
    assert params["hardware.accelerator"] == "cuda" and params["hardware.precision"] == "auto"
    assert (params["run.device"], params["run.device_ids"], params["run.precision"]) == (
        "cpu",
        "none",
        "fp32",
    )
    metrics = run.data.metrics
    for key in [
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "val/macro_f1",
        "val/macro_precision",
        "val/macro_recall",
        "val/f1_net_play",
        "lr",
        "perf/samples_per_sec",
        "perf/epoch_time_s",
        "test/acc",
        "test/macro_f1",
    ]:
        assert key in metrics, key
    assert 0 <= metrics["val/macro_f1"] <= 1
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/macro_f1")] == [1]
    tags = run.data.tags
    assert tags["hardware"] == "gpu1" and tags["strategy"] == "dp"
    assert "sweep_dir" not in tags
    assert tags["fallback"].startswith("cpu")
    assert len(tags["mlflow.source.git.commit"]) == 40

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {
        "resolved_config.yaml",
        "overrides.yaml",
        "confusion_matrix.png",
        "checkpoints",
    } <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == [
        "checkpoints/best.pth"
    ]

    # The checkpoint holds the unwrapped model, in the users' format, and loads into a new one.
    ckpt = tmp_path / "run" / "checkpoints" / "best.pth"
    payload = torch.load(ckpt, weights_only=True)
    assert {"model_state_dict", "optimizer_state_dict", "epoch", "best_f1", "config"} <= set(
        payload
    )
    assert not any(k.startswith("module.") for k in payload["model_state_dict"])
    model = build_model(compose_config(["debug=smoke"]).model, num_classes=4)
    load_weights(model, ckpt)


def _sweep(tmp_path):
    """(parent run, its child runs) of the only sweep in the store."""
    parent, others = sweep_of(sqlite_uri(tmp_path))
    children = [r for r in others if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(others)  # every job is nested under the sweep
    return MlflowClient(sqlite_uri(tmp_path)), parent, children


def test_multirun_of_two_cpu_jobs(tiny_twin, store, tmp_path):
    sweep = tmp_path / "sweep"
    out = run_sweep(["hardware=cpu,gpu1", *smoke_args(tiny_twin, tmp_path)], sweep, tmp_path)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == [
        "0-cpu",
        "1-gpu1",
        "comparison",
    ]
    assert (sweep / "0-cpu" / "checkpoints" / "best.pth").is_file()
    client, parent, runs = _sweep(tmp_path)
    assert sorted(r.data.tags["hardware"] for r in runs) == ["cpu", "gpu1"]
    # Each run named by its swept profile, and the CPU that gpu1 fell back to.
    assert sorted(r.info.run_name for r in runs) == ["cpu", "gpu1@cpu"]
    assert {r.info.status for r in runs} == {"FINISHED"} == {parent.info.status}
    assert {r.data.tags["sweep_dir"] for r in runs} == {str(sweep)}

    # The comparison table: printed, and logged to the parent run with its plots.
    assert "speed-up" in out.stdout and "1.00x" in out.stdout
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert artifacts == {
        "comparison.md", "comparison.csv", "speedup.png", "val_macro_f1.png", "confusions.png"
    }  # fmt: skip
    table = (sweep / "comparison" / "comparison.csv").read_text().splitlines()
    assert table[0].startswith("hardware,best_val_macro_f1,test_macro_f1,")  # the swept key first
    assert (
        ",run,status,devices,strategy,per_device_batch,effective_batch,device,learning_rate,"
        "samples_per_sec,speedup,efficiency,epoch_time_s," in table[0]
    )
    assert len(table) == 3

    # ... and again on demand, from the store alone.
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "tennis_exp.compare",
            "--sweep-dir",
            str(sweep),
            "--tracking-uri",
            sqlite_uri(tmp_path),
            "--out",
            str(tmp_path / "again"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.split()[:2] == ["hardware", "best"]
    assert "gpu1@cpu" in again.stdout and "speed-up" in again.stdout
    assert (tmp_path / "again" / "comparison.csv").read_text() == "\n".join(table) + "\n"


def test_smoke_runs_tiny_on_the_data_it_was_given(tmp_path):
    layout = {
        split: {"smash": [16] * 10, "forehand_volley": [16], "backhand": [24], "flat_service": [16]}
        for split in ("train", "val", "test")
    }
    frames = make_tree(tmp_path / "frames", layout)
    out = run_cli(
        [
            "data=thetis",
            f"data.root={frames}",
            "debug=smoke",
            "hardware=cpu",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"tracking.uri={sqlite_uri(tmp_path)}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # 8 of the 10 smash videos (debug=smoke's data.max_videos_per_action), 1 window each, and
    # 1 + 2 + 1 from the other actions; nothing generated.
    assert "Train set: 12 samples" in out.stdout
    assert not (tmp_path / "data").exists() and not (frames / ".synthetic.json").exists()


def test_system_metrics_are_logged_when_asked(tiny_twin, store, tmp_path):
    out = run_cli(
        smoke_args(
            tiny_twin,
            tmp_path,
            "hardware=cpu",
            "tracking.system_metrics=true",
            "training.epochs=4",
            "training.max_batches=null",
            f"hydra.run.dir={tmp_path / 'run'}",
        ),
        cwd=tmp_path,
        env={"MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1"},
    )
    assert out.returncode == 0, out.stderr
    [run] = runs_of(sqlite_uri(tmp_path))
    assert "system/cpu_utilization_percentage" in run.data.metrics
    assert "system/system_memory_usage_megabytes" in run.data.metrics


def test_runs_started_at_the_same_moment_get_their_own_directories(tmp_path):
    args = [sys.executable, "-m", "tennis_exp", "hardware=gpu4", "dry_run=true"]
    procs = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    dirs = list((tmp_path / "outputs").glob("*/*"))
    assert len(dirs) == 2 and all((d / ".hydra" / "config.yaml").is_file() for d in dirs)


def test_sweep_goes_on_past_a_failed_job(tiny_twin, store, tmp_path):
    # No GPU here: the gpu2 job fails, the cpu job after it still runs.
    out = run_sweep(
        ["hardware=gpu2,cpu", *smoke_args(tiny_twin, tmp_path)], tmp_path / "sweep", tmp_path
    )
    assert out.returncode == 1
    assert "job 0 (hardware=gpu2" in out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    _, parent, runs = _sweep(tmp_path)
    assert sorted((r.data.tags["hardware"], r.info.status) for r in runs) == [
        ("cpu", "FINISHED"),
        ("gpu2", "FAILED"),
    ]
    failed = next(r for r in runs if r.info.status == "FAILED")
    assert "needs 2 CUDA device(s)" in failed.data.tags["error"]
    assert parent.info.status == "FAILED"
    csv = (tmp_path / "sweep" / "comparison" / "comparison.csv").read_text()
    assert "gpu2-failed,FAILED,2,dp" in csv  # a failed row, not a dropped one
    assert out.stderr.strip().splitlines()[-1].startswith("Error: hardware=gpu2 needs 2 CUDA")


def test_a_swept_preset_in_another_experiment_is_refused_in_one_line(store, tmp_path):
    # badminton_scratch sets experiment_name=badminton_transfer; swept beside another preset,
    # the sweep's run is in the command's experiment (tennis_4event), which could not nest or
    # report its job. tennis_baseline's job, in tennis_4event, runs.
    out = run_sweep(
        ["experiment=badminton_scratch,tennis_baseline", "model=small_cnn",
         "data=synthetic_badminton", *smoke_args(tmp_path / "data", tmp_path)],
        tmp_path / "sweep", tmp_path,
    )  # fmt: skip
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        "Error: this job logs to experiment 'badminton_transfer' but its sweep's run is in "
        "'tennis_4event', which would neither nest nor report it: pass "
        "experiment_name=badminton_transfer on the command line"
    )
    # The refused job's FAILED run is in the sweep's experiment, nested, so its table shows it.
    _, parent, runs = _sweep(tmp_path)
    assert parent.info.status == "FAILED"
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]
    assert runs_of(sqlite_uri(tmp_path), "badminton_transfer") == []


def test_dry_run_plans_a_four_gpu_job_on_a_laptop(tmp_path):
    out = run_cli(
        [
            "hardware=gpu4",
            "dry_run=true",
            f"tracking.uri={sqlite_uri(tmp_path)}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    for line in [
        "Using device: cuda",
        "Using 4 GPUs for training!",
        "GPU IDs: [0, 1, 2, 3]",
        "Per-device batch size: 32",
        "Effective batch size: 128",
        "Learning rate: 0.0004 (linear: 0.0001 x (128/32)^1)",
    ]:
        assert line in out.stdout
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "data").exists()


# Each kind of mistake once here; every one of them in-process in unit/test_errors.py.
@pytest.mark.parametrize(("override", "expected"), bad_override_params(slow_after_the_first=True))
def test_bad_input_gives_one_line_and_leaves_no_run(tiny_twin, store, tmp_path, override, expected):
    # The real-data cases run without debug=smoke, which points data.root at synthetic data.
    args = (
        [f"tracking.uri={sqlite_uri(tmp_path)}"]
        if override.startswith("data")
        else smoke_args(tiny_twin, tmp_path)
    )
    out = run_cli(
        [*args, *override.split(), f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        env={"CUDA_VISIBLE_DEVICES": ""},
    )
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("Error: ") and expected in lines[0]
    assert runs_of(sqlite_uri(tmp_path)) == []
