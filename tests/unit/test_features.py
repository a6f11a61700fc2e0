"""Speed features: the frozen-backbone feature cache, mixed precision, the loader-bound warning."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from tennis_exp.config import Augment, Backbone, Precision
from tennis_exp.data.frames import build_datasets
from tennis_exp.engine import train as train_module
from tennis_exp.engine.distributed import Dist
from tennis_exp.engine.features import feature_file, weights_digest
from tennis_exp.engine.hardware import plan_run
from tennis_exp.engine.loop import Job, Trainer
from tennis_exp.engine.train import initial_model
from tennis_exp.errors import UserError
from tennis_exp.models.cnn_lstm import small_cnn

from ..helpers.configs import fit_untracked, smoke_config
from ..helpers.scoring import scores_on_test_split
from ..helpers.store import history, only_run

CURVES = ["train/loss", "train/acc", "val/loss", "val/macro_f1"]


def _frozen(cfg, tmp_path: Path, feature_cache: bool):
    with open_dict(cfg):
        cfg.model.backbone = Backbone.resnet18
        cfg.model.freeze_backbone = True
        cfg.model.feature_cache = feature_cache
        cfg.data.augment.kind = Augment.none  # the default run's augmentation changes features
        cfg.model.feature_cache_dir = str(tmp_path / "features")
        cfg.training.epochs = 2
        cfg.tracking.uri = f"sqlite:///{tmp_path / f'cache-{feature_cache}.db'}"
    return cfg


def _curves(uri: str) -> dict[str, list[float]]:
    run = only_run(uri)
    assert run.info.status == "FINISHED"
    logged = history(uri, run, [*CURVES, "test/loss", "test/acc", "test/macro_f1"])
    return {key: [value for _, value in points] for key, points in logged.items()}


def test_feature_cache_trains_exactly_like_the_backbone(smoke_cfg, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    plain = _frozen(copy.deepcopy(smoke_cfg), tmp_path, feature_cache=False)
    train_module.train(plain, tmp_path / "plain")
    assert not (tmp_path / "features").exists()
    cached = _frozen(copy.deepcopy(smoke_cfg), tmp_path, feature_cache=True)
    train_module.train(cached, tmp_path / "cached")
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "features").iterdir()) == [
        "test",
        "train",
        "val",
    ]
    expected, got = _curves(plain.tracking.uri), _curves(cached.tracking.uri)
    assert got.keys() == expected.keys()
    for key in expected:  # the backbone saw other batch shapes: equal within float tolerance
        assert got[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-5), key

    caplog.clear()
    train_module.train(cached, tmp_path / "again")
    assert caplog.text.count("reusing feature cache") == 3
    assert "backbone features of" not in caplog.text


def test_feature_cache_under_ddp_is_computed_by_rank_0(tiny_twin, tmp_path):
    cfg = _frozen(smoke_config(tiny_twin, tmp_path, hardware="cpu_ddp2"), tmp_path, True)
    train_module.train(cfg, tmp_path / "run")
    assert len(list((tmp_path / "features").iterdir())) == 3
    log = (tmp_path / "run" / "train.log").read_text()
    assert log.count("backbone features of") == 3  # each split once, by rank 0
    # The two ranks trained and scored on the cached features: one process scoring the best
    # weights on the test split's frames, through the whole model, gets the run's numbers.
    best = tmp_path / "run" / "checkpoints" / "best.pth"
    curves, scored = _curves(cfg.tracking.uri), scores_on_test_split(cfg, best)
    assert curves["test/acc"] == [pytest.approx(scored["acc"], abs=1e-9)]
    assert curves["test/macro_f1"] == [pytest.approx(scored["macro_f1"], abs=1e-9)]
    assert curves["test/loss"] == [pytest.approx(scored["loss"], rel=1e-4)]


def test_feature_cache_key_follows_frames_weights_and_precision(tmp_path):
    backbone, _ = small_cnn()
    weights = weights_digest(backbone)
    frames = tmp_path / "train-64px-abc.npy"
    path = feature_file(tmp_path, "train", frames, weights, Precision.fp32)
    assert path == feature_file(tmp_path, "train", frames, weights, Precision.fp32)
    with torch.no_grad():
        backbone[1].running_mean += 1  # BatchNorm statistics are part of the weights
    changed = [
        feature_file(tmp_path, "train", frames, weights_digest(backbone), Precision.fp32),
        feature_file(tmp_path, "train", tmp_path / "train-64px-abd.npy", weights, Precision.fp32),
        feature_file(tmp_path, "train", frames, weights, Precision.bf16),
    ]
    assert len({path, *changed}) == 4


def test_feature_cache_needs_the_frame_cache(smoke_cfg, tmp_path):
    cfg = _frozen(smoke_cfg, tmp_path, feature_cache=True)
    cfg.data.frame_cache = False
    with pytest.raises(UserError, match="data.frame_cache=false stores no frames: set model"):
        train_module.train(cfg, tmp_path / "run")


def test_bf16_autocast_trains_on_the_cpu(smoke_cfg, tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    computed = set()  # the dtypes the convolutions, the LSTM and the head returned
    build = train_module.build_model

    def hooked(*args, **kwargs):
        model = build(*args, **kwargs)
        for layer in (model.backbone[0], model.lstm, model.fc[0]):
            layer.register_forward_hook(
                lambda module, _, out: computed.add((type(module).__name__, _dtype(out)))
            )
        return model

    monkeypatch.setattr(train_module, "build_model", hooked)
    smoke_cfg.hardware.precision = Precision.bf16
    train_module.train(smoke_cfg, tmp_path / "run")
    assert "Precision: bf16" in caplog.text
    assert computed == {(name, torch.bfloat16) for name in ("Conv2d", "LSTM", "Linear")}
    curves = _curves(smoke_cfg.tracking.uri)
    assert all(torch.isfinite(torch.tensor(curves["train/loss"])))


def _dtype(out) -> torch.dtype:
    return (out[0] if isinstance(out, tuple) else out).dtype


def test_fp16_on_the_cpu_is_refused(smoke_cfg, tmp_path):
    smoke_cfg.hardware.precision = Precision.fp16
    with pytest.raises(UserError, match="hardware.precision=fp16 needs a CUDA GPU"):
        fit_untracked(smoke_cfg, tmp_path / "run")


def test_compile_under_dataparallel_is_refused(smoke_cfg, tmp_path):
    smoke_cfg.training.compile = True
    smoke_cfg.hardware.devices = 2
    with pytest.raises(UserError, match="training.compile=true does not work under DataParallel"):
        train_module.train(smoke_cfg, tmp_path / "run")


class _Slow(torch.utils.data.Dataset):
    """A dataset that takes far longer to load a window than the model takes to learn it."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        time.sleep(0.05)  # 0.4 s a batch of 8: still far above the tiny model's step
        return self.dataset[i]


