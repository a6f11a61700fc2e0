"""`python -m tennis_exp.evaluate`: any checkpoint on any split or folder, the same numbers as
the training run's test step, the users' report, its error gallery, and more; one line for
every mistake."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from tennis_exp.inference.split_report import GALLERY_WINDOWS

from ..helpers.commands import run_cli, smoke_args
from ..helpers.store import copy_store, runs_of, sqlite_uri


def run_evaluate(args, cwd, timeout=300):
    return run_cli(args, cwd, timeout=timeout, module="tennis_exp.evaluate")


@pytest.fixture(scope="module")
def trained(tiny_twin, empty_store, tmp_path_factory):
    """A smoke run over the whole splits (its test step scores every test window)."""
    root = tmp_path_factory.mktemp("trained")
    copy_store(empty_store, root)
    out = run_cli(
        [*_data_args(tiny_twin, root), "training.max_batches=null",
         f"hydra.run.dir={root / 'run'}"],
        cwd=root,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return root


def _data_args(data, root):
    return smoke_args(data, root, "hardware=cpu")


def _runs(root):
    return MlflowClient(sqlite_uri(root)), runs_of(sqlite_uri(root))


def test_the_evaluation_is_the_training_runs_test_step(tiny_twin, trained, tmp_path):
    best = trained / "run" / "checkpoints" / "best.pth"
    out = run_evaluate(
        [
            *_data_args(tiny_twin, trained),
            f"checkpoint={best}",
            f"hydra.run.dir={tmp_path / 'eval'}",
        ],
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "precision    recall  f1-score   support" in out.stdout
    assert "video accuracy (vote)" in out.stdout

    client, runs = _runs(trained)
    [training] = [r for r in runs if "tennis_exp.role" not in r.data.tags]
    [evaluation] = [r for r in runs if r.data.tags.get("tennis_exp.role") == "evaluation"]
    assert evaluation.info.status == "FINISHED"
    assert evaluation.data.tags["mlflow.parentRunId"] == training.info.run_id  # linked
    trained_metrics, scored = training.data.metrics, evaluation.data.metrics
    for key in ("test/acc", "test/macro_f1", "test/loss", "test/recall_rally"):
        assert scored[key] == pytest.approx(trained_metrics[key], rel=1e-6), key
    assert "test/precision_smash" in trained_metrics  # the training run's test step has them

    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    with open(tmp_path / "eval" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == report["windows"] and report["videos"] <= len(rows)
    assert set(rows[0]) == {"video", "first_frame", "true", "predicted", "p_Smash",
                            "p_Net Play", "p_Rally", "p_Serve"}  # fmt: skip
    correct = sum(r["true"] == r["predicted"] for r in rows)
    assert correct / len(rows) == pytest.approx(report["acc"])
    assert all(abs(sum(float(r[f"p_{e}"]) for e in ("Smash", "Net Play", "Rally", "Serve")) - 1)
               < 1e-4 for r in rows)  # fmt: skip
    assert 0 <= report["video_acc"] <= 1
    artifacts = {a.path for a in client.list_artifacts(evaluation.info.run_id)}
    assert {"report.txt", "report.json", "predictions.csv", "confusion_matrix.png"} <= artifacts
    _check_gallery(rows, tmp_path / "eval" / "errors", client, evaluation.info.run_id)
    # The training run's own pictures and numbers: its curves and its test confusion counts.
    counts = json.loads((trained / "run" / "confusion_matrix.json").read_text())["counts"]
    assert sum(map(sum, counts)) == len(rows) and sum(counts[i][i] for i in range(4)) == correct
    assert Image.open(trained / "run" / "curves.png").size == (1300, 380)
    logged = {a.path for a in client.list_artifacts(training.info.run_id)}
    assert {"curves.png", "confusion_matrix.json", "confusion_matrix.png"} <= logged


def _check_gallery(rows, folder, client, run_id):
    """A picture per confused pair of predictions.csv, a strip per window shown (at most
    GALLERY_WINDOWS), in the folder and the evaluation's MLflow run."""
    pairs = {}
    for row in rows:
        if row["true"] != row["predicted"]:
            pair = f"{row['true']}_as_{row['predicted']}".lower().replace(" ", "_")
            pairs[pair] = pairs.get(pair, 0) + 1
    assert pairs, "the smoke model gets some window wrong"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{p}.png" for p in pairs)
    for pair, wrong in pairs.items():
        strips = min(wrong, GALLERY_WINDOWS)
        assert Image.open(folder / f"{pair}.png").size == (960, round(190 * strips + 40)), pair
    logged = {a.path for a in client.list_artifacts(run_id, "errors")}
    assert logged == {f"errors/{p}.png" for p in pairs}


