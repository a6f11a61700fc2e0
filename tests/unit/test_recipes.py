"""The users' recipe as a preset, its switches, class weights and device-side augmentation."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from tennis_exp.config import Augment, AugmentConfig, AugmentPer, uses_feature_cache, validate
from tennis_exp.data.augment import Draw, apply, augment, draw
from tennis_exp.engine.objective import class_weights
from tennis_exp.errors import UserError
from tennis_exp.models.cnn_lstm import build_model

from ..helpers.configs import compose_config

EVENTS = ["Smash", "Net Play", "Rally", "Serve"]


@pytest.mark.parametrize(
    ("setting", "labels", "expected"),
    [
        ("none", [0, 1, 2, 2], None),
        # n / (k * count): Rally, twice as frequent, weighs half
        ("balanced", [0, 1, 2, 2, 3, 3, 2, 2], [2.0, 2.0, 0.5, 1.0]),
        ("balanced", [0, 1, 2, 3], [1.0, 1.0, 1.0, 1.0]),
        ([1, 2, 3.5, 4], [0], [1.0, 2.0, 3.5, 4.0]),
    ],
)
def test_class_weights_table(setting, labels, expected):
    assert class_weights(setting, _Windows(labels), EVENTS) == expected


class _Windows:
    """A training split's windows, their labels alone."""

    def __init__(self, labels):
        self.index = SimpleNamespace(labels=np.array(labels))


def test_balanced_weights_refuse_an_empty_class():
    with pytest.raises(UserError, match="no window of Smash, Serve") as err:
        class_weights("balanced", _Windows([1, 2, 2]), EVENTS)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.class_weights=[1,2]", "has 2 weight(s) but data.events has 4"),
        ("training.class_weights=[1,2,0,1]", "is invalid: use none, balanced, or one weight"),
        ("training.class_weights=heavy", "training.class_weights=heavy is invalid"),
        ("data.augment.brightness=1.5", "data.augment.brightness=1.5 is invalid"),
        ("model.head_dropout=1", "model.head_dropout=1.0 is invalid"),
    ],
)
def test_bad_recipe_keys_are_one_line(override, message):
    with pytest.raises(UserError) as err:
        validate(compose_config(["debug=smoke", override]))
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.augment.kind=flip_jitter"],
         "data.augment.kind=flip_jitter changes the frames every step: set model.feature_cache="
         "auto \\(the backbone every step\\), or data.augment.kind=none"),
        (["model.freeze_bn_stats=false"], "model.freeze_bn_stats=false updates its BatchNorm"),
        (["data.frame_cache=false"], "or data.frame_cache=true"),
    ],
)  # fmt: skip
def test_the_feature_cache_refuses_what_changes_features(overrides, message):
    frozen = ["experiment=tennis_baseline", "data.root=/frames", "model.pretrained=false"]
    assert uses_feature_cache(compose_config(frozen))
    with pytest.raises(UserError, match=message):
        validate(compose_config([*frozen, *overrides, "model.feature_cache=true"]))
    # auto (the default) and false train through the backbone instead.
    for setting in ["auto", "false"]:
        cfg = compose_config([*frozen, *overrides, f"model.feature_cache={setting}"])
        validate(cfg)
        assert not uses_feature_cache(cfg)


def test_the_default_run_augments_and_the_frozen_presets_do_not():
    assert compose_config([]).data.augment.kind is Augment.flip_jitter
    for preset in ["tennis_baseline", "badminton_frozen", "badminton_staged"]:
        cfg = compose_config([f"experiment={preset}", "transfer_from=x.pth"])
        assert cfg.data.augment.kind is Augment.none
    assert uses_feature_cache(compose_config(["experiment=tennis_baseline"]))
    # A frozen backbone on the default run: augmented through the backbone, uncached.
    cfg = compose_config(["model=resnet18"])
    validate(cfg)
    assert cfg.model.freeze_backbone and not uses_feature_cache(cfg)


