"""GPU-resident frames: the same batches as the loader, gathered where the model runs; the
decision to use them; a run and a resumed run on them. CUDA is faked where it is needed: the
frames live in host memory (device "cpu") for real."""

from __future__ import annotations

import copy
import logging
import os
import signal

import pytest
import torch
from torch.utils.data import Subset

from tennis_exp.data import device_cache
from tennis_exp.data.device_cache import DeviceBatches, DeviceWindows, fits, fits_on, wanted
from tennis_exp.data.frames import build_datasets
from tennis_exp.data.loaders import ResumableSampler, make_loader
from tennis_exp.engine import train as train_module
from tennis_exp.engine.distributed import Dist

from ..helpers.configs import smoke_config
from ..helpers.store import CURVES, only_run_history, sqlite_uri

GiB = 2**30
CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("nbytes", "free", "total", "expected"),
    [
        (10 * GiB, 80 * GiB, 80 * GiB, True),
        (60 * GiB, 80 * GiB, 80 * GiB, True),  # 16 GiB (20% of 80) kept
        (65 * GiB, 80 * GiB, 80 * GiB, False),
        (10 * GiB, 13 * GiB, 16 * GiB, False),  # a T4: 4 GiB kept, 3 left
        (8 * GiB, 13 * GiB, 16 * GiB, True),
    ],
)
def test_fits_keeps_a_margin_for_the_model(nbytes, free, total, expected):
    assert fits(nbytes, free, total) is expected


@pytest.mark.parametrize(
    ("setting", "device", "expected"),
    [
        ("auto", "cuda", True),
        ("auto", "cpu", False),  # on the CPU the loader's workers overlap the step
        (True, "cpu", True),
        (False, "cuda", False),
    ],
)
def test_when_the_device_cache_is_wanted(setting, device, expected):
    assert wanted(setting, torch.device(device)) is expected


def test_frames_that_do_not_fit_are_said_once_and_the_loader_reads_them(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (5 * GiB, 16 * GiB))
    cuda = torch.device("cuda", 0)
    assert fits_on(cuda, 1 * GiB, "auto")
    assert not caplog.records
    assert not fits_on(cuda, 2 * GiB, "auto")
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "need 2.0 GiB of cuda:0, which has 5.0 GiB free" in record.getMessage()
    assert "the data loader reads them instead" in record.getMessage()


@pytest.fixture(scope="module")
def datasets(tiny_twin, tmp_path_factory):
    cfg = smoke_config(tiny_twin, tmp_path_factory.mktemp("device-cache"))
    return build_datasets(cfg.data, cfg.seed), cfg


def _loader_batches(dataset, sampler, batch, training):
    return list(make_loader(dataset, batch, training, CPU, 0, sampler))


def _same(a, b):
    assert len(a) == len(b) > 0
    for (fa, la), (fb, lb) in zip(a, b, strict=True):
        assert torch.equal(fa, fb) and torch.equal(la, lb)


@pytest.mark.parametrize(("rank", "world"), [(0, 1), (1, 2)])
@pytest.mark.parametrize("skip", [0, 10])
def test_the_same_batches_as_the_loader(datasets, rank, world, skip):
    data, cfg = datasets
    train = data["train"]
    dist = Dist(rank=rank, world_size=world)
    windows = DeviceWindows(train).to(CPU)
    loader_sampler, device_sampler = (ResumableSampler(train, 7, dist) for _ in range(2))
    for epoch in (1, 2):  # a new order each epoch, seeded: the same on both paths
        loader_sampler.start_epoch(epoch, skip)
        device_sampler.start_epoch(epoch, skip)
        _same(
            list(DeviceBatches(windows, device_sampler, 5)),
            _loader_batches(train, loader_sampler, 5, cfg.training),
        )


def test_a_ranks_val_shard_holds_only_its_frames(datasets):
    data, cfg = datasets
    val = data["val"]
    shard = range(1, len(val), 2)
    windows = DeviceWindows(val, shard)
    assert windows.nbytes < DeviceWindows(val).nbytes
    _same(
        list(DeviceBatches(windows.to(CPU), range(len(windows)), 4)),
        list(make_loader(Subset(val, shard), 4, cfg.training, CPU, 0)),
    )


def test_shuffled_frames_are_shuffled_alike(tiny_twin, tmp_path):
    cfg = smoke_config(tiny_twin, tmp_path, "data.shuffle_frames=true")
    val = build_datasets(cfg.data, cfg.seed)["val"]
    _same(
        list(DeviceBatches(DeviceWindows(val).to(CPU), range(len(val)), 6)),
        list(make_loader(val, 6, cfg.training, CPU, 0)),
    )


def _cfg(smoke_cfg, tmp_path, store, device_cache):
    cfg = copy.deepcopy(smoke_cfg)
    cfg.training.epochs, cfg.training.max_batches, cfg.training.batch_size = 3, None, 2
    cfg.data.device_cache = device_cache
    cfg.tracking.uri = sqlite_uri(tmp_path, store)
    return cfg


def test_a_run_on_the_device_cache_is_the_loaders_run_and_resumes(
    smoke_cfg, tmp_path, monkeypatch, caplog
):
    caplog.set_level(logging.INFO)
    train_module.train(_cfg(smoke_cfg, tmp_path, "loader.db", False), tmp_path / "loader")
    assert "data.device_cache" not in caplog.text
    train_module.train(_cfg(smoke_cfg, tmp_path, "device.db", True), tmp_path / "device")
    assert "data.device_cache: " in caplog.text and "of frames on cpu, no loader" in caplog.text
    expected = only_run_history(sqlite_uri(tmp_path, "loader.db"), CURVES)[1]
    assert only_run_history(sqlite_uri(tmp_path, "device.db"), CURVES)[1] == expected  # bit for bit

    # Stopped by SIGTERM in epoch 2's 11th batch, resumed: the same numbers again.
    batches, real_iter = [0], DeviceBatches.__iter__

    def sigterm_at_the_47th_batch(self):
        for batch in real_iter(self):
            if self.sampler.__class__ is ResumableSampler:
                batches[0] += 1
                if batches[0] == 36 + 11:
                    os.kill(os.getpid(), signal.SIGTERM)
            yield batch

    monkeypatch.setattr(device_cache.DeviceBatches, "__iter__", sigterm_at_the_47th_batch)
    run_dir = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt, match="stopped by SIGTERM"):
        train_module.train(_cfg(smoke_cfg, tmp_path, "stopped.db", True), run_dir)
    monkeypatch.setattr(device_cache.DeviceBatches, "__iter__", real_iter)
    last = torch.load(run_dir / "checkpoints" / "last.pth", weights_only=True)
    assert (last["epoch_progress"]["epoch"], last["epoch_progress"]["batches_done"]) == (2, 10)
    resume = copy.deepcopy(smoke_cfg)
    resume.resume = str(run_dir)
    train_module.train(resume, tmp_path / "unused", overrides=[f"resume={run_dir}"])
    run, logged = only_run_history(sqlite_uri(tmp_path, "stopped.db"), CURVES)
    assert run.info.status == "FINISHED" and logged == expected
