"""A sweep's jobs side by side on one machine (hydra/launcher=parallel): four real CPU jobs at
once writing to one SQLite store."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from ..helpers.commands import run_cli, smoke_args
from ..helpers.store import sqlite_uri, sweep_of


# Slow (~30 s): the fast suite's twins are the guide's four-job parallel sweep (test_docs)
# and the two parallel jobs through the lab server (test_server).
@pytest.mark.slow
def test_four_cpu_jobs_at_once_into_one_sqlite_store(tmp_path):
    # Data of their own, not the session's twin: the four jobs also race to generate it, and
    # the generator's lock makes one of them do it while the others wait.
    uri = sqlite_uri(tmp_path)
    sweep = tmp_path / "sweep"
    epochs = 2
    out = run_cli(
        [
            "--multirun",
            "hydra/launcher=parallel",
            "hydra.launcher.n_jobs=4",
            "hardware=cpu",
            *smoke_args(tmp_path / "data", tmp_path),
            f"training.epochs={epochs}",
            "training.learning_rate=1e-4,2e-4,3e-4,4e-4",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=4" in out.stdout + out.stderr
    client = MlflowClient(uri)
    parent, jobs = sweep_of(uri)
    runs = [parent, *jobs]
    assert len(jobs) == 4 and {r.data.tags["mlflow.parentRunId"] for r in jobs} == {
        parent.info.run_id
    }
    assert {r.info.status for r in runs} == {"FINISHED"}  # none left RUNNING
    # The four ran at once: each started before any of them ended.
    assert max(r.info.start_time for r in jobs) < min(r.info.end_time for r in jobs)
    # No metric lost: every epoch of every job, every key.
    for run in jobs:
        for key in ("train/loss", "val/macro_f1", "lr", "perf/epoch_time_s"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert sorted(steps) == list(range(1, epochs + 1)), (key, steps)
        assert "test/macro_f1" in run.data.metrics
    # The table's first column is what the sweep varied; the jobs' folders name it.
    table = (sweep / "comparison" / "comparison.csv").read_text().splitlines()
    assert table[0].startswith("training.learning_rate,")
    rates = sorted(float(line.split(",", 1)[0]) for line in table[1:])
    assert rates == [1e-4, 2e-4, 3e-4, 4e-4]
    assert sorted(p.name for p in sweep.iterdir() if p.name[0].isdigit()) == [
        f"{i}-learning_rate_0.000{i + 1}" for i in range(4)
    ]  # Hydra's sweeper hands each job its value as a plain float