def test_a_slow_loader_is_reported(smoke_cfg, tmp_path, monkeypatch, caplog):
    build = train_module.build_datasets
    monkeypatch.setattr(
        train_module,
        "build_datasets",
        lambda *a: {**build(*a), "train": _Slow(build(*a)["train"])},
    )
    smoke_cfg.training.max_batches = 6
    fit_untracked(smoke_cfg, tmp_path / "run")
    assert "the data loader, not the model, is the bottleneck" in caplog.text
    assert "raise training.num_workers (now 0)" in caplog.text


@pytest.mark.slow
def test_compiled_model_trains_and_saves_plain_keys(smoke_cfg, tmp_path):
    smoke_cfg.training.compile = True
    fit_untracked(smoke_cfg, tmp_path / "run")
    state = torch.load(tmp_path / "run" / "checkpoints" / "best.pth", weights_only=True)
    assert not any(k.startswith("_orig_mod.") for k in state["model_state_dict"])


class _RecordingDP(torch.nn.Module):
    """Stands in for DataParallel, which needs GPUs to wrap."""

    def __init__(self, module, device_ids=None, output_device=None):
        super().__init__()
        self.module, self.device_ids = module, device_ids

    def forward(self, x):
        return self.module(x)


@pytest.mark.parametrize("feature_cache", [True, False])
def test_dataparallel_holds_only_what_trains(smoke_cfg, tmp_path, monkeypatch, feature_cache):
    # DataParallel copies every parameter it holds to every GPU at every step: on cached
    # features the frozen backbone has no business there.
    monkeypatch.setattr(torch.nn, "DataParallel", _RecordingDP)
    cfg = _frozen(smoke_cfg, tmp_path, feature_cache=feature_cache)
    plan = plan_run(cfg)
    two_gpus = replace(plan, setup=replace(plan.setup, device_ids=[0, 1]))  # on the CPU
    job = Job(cfg, two_gpus, tmp_path / "run", None, "")
    model = initial_model(cfg, resume=None)
    trainer = Trainer(job, Dist(), model, build_datasets(cfg.data, cfg.seed))
    assert isinstance(trainer.trained, _RecordingDP) and trainer.trained.device_ids == [0, 1]
    held = {id(p) for p in trainer.trained.parameters()}
    assert {id(p) for p in model.lstm.parameters()} <= held
    backbone = {id(p) for p in model.backbone.parameters()}
    assert backbone.isdisjoint(held) if feature_cache else backbone <= held
