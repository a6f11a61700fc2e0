"""The CNN-LSTM: shapes, a frozen backbone that really stays frozen."""

from __future__ import annotations

import pytest
import torch

from tennis_exp.config import Precision
from tennis_exp.engine.hardware import autocast
from tennis_exp.errors import UserError
from tennis_exp.models.cnn_lstm import build_model

from ..helpers.configs import compose_config


def _model(*overrides):
    return build_model(compose_config(["debug=smoke", *overrides]).model, num_classes=4)


def test_uint8_windows_in_logits_out():
    model = _model()
    frames = torch.randint(0, 256, (3, 16, 3, 32, 32), dtype=torch.uint8)
    assert model(frames).shape == (3, 4)


def test_cached_float32_features_take_the_autocast_dtype():
    """The feature cache stores float32; under bf16 autocast the LSTM must see what the
    backbone would hand it (bf16), which on the CPU is also what its LSTM accepts."""
    model = _model("model.freeze_backbone=true").eval()
    features = torch.randn(2, 16, model.lstm.input_size).bfloat16().float()  # as cached
    with torch.no_grad(), autocast(Precision.bf16, "cpu"):
        from_cache = model(features)
        from_backbone_dtype = model(features.bfloat16())
    assert from_cache.dtype == torch.bfloat16
    torch.testing.assert_close(from_cache, from_backbone_dtype, rtol=0, atol=0)


def test_frozen_backbone_keeps_weights_and_batchnorm_statistics():
    model = _model("model.freeze_backbone=true")
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    lstm_before = model.lstm.weight_ih_l0.clone()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    assert not model.backbone.training  # BatchNorm in eval mode while the rest trains
    for _ in range(2):
        frames = torch.randint(0, 256, (4, 4, 3, 32, 32), dtype=torch.uint8)
        loss = torch.nn.functional.cross_entropy(model(frames), torch.tensor([0, 1, 2, 3]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, before[k]), k  # weights and running stats untouched
    assert all(p.grad is None for p in model.backbone.parameters())
    assert not torch.equal(model.lstm.weight_ih_l0, lstm_before)


def test_unfrozen_backbone_trains():
    model = _model()
    before = model.backbone[0].weight.clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    frames = torch.randint(0, 256, (4, 4, 3, 32, 32), dtype=torch.uint8)
    torch.nn.functional.cross_entropy(model(frames), torch.tensor([0, 1, 2, 3])).backward()
    optimizer.step()
    assert model.backbone.training
    assert not torch.equal(model.backbone[0].weight, before)


def test_resnet_weights_from_a_local_file(tmp_path):
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    model = _model(
        "model=resnet18",
        f"model.weights_path={tmp_path / 'r18.pth'}",
        "model.lstm_hidden=16",
        "model.lstm_layers=1",
    )
    assert torch.equal(model.backbone[0].weight, reference.conv1.weight)


def test_bad_weight_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        _model("model=resnet18", f"model.weights_path={tmp_path / 'missing.pth'}")
    with pytest.raises(UserError, match="small_cnn has no pretrained weights"):
        _model("model.pretrained=true")
