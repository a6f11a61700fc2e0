"""Wrapper prefixes, atomic saves, weights-only loading, the users' old checkpoints."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from tennis_exp.engine.checkpoint import (
    Checkpoint,
    load,
    load_weights,
    save,
    strip_prefixes,
    unwrap,
)
from tennis_exp.engine.train import initial_model
from tennis_exp.errors import UserError
from tennis_exp.models.cnn_lstm import build_model

from ..helpers.configs import compose_config


@pytest.mark.parametrize(
    ("key", "plain"),
    [
        ("lstm.weight_ih_l0", "lstm.weight_ih_l0"),
        ("module.lstm.weight_ih_l0", "lstm.weight_ih_l0"),
        ("_orig_mod.fc.0.bias", "fc.0.bias"),
        ("module._orig_mod.fc.0.bias", "fc.0.bias"),
        ("_orig_mod.module.backbone.0.weight", "backbone.0.weight"),
        # Only leading wrapper prefixes go: a layer that happens to be called "module" stays.
        ("backbone.module.weight", "backbone.module.weight"),
    ],
)
def test_strip_prefixes_table(key, plain):
    assert list(strip_prefixes({key: 1})) == [plain]


def _small_model():
    return build_model(compose_config(["debug=smoke"]).model, num_classes=4)


def test_prefix_round_trip_through_dataparallel(tmp_path):
    # DataParallel on a CPU-only machine still adds `module.` to its state dict keys.
    model = _small_model()
    wrapped = nn.DataParallel(model)
    assert all(k.startswith("module.") for k in wrapped.state_dict())
    assert unwrap(wrapped) is model

    # Saved from a wrapped model with the prefix (as the old script sometimes did) ...
    torch.save({"model_state_dict": wrapped.state_dict()}, tmp_path / "dp.pth")
    plain = _small_model()
    load_weights(plain, tmp_path / "dp.pth")
    # ... loads into a plain model, and a plain checkpoint loads into a wrapped one.
    save(tmp_path / "plain.pth", Checkpoint(plain.state_dict()))
    other = nn.DataParallel(_small_model())
    load_weights(other, tmp_path / "plain.pth")
    for k, v in model.state_dict().items():
        assert torch.equal(v, plain.state_dict()[k])
        assert torch.equal(v, other.module.state_dict()[k])


def test_compiled_prefix_is_stripped(tmp_path):
    model = _small_model()
    state = {f"_orig_mod.{k}": v for k, v in model.state_dict().items()}
    torch.save({"model_state_dict": state}, tmp_path / "compiled.pth")
    fresh = _small_model()
    load_weights(fresh, tmp_path / "compiled.pth")
    assert torch.equal(fresh.fc[3].weight, model.fc[3].weight)


class _OldScriptModel(nn.Module):
    """The users' old model, as their train.py built it."""

    def __init__(self):
        super().__init__()
        resnet = torchvision.models.resnet50(weights=None)
        self.backbone = nn.Sequential(*list(resnet.children())[:-1])
        self.lstm = nn.LSTM(2048, 512, 3, batch_first=True, dropout=0.3, bidirectional=True)
        self.fc = nn.Sequential(nn.Linear(1024, 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, 4))


@pytest.mark.parametrize("preset", ["model=resnet50", "experiment=tennis_seed"])
@pytest.mark.parametrize("prefix", ["", "module."])
def test_old_best_model_pth_loads_with_init_from(tmp_path, prefix, preset):
    old = _OldScriptModel()
    optimizer = torch.optim.Adam(old.parameters(), lr=1e-4)
    torch.save(
        {
            "model_state_dict": {prefix + k: v for k, v in old.state_dict().items()},
            "optimizer_state_dict": optimizer.state_dict(),
            "epoch": 12,
            "best_f1": 0.81,
            "config": {"training": {"batch_size": 32, "learning_rate": 1e-4}},
        },
        tmp_path / "best_model.pth",
    )
    cfg = compose_config([preset, "model.pretrained=false"])
    model = build_model(cfg.model, num_classes=4)
    checkpoint = load_weights(model, tmp_path / "best_model.pth")  # no key left over
    assert checkpoint.train_state["epoch"] == 12
    assert torch.equal(model.lstm.weight_hh_l2_reverse, old.lstm.weight_hh_l2_reverse)
    assert torch.equal(model.backbone[1].running_mean, old.backbone[1].running_mean)
    frames = torch.randint(0, 255, (1, 2, 3, 64, 64), dtype=torch.uint8)
    model.eval(), old.eval()
    x = (frames.flatten(0, 1).float() / 255 - model.mean) / model.std
    expected = old.fc(old.lstm(old.backbone(x).view(1, 2, -1))[0][:, -1])
    torch.testing.assert_close(model(frames), expected)


def test_atomic_save_keeps_the_previous_file_when_a_save_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    save(path, Checkpoint({}, train_state={"epoch": 1}))

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(UserError, match="no space left to write .*last.pth .*previous one is kept"):
        save(path, Checkpoint({}, train_state={"epoch": 2}))
    assert load(path).train_state["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]  # no temporary file left


def test_missing_truncated_and_unsafe_checkpoints_are_refused(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load(tmp_path / "nope.pth")

    good = tmp_path / "good.pth"
    save(good, Checkpoint(_small_model().state_dict()))
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UserError, match="truncated"):
        load(truncated)

    unsafe = tmp_path / "unsafe.pth"
    torch.save({"model_state_dict": {}, "obj": _Arbitrary()}, unsafe)
    with pytest.raises(UserError, match="weights-only loading refuses"):
        load(unsafe)


class _Arbitrary:
    pass


def test_another_architecture_lists_missing_and_unexpected_keys(tmp_path):
    r18 = build_model(compose_config(["model=resnet18", "model.pretrained=false"]).model, 4)
    save(tmp_path / "r18.pth", Checkpoint(r18.state_dict()))
    with pytest.raises(UserError) as err:
        load_weights(_small_model(), tmp_path / "r18.pth")
    message = str(err.value)
    assert "\n" not in message
    assert "missing" in message and "unexpected" in message and "backbone." in message


def test_a_checkpoint_that_supplies_the_backbone_needs_no_download(tmp_path, monkeypatch):
    # An offline cluster node: fetching ImageNet weights fails.
    build_offline = torchvision.models.get_model

    def offline(name, weights=None, **kwargs):
        if weights is not None:
            raise OSError("could not reach download.pytorch.org")
        return build_offline(name, weights=None, **kwargs)

    overrides = ["model=resnet18", "model.lstm_hidden=8", "model.lstm_layers=1"]
    cfg = compose_config([*overrides, "model.pretrained=false"])
    trained = build_model(cfg.model, 4)
    save(tmp_path / "best.pth", Checkpoint(trained.state_dict()))
    monkeypatch.setattr(torchvision.models, "get_model", offline)
    init = f"model.init_from={tmp_path / 'best.pth'}"
    cfg = compose_config([*overrides, "model.pretrained=true", init])
    with pytest.raises(UserError, match="could not download resnet18 weights"):
        build_model(cfg.model, 4)  # what asking for the ImageNet weights does offline
    model = initial_model(cfg, resume=None)
    assert torch.equal(model.backbone[0].weight, trained.backbone[0].weight)
