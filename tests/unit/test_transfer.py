"""Transfer to badminton: the presets, a share of the target data, the backbone's own LR and
staged unfreezing."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tennis_exp.config import validate
from tennis_exp.data.frames import build_datasets
from tennis_exp.data.split_index import fraction_of
from tennis_exp.engine import checkpoint
from tennis_exp.engine import train as train_module
from tennis_exp.errors import UserError

from ..helpers.configs import compose_config, smoke_config

PRESETS = ["badminton_frozen", "badminton_finetune", "badminton_staged", "badminton_scratch"]


@pytest.mark.parametrize("preset", PRESETS)
def test_the_presets_compose_on_the_badminton_mapping(preset):
    cfg = compose_config([f"experiment={preset}", "transfer_from=/t.pth", "data.root=/b"])
    validate(cfg)
    assert cfg.data.actions["wrist_smash"] == "Smash" and "forehand_flat" not in cfg.data.actions
    assert cfg.model.init_from == (None if preset == "badminton_scratch" else "/t.pth")
    assert cfg.training.class_weights == "balanced" and cfg.training.batch_size == 16


@pytest.fixture(scope="module")
def train_index(tiny_twin, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fraction")
    cfg = smoke_config(tiny_twin, folder, "data.max_videos_per_action=null")
    return build_datasets(cfg.data, cfg.seed)["train"].index


@pytest.mark.parametrize("fraction", [0.01, 0.3, 0.5, 1.0])
def test_a_fraction_of_the_training_videos_per_event(train_index, fraction):
    part = fraction_of(train_index, fraction, seed=1)
    full = np.bincount(train_index.video_labels, minlength=4)
    kept = np.bincount(part.video_labels, minlength=4)
    assert (kept == np.maximum(1, np.ceil(fraction * full))).all()  # stratified, never empty
    # Windows follow their videos: the same (folder, start) pairs, relabelled consistently.
    pairs = {(part.videos[v].folder, s) for v, s in part.windows}
    folders = {f.folder for f in part.videos}
    whole = {(train_index.videos[v].folder, s) for v, s in train_index.windows}
    assert pairs == {(f, s) for f, s in whole if f in folders}
    assert [part.video_labels[v] for v in part.windows[:, 0]] == part.labels.tolist()


def test_fractions_are_nested_and_seeded(train_index):
    names = lambda index: {v.folder for v in index.videos}  # noqa: E731
    small, large = (fraction_of(train_index, f, seed=1) for f in (0.3, 0.6))
    assert names(small) < names(large)  # more data adds videos, keeps the others
    assert names(fraction_of(train_index, 0.3, seed=1)) == names(small)  # reproducible
    assert names(fraction_of(train_index, 0.3, seed=2)) != names(small)


def test_train_fraction_is_validated():
    with pytest.raises(
        UserError, match=r"data.train_fraction=0.0 is invalid: it must be in \(0, 1\]"
    ):
        validate(compose_config(["data.train_fraction=0"]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.unfreeze_at_epoch=3"], "unfreezes a frozen backbone: set model.freeze_backbone"),
        (["model.freeze_backbone=true", "model.feature_cache=true", "model.unfreeze_at_epoch=3"],
         "model.unfreeze_at_epoch=3 trains the backbone: set model.feature_cache=auto"),
        (["model.freeze_backbone=true", "model.feature_cache=false", "model.unfreeze_at_epoch=1"],
         "model.unfreeze_at_epoch=1 is invalid: it must be an integer >= 2"),
        (["training.backbone_lr_factor=0"], "training.backbone_lr_factor=0.0 is invalid"),
    ],
)  # fmt: skip
def test_staged_unfreezing_keys_are_checked(overrides, message):
    with pytest.raises(UserError, match=message):
        validate(compose_config(overrides))


def _staged(smoke_cfg, tmp_path, epochs=3):
    cfg = copy.deepcopy(smoke_cfg)
    cfg.model.freeze_backbone, cfg.model.feature_cache = True, False
    cfg.model.unfreeze_at_epoch, cfg.training.backbone_lr_factor = 3, 0.1
    cfg.training.epochs = epochs
    return cfg


def test_staged_unfreezing_trains_the_backbone_from_its_epoch(smoke_cfg, tmp_path, monkeypatch):
    seen = []
    real_step = train_module.Trainer.train_step

    def recording_step(self, frames, labels, epoch, batch):
        out = real_step(self, frames, labels, epoch, batch)
        lrs = [g["lr"] for g in self.state.optimizer.param_groups]
        seen.append((epoch, self.model.backbone[0].weight.detach().clone(), lrs))
        return out

    monkeypatch.setattr(train_module.Trainer, "train_step", recording_step)
    train_module.train(_staged(smoke_cfg, tmp_path), tmp_path / "run")
    weights = {epoch: w for epoch, w, _ in seen}
    initial = checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pth")
    assert torch.equal(weights[1], weights[2])  # frozen for epochs 1 and 2
    assert not torch.equal(weights[2], weights[3])  # trained in epoch 3
    assert not torch.equal(initial.model_state["backbone.0.weight"], weights[2])
    head_lr, backbone_lr = seen[-1][2]
    assert backbone_lr == pytest.approx(0.1 * head_lr)