def test_feature_cache_setting_is_checked():
    with pytest.raises(UserError, match="model.feature_cache=maybe is invalid: use auto, true"):
        validate(compose_config(["model.feature_cache=maybe"]))


def test_the_seed_preset_is_the_old_script():
    cfg = compose_config(["experiment=tennis_seed", "data.root=/frames", "model.pretrained=false"])
    validate(cfg)
    model = build_model(cfg.model, 4)
    assert model.fc[2].p == 0.5 and model.lstm.dropout == 0.0  # theirs
    assert (model.lstm.num_layers, model.lstm.hidden_size) == (3, 512)
    assert cfg.training.lr_patience == 5 and cfg.training.grad_clip is None
    assert (cfg.data.augment.kind, cfg.data.augment.per) == (Augment.flip_jitter, AugmentPer.frame)
    baseline = build_model(
        compose_config(["experiment=tennis_baseline", "model.pretrained=false"]).model, 4
    )
    assert baseline.fc[2].p == 0.3 and baseline.lstm.dropout == 0.3  # ours


@pytest.mark.parametrize("freeze_bn_stats", [True, False])
def test_bn_statistics_of_a_frozen_backbone(freeze_bn_stats):
    cfg = compose_config(
        ["debug=smoke", "model.freeze_backbone=true", f"model.freeze_bn_stats={freeze_bn_stats}"]
    )
    model = build_model(cfg.model, 4).train()
    before = model.backbone[1].running_mean.clone()
    model(torch.randint(0, 256, (2, 3, 3, 32, 32), dtype=torch.uint8))
    assert torch.equal(model.backbone[1].running_mean, before) is freeze_bn_stats
    assert not any(p.requires_grad for p in model.backbone.parameters())  # frozen weights


def _windows(b=6, t=5):
    torch.manual_seed(0)
    return torch.randint(0, 256, (b, t, 3, 8, 8), dtype=torch.uint8)


@pytest.mark.parametrize("per", list(AugmentPer))
def test_augmentation_draws_per_window_or_per_frame(per):
    cfg = AugmentConfig(kind=Augment.flip_jitter, per=per)
    d = draw((64, 5), cfg, torch.device("cpu"))
    assert d.flip.shape == d.brightness.shape == (64, 5 if per is AugmentPer.frame else 1, 1, 1, 1)
    assert d.brightness.min() >= 0.8 and d.brightness.max() <= 1.2
    assert 0 < d.flip.float().mean() < 1  # some windows flipped, some not
    out = augment(_windows(64), cfg)
    assert out.dtype == torch.float32 and out.min() >= 0 and out.max() <= 255


def test_augmentation_matches_torchvision_per_window():
    frames = _windows()
    d = Draw(
        torch.tensor([True, False, True, False, False, True]).view(6, 1, 1, 1, 1),
        torch.linspace(0.8, 1.2, 6).view(6, 1, 1, 1, 1),
        torch.linspace(1.2, 0.8, 6).view(6, 1, 1, 1, 1),
        torch.linspace(0.9, 1.1, 6).view(6, 1, 1, 1, 1),
    )
    out = apply(frames.float(), d)
    for i in range(len(frames)):  # torchvision, one window at a time, frame by frame
        x = frames[i].float() / 255
        if d.flip[i]:
            x = TF.horizontal_flip(x)
        for adjust, factors in [
            (TF.adjust_brightness, d.brightness),
            (TF.adjust_contrast, d.contrast),
            (TF.adjust_saturation, d.saturation),
        ]:
            x = torch.stack([adjust(frame, factors[i].item()) for frame in x])
        torch.testing.assert_close(out[i] / 255, x, atol=1e-5, rtol=1e-5)


def test_no_augmentation_is_the_identity():
    frames = _windows()
    assert augment(frames, AugmentConfig(kind=Augment.none)) is frames
