"""hparams_search=tennis_optuna: Optuna's sampler over the sweep's jobs, each a nested MLflow
run; failed and diverged trials are told to the sampler as failed and the search goes on; the
study is stored, so a killed search continues with the same command."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from sqlalchemy.exc import SQLAlchemyError

from ..helpers.commands import run_cli, smoke_args
from ..helpers.configs import CONF, compose_config
from ..helpers.store import sqlite_uri, sweep_of

PRESET = CONF / "hparams_search" / "tennis_optuna.yaml"
SEARCHED = [
    "training.learning_rate",
    "training.batch_size",
    "model.dropout",
    "model.lstm_hidden",
    "training.class_weights",
]


def _compose(*overrides):
    return compose_config(["hparams_search=tennis_optuna", *overrides], hydra=True)


def test_the_preset_searches_lr_batch_dropout_lstm_and_class_weights(monkeypatch):
    sweeper = _compose().hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.tennis_exp_search.sweeper.OptunaSearch"
    assert sweeper.direction == "maximize" and sweeper.max_failure_rate == 1.0
    assert sweeper.storage is None  # optuna.db in the sweep's folder, which has no timestamp
    assert _compose().hydra.sweep.dir == "multirun_outputs/search/tennis_4event"
    assert _compose("hydra.sweep.dir=mine").hydra.sweep.dir == "mine"
    assert list(sweeper.params) == SEARCHED
    assert sweeper.params["training.class_weights"] == "choice(none, balanced)"
    assert sweeper.n_jobs == 1  # one trial at a time when the jobs run one after the other
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert _compose("hydra/launcher=parallel").hydra.sweeper.n_jobs == 4  # one per GPU


def _search(data, tmp_path, *overrides):
    return run_cli(
        [
            "--multirun",
            "hparams_search=tennis_optuna",
            "hardware=cpu",
            *smoke_args(data, tmp_path),
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            *overrides,
        ],
        cwd=tmp_path,
    )


def _runs(tmp_path):
    return MlflowClient(sqlite_uri(tmp_path)), *sweep_of(sqlite_uri(tmp_path))


def test_a_search_goes_on_past_diverged_trials_and_logs_its_best(tiny_twin, store, tmp_path):
    # Half the learning rates diverge (loss nan): those trials fail, the others are scored.
    out = _search(
        tiny_twin,
        tmp_path,
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_trials=4",
        "training.learning_rate=choice(1e-4,1e30)",
        "training.grad_clip=null",
    )
    log = out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    client, parent, trials = _runs(tmp_path)
    assert len(trials) == 4  # the search went on past its failed trials
    by_status = {
        status: [t for t in trials if t.info.status == status] for status in ("FINISHED", "FAILED")
    }
    assert len(by_status["FINISHED"]) + len(by_status["FAILED"]) == 4
    assert by_status["FINISHED"] and by_status["FAILED"], "the seed should draw both rates"
    for trial in by_status["FAILED"]:
        assert trial.data.params["training.learning_rate"] == "1e+30"
        assert "training loss became nan" in trial.data.tags["error"]
    # told to Optuna as failed, with the job's error
    assert len(re.findall(r"Trial \d+ failed: training loss became nan", log)) == len(
        by_status["FAILED"]
    )
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("Error: ")

    # The best trial: a finished one with the best val macro-F1 (ties are likely on tiny data),
    # printed, and logged to the sweep's run with its values of the searched keys.
    top = max(_best_f1(client, t) for t in by_status["FINISHED"])
    [best] = [t for t in trials if t.info.run_id == parent.data.tags["best_run_id"]]
    assert best.info.status == "FINISHED" and _best_f1(client, best) == pytest.approx(top)
    assert f"Best job: {best.info.run_name} (run {best.info.run_id})" in log
    assert parent.data.metrics["best/val_macro_f1"] == pytest.approx(top)
    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(top)  # Optuna agrees
    given = dict(o.split("=", 1) for o in json.loads(best.data.tags["overrides"]))
    assert parent.data.params["best.training.learning_rate"] == "0.0001"
    for key in SEARCHED:
        assert parent.data.params[f"best.{key}"] == given[key]
    assert {"optimization_results.yaml", "comparison.csv"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)
    }
    header = (tmp_path / "sweep" / "comparison" / "comparison.csv").read_text().splitlines()[0]
    assert header.startswith(",".join([*SEARCHED, "best_val_macro_f1"]))  # searched keys first
    # Optuna's plots of the study, in the sweep's folder and on its run
    plots = {p.name for p in (tmp_path / "sweep" / "optuna").glob("*.png")}
    assert {"optimization_history.png", "parallel_coordinate.png", "slice.png"} <= plots
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "optuna")}
    assert logged == {f"optuna/{name}" for name in plots}


def _best_f1(client, run) -> float:
    return max(m.value for m in client.get_metric_history(run.info.run_id, "val/macro_f1"))


def test_a_search_whose_trials_all_fail_ends_in_one_line(tiny_twin, store, tmp_path):
    out = _search(
        tiny_twin,
        tmp_path,
        "hydra.sweeper.n_trials=2",
        "training.learning_rate=choice(1e30)",
        "training.grad_clip=null",
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    [line] = [line for line in out.stderr.splitlines() if line.startswith("Error: ")]
    assert line.startswith("Error: 2 jobs failed; the first: training loss became nan")
    _, parent, trials = _runs(tmp_path)
    assert [t.info.status for t in trials] == ["FAILED", "FAILED"]
    assert parent.info.status == "FAILED"  # closed, not left RUNNING


def test_an_unreachable_study_storage_ends_in_one_line(tiny_twin, store, tmp_path):
    url = "postgresql://search@127.0.0.1:1/optuna"  # nothing listens on port 1
    out = _search(tiny_twin, tmp_path, f"hydra.sweeper.storage={url}")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    [line] = [line for line in out.stderr.splitlines() if line.startswith("Error: ")]
    assert line.startswith(
        f"Error: cannot open the search's study storage hydra.sweeper.storage={url}"
    )
    parent, trials = sweep_of(sqlite_uri(tmp_path))
    assert parent.info.status == "FAILED" and trials == []  # closed, not left RUNNING
    assert not (tmp_path / "sweep").exists()  # nothing half-written


@pytest.mark.slow
def test_a_killed_search_continues_with_the_same_command(tiny_twin, store, tmp_path):
    # Killed (the whole process group, as a cluster's time limit does) after its second
    # trial, the same command ends the study with exactly n_trials finished trials.
    args = ["--multirun", "hparams_search=tennis_optuna", "hardware=cpu",
            *smoke_args(tiny_twin, tmp_path), "hydra.sweeper.n_trials=4"]  # fmt: skip
    first = subprocess.Popen(
        [sys.executable, "-m", "tennis_exp", *args],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    sweep = tmp_path / "multirun_outputs" / "search" / "tennis_4event"  # the preset's folder
    url = f"sqlite:///{sweep / 'optuna.db'}"
    try:
        deadline = time.monotonic() + 240
        while _finished(url) < 2:
            assert first.poll() is None, "the search ended before it was killed"
            assert time.monotonic() < deadline, "no 2 finished trials in time"
            time.sleep(0.5)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()

    out = run_cli(args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    trials = optuna.load_study(study_name="tennis_4event", storage=url).trials
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == 4  # the two before the kill count, none ran twice
    assert set(states) <= {"COMPLETE", "FAIL"}  # no trial left RUNNING
    assert all("error" not in t.user_attrs for t in trials if t.state.name == "FAIL")
    assert (sweep / "comparison" / "comparison.csv").is_file()
    assert (sweep / "optimization_results.yaml").is_file()
    plots = {p.name for p in (sweep / "optuna").glob("*.png")}
    assert plots == {"optimization_history.png", "param_importances.png",
                     "parallel_coordinate.png", "slice.png"}  # fmt: skip


def _finished(url: str) -> int:
    """The COMPLETE trials of the study at `url` (0 while it does not exist yet)."""
    if not Path(url.removeprefix("sqlite:///")).exists():
        return 0
    try:
        study = optuna.load_study(study_name="tennis_4event", storage=url)
    except (KeyError, SQLAlchemyError):  # the search is creating the study
        return 0
    return sum(t.state.name == "COMPLETE" for t in study.trials)


@pytest.mark.slow
def test_a_search_on_slurms_launcher(tiny_twin, store, tmp_path):
    # submitit's local executor stands in for SLURM: each trial a job in a process of its own,
    # two at a time; its value comes back through submitit's pickled result.
    out = _search(
        tiny_twin,
        tmp_path,
        "hydra/launcher=submitit_local",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=2",
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    _, parent, trials = _runs(tmp_path)
    assert len(trials) == 2 and {t.info.status for t in trials} == {"FINISHED"}
    assert parent.data.tags["best_run_id"] in {t.info.run_id for t in trials}
    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {k for k in SEARCHED if k in _searched_here(tmp_path)}


def _searched_here(tmp_path) -> set[str]:
    """The keys of the preset the search ran with."""
    preset = tmp_path / "conf" / "hparams_search" / "here.yaml"
    return set(
        yaml.safe_load((preset if preset.exists() else PRESET).read_text())["hydra"]["sweeper"][
            "params"
        ]
    )
