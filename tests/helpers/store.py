"""What runs left in an MLflow store."""

from __future__ import annotations

import shutil
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

EXPERIMENT = "tennis_4event"
# What a run logs per epoch, and its test scores: a resumed run must log them bit for bit.
CURVES = [
    "train/loss",
    "train/acc",
    "train/macro_f1",
    "val/loss",
    "val/macro_f1",
    "lr",
    "test/macro_f1",
    "test/loss",
]


def sqlite_uri(folder: Path, name: str = "mlflow.db") -> str:
    """The tracking URI of a SQLite store file in `folder`."""
    return f"sqlite:///{folder / name}"


def copy_store(template: Path, folder: Path, name: str = "mlflow.db") -> str:
    """The URI of an empty store in `folder`, copied from `template` (a store whose schema
    MLflow has made): a new store spends seconds on its schema migrations."""
    shutil.copyfile(template, folder / name)
    return sqlite_uri(folder, name)


def runs_of(uri: str, experiment: str = EXPERIMENT) -> list[Run]:
    """Every run of `experiment` in the store at `uri`; none when the experiment is not there."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


def only_run(uri: str, experiment: str = EXPERIMENT) -> Run:
    """The one run of `experiment` in the store at `uri`."""
    [run] = runs_of(uri, experiment)
    return run


def sweep_of(uri: str, experiment: str = EXPERIMENT) -> tuple[Run, list[Run]]:
    """(the sweep's own run, every other run) of the only sweep in the store at `uri`."""
    runs = runs_of(uri, experiment)
    [parent] = [r for r in runs if r.data.tags.get("tennis_exp.role") == "sweep"]
    return parent, [r for r in runs if r is not parent]


def jobs_of(uri: str, experiment: str = EXPERIMENT) -> list[Run]:
    """The runs of a sweep's jobs: those nested under another run."""
    return [r for r in runs_of(uri, experiment) if "mlflow.parentRunId" in r.data.tags]


def history(uri: str, run: Run, keys: list[str]) -> dict[str, list[tuple[int, float]]]:
    """(step, value) of every logged value of each metric in `keys`, in logging order."""
    client = MlflowClient(uri)
    return {
        key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
        for key in keys
    }


def only_run_history(uri: str, keys: list[str]) -> tuple[Run, dict[str, list[tuple[int, float]]]]:
    """The one run of the store at `uri` and the history of each metric in `keys`."""
    run = only_run(uri)
    return run, history(uri, run, keys)
