"""Transfer as users run it: a preset's missing source, staged unfreezing under DDP with the
presets' balanced weights and augmentation, and the transfer study on the synthetic twins."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from tennis_exp.config import BADMINTON_ACTIONS
from tennis_exp.engine.checkpoint import Checkpoint, load, save
from tennis_exp.models.cnn_lstm import build_model

from ..helpers.commands import run_cli, smoke_args
from ..helpers.configs import compose_config
from ..helpers.store import copy_store, only_run, sqlite_uri, sweep_of


def test_a_transfer_preset_needs_its_source(tmp_path):
    out = run_cli(["experiment=badminton_frozen", "data.root=/b", "dry_run=true",
                   f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "Error: this transfer preset starts from another model: pass transfer_from=<its "
        "checkpoint> (the tennis run's best.pth)"
    ]


@pytest.fixture(scope="module")
def staged(tiny_twin, empty_store, tmp_path_factory):
    """A staged run under DDP as the transfer presets train: balanced class weights, augmented
    windows; both ranks start from one known model (model.init_from), the backbone frozen for
    epoch 1 and trained from epoch 2 on, at a tenth of the head's LR."""
    root = tmp_path_factory.mktemp("staged")
    copy_store(empty_store, root)
    torch.manual_seed(0)
    model = build_model(compose_config(["debug=smoke"]).model, num_classes=4)
    save(root / "start.pth", Checkpoint(model.state_dict()))
    out = run_cli(
        smoke_args(
            tiny_twin, root, "hardware=cpu_ddp2", "training.epochs=2",
            "model.freeze_backbone=true", "model.feature_cache=false", "model.unfreeze_at_epoch=2",
            "training.backbone_lr_factor=0.1", f"model.init_from={root / 'start.pth'}",
            "training.class_weights=balanced", "data.augment.kind=flip_jitter",
            f"hydra.run.dir={root / 'run'}",
        ),
        cwd=root,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return root, out, model


def test_staged_unfreezing_under_ddp(staged):
    root, out, model = staged
    assert "epoch 2: the backbone is unfrozen" in out.stdout
    # The weights after epoch 2, against the ones both ranks started from: the unfrozen
    # backbone trained under DDP, every parameter of it.
    start = load(root / "start.pth").model_state
    last = load(root / "run" / "checkpoints" / "last.pth")
    assert last.train_state["epoch"] == 2
    backbone = [f"backbone.{name}" for name, _ in model.backbone.named_parameters()]
    assert backbone
    for key in backbone:
        assert not torch.equal(last.model_state[key], start[key]), f"{key} did not train"
    groups = last.train_state["optimizer_state_dict"]["param_groups"]
    head_lr, backbone_lr = (group["lr"] for group in groups)
    assert backbone_lr == pytest.approx(0.1 * head_lr)


def test_balanced_weights_and_augmentation_under_ddp(staged):
    root, _, _ = staged
    run = only_run(sqlite_uri(root))
    params = run.data.params
    # The tiny preset's training windows: Smash 8, Net Play 15, Rally 40, Serve 9 (n = 72).
    expected = {"smash": 72 / 32, "net_play": 72 / 60, "rally": 72 / 160, "serve": 72 / 36}
    for event, weight in expected.items():
        assert float(params[f"class_weight.{event}"]) == pytest.approx(weight)
    assert params["data.augment.kind"] == "flip_jitter"
    assert run.info.status == "FINISHED" and np.isfinite(run.data.metrics["train/loss"])
    # Rank 0 drew the curves of both epochs, and logged them; train macro-F1 summed over ranks.
    assert Image.open(root / "run" / "curves.png").size == (1300, 380)
    assert "curves.png" in {
        a.path for a in MlflowClient(sqlite_uri(root)).list_artifacts(run.info.run_id)
    }
    assert 0 <= run.data.metrics["train/macro_f1"] <= 1


def test_the_transfer_study_runs_on_the_synthetic_twins(tiny_twin, store, tmp_path):
    """A tennis model on the tennis twin, then the study's sweep on the badminton twin: each
    strategy and share of the data a nested run, compared by the keys the sweep varied, with
    each class's test recall."""
    tennis = run_cli(
        smoke_args(tiny_twin, tmp_path, f"hydra.run.dir={tmp_path / 'tennis-run'}"), cwd=tmp_path
    )
    assert tennis.returncode == 0, tennis.stderr[-2000:]
    study = run_cli(
        ["--multirun", "experiment=badminton_scratch,badminton_staged",
         "data.train_fraction=0.5,1.0", "data=synthetic_badminton", "model=small_cnn",
         f"transfer_from={tmp_path / 'tennis-run' / 'checkpoints' / 'best.pth'}",
         *smoke_args(tmp_path / "badminton", tmp_path), "training.epochs=2",
         # The sweep's own run must be where its jobs' runs are: in the presets' experiment.
         "experiment_name=badminton_transfer",
         f"hydra.sweep.dir={tmp_path / 'study'}"],
        cwd=tmp_path,
        timeout=600,
    )  # fmt: skip
    assert study.returncode == 0, study.stderr[-2000:]
    # A study reads as one: the swept keys first, the scores next, no speed-up of one strategy
    # over another; each job's folder and run named by its values and the CPU that ran it.
    header, *rows = (tmp_path / "study" / "comparison" / "comparison.csv").read_text().splitlines()
    assert header.startswith(
        "experiment,data.train_fraction,best_val_macro_f1,test_macro_f1,"
        "recall_net_play,recall_rally,recall_serve,recall_smash,run,status,"
    )
    assert "speedup" not in header and "speed-up" not in study.stdout + study.stderr
    values = [
        ("badminton_scratch", "0.5"), ("badminton_scratch", "1.0"),
        ("badminton_staged", "0.5"), ("badminton_staged", "1.0"),
    ]  # fmt: skip
    assert sorted(tuple(row.split(",")[:2]) for row in rows) == values
    assert all(",FINISHED," in row for row in rows)
    labels = [f"{e}-train_fraction_{f}" for e, f in values]
    assert sorted(row.split(",")[8] for row in rows) == [f"{label}@cpu" for label in labels]
    folders = sorted(p.name for p in (tmp_path / "study").iterdir() if p.name[0].isdigit())
    assert folders == [f"{i}-{label}" for i, label in enumerate(labels)]
    assert (tmp_path / "study" / "comparison" / "study.png").stat().st_size > 0
    # Each job's test confusion side by side: four panels, one row of them, in the sweep's run.
    assert Image.open(tmp_path / "study" / "comparison" / "confusions.png").size == (1440, 460)
    uri = sqlite_uri(tmp_path)
    parent, jobs = sweep_of(uri, "badminton_transfer")
    logged = {a.path for a in MlflowClient(uri).list_artifacts(parent.info.run_id)}
    assert "confusions.png" in logged and len(jobs) == 4
    # The badminton twin's own folders were read: the stroke names of data=badminton.
    assert {p.name for p in (tmp_path / "badminton" / "train").iterdir()} <= set(BADMINTON_ACTIONS)