# The plain file is slow: the `module.` one (DataParallel's keys) goes through the same path.
@pytest.mark.parametrize("prefix", [pytest.param("", marks=pytest.mark.slow), "module."])
def test_the_old_scripts_best_model_gets_the_same_report(tiny_twin, trained, tmp_path, prefix):
    # The old script's format: its own config (not ours), maybe DataParallel's prefix. The
    # architecture comes from the command's model config then.
    ours = torch.load(trained / "run" / "checkpoints" / "best.pth", weights_only=True)
    old = tmp_path / "best_model.pth"
    torch.save(
        {
            "model_state_dict": {prefix + k: v for k, v in ours["model_state_dict"].items()},
            "optimizer_state_dict": ours["optimizer_state_dict"],
            "epoch": 1,
            "best_f1": 0.5,
            "config": {"training": {"batch_size": 32, "learning_rate": 1e-4}},
        },
        old,
    )
    out = run_evaluate(
        [*_data_args(tiny_twin, trained), f"checkpoint={old}",
         f"hydra.run.dir={tmp_path / 'eval'}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"],
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    _, runs = _runs(trained)
    [training] = [r for r in runs if "tennis_exp.role" not in r.data.tags]
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["macro_f1"] == pytest.approx(training.data.metrics["test/macro_f1"], rel=1e-6)


def test_a_folder_in_the_layout_is_scored(tiny_twin, trained, tmp_path):
    folder = shutil.copytree(tiny_twin / "val", tmp_path / "clips")
    best = trained / "run" / "checkpoints" / "best.pth"
    out = run_evaluate(
        [*_data_args(tiny_twin, trained), f"checkpoint={best}", f"folder={folder}",
         f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"hydra.run.dir={tmp_path / 'e'}"],
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "clips: " in out.stdout
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["windows"] == 20  # the tiny preset's val windows, at the evaluation stride


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["checkpoint={missing}"], "checkpoint {missing} does not exist"),
        (["checkpoint={best}", "split=bogus"], "Invalid value 'bogus', expected one of"),
        (["checkpoint={best}", "folder={empty}"], "no usable video in {empty}"),
        (["checkpoint={best}", "model=resnet18"], None),  # the checkpoint's own model wins
        (["checkpoint={foreign}"], "does not fit this model (another architecture?): missing"),
        ([], "Missing mandatory value: checkpoint"),
    ],
)
def test_mistakes_are_one_line_and_leave_no_run(tiny_twin, trained, tmp_path, args, expected):
    (tmp_path / "empty" / "smash" / "v1").mkdir(parents=True)
    foreign = tmp_path / "foreign.pth"
    torch.save({"model_state_dict": {"head.weight": torch.zeros(1)}}, foreign)
    paths = {
        "missing": tmp_path / "nope.pth",
        "best": trained / "run" / "checkpoints" / "best.pth",
        "empty": tmp_path / "empty",
        "foreign": foreign,
    }
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = run_evaluate(
        [*_data_args(tiny_twin, trained), *(a.format(**paths) for a in args),
         f"tracking.uri={store}", f"hydra.run.dir={tmp_path / 'e'}"],
        cwd=tmp_path,
    )  # fmt: skip
    if expected is None:
        assert out.returncode == 0, out.stderr[-3000:]
        return
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), out.stderr
    assert expected.format(**paths) in lines[0]
    assert not (tmp_path / "mlflow.db").exists() or not runs_of(store)
