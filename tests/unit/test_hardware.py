"""The guide's scaling rules, the DataParallel loader-batch rule and device selection."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tennis_exp.config import BatchScaling, LrScaling, Precision, Strategy
from tennis_exp.engine.hardware import (
    DeviceSetup,
    RunPlan,
    loader_batch_size,
    plan_run,
    plan_scaling,
    resolve_precision,
    select_devices,
    wrap_model,
)
from tennis_exp.errors import UserError

from ..helpers.configs import compose_config

PD, CONST = BatchScaling.per_device, BatchScaling.constant
NONE, LIN, SQRT = LrScaling.none, LrScaling.linear, LrScaling.sqrt


@pytest.mark.parametrize(
    ("batch", "lr", "devices", "batch_rule", "lr_rule", "per_device", "effective", "planned_lr"),
    [
        # The guide: 1e-4 at batch 32 becomes 2e-4 at effective 64.
        (32, 1e-4, 1, PD, LIN, 32, 32, 1e-4),
        (32, 1e-4, 2, PD, LIN, 32, 64, 2e-4),
        (32, 1e-4, 4, PD, LIN, 32, 128, 4e-4),
        (32, 1e-4, 2, PD, NONE, 32, 64, 1e-4),
        (32, 1e-4, 4, PD, SQRT, 32, 128, 2e-4),
        (32, 1e-4, 2, PD, SQRT, 32, 64, 1e-4 * math.sqrt(2)),
        # constant: the same effective batch on any device count, so the LR stays put.
        (64, 1e-4, 2, CONST, LIN, 32, 64, 1e-4),
        (64, 1e-4, 4, CONST, LIN, 16, 64, 1e-4),
        (64, 1e-4, 1, CONST, SQRT, 64, 64, 1e-4),
        (16, 3e-4, 4, CONST, NONE, 4, 16, 3e-4),
    ],
)
def test_plan_scaling_table(
    batch, lr, devices, batch_rule, lr_rule, per_device, effective, planned_lr
):
    plan = plan_scaling(batch, lr, devices, batch_rule, lr_rule)
    assert plan.devices == devices
    assert plan.per_device_batch_size == per_device
    assert plan.effective_batch_size == effective
    assert plan.learning_rate == pytest.approx(planned_lr)
    assert plan.lr_factor == pytest.approx(planned_lr / lr)


@pytest.mark.parametrize("batch", [30, 33, 2])
def test_constant_batch_must_divide(batch):
    with pytest.raises(UserError, match=rf"training.batch_size={batch} .*hardware.devices=4"):
        plan_scaling(batch, 1e-4, 4, CONST, LIN)


@pytest.mark.parametrize(
    ("profile", "devices", "per_device", "effective", "lr"),
    [
        ("cpu", 1, 32, 32, 1e-4),
        ("gpu1", 1, 32, 32, 1e-4),
        ("gpu2", 2, 32, 64, 2e-4),
        ("gpu4", 4, 32, 128, 4e-4),
        ("colab", 1, 16, 16, 1e-4),
    ],
)
def test_every_profile_plans_as_the_guide_says(profile, devices, per_device, effective, lr):
    cfg = compose_config([f"hardware={profile}"])
    hw, tr = cfg.hardware, cfg.training
    plan = plan_scaling(
        tr.batch_size, tr.learning_rate, hw.devices, hw.batch_scaling, hw.lr_scaling
    )
    assert (plan.devices, plan.per_device_batch_size, plan.effective_batch_size) == (
        devices,
        per_device,
        effective,
    )
    assert plan.learning_rate == pytest.approx(lr)
    assert hw.name == profile


@pytest.mark.parametrize(
    ("strategy", "devices", "loader_batch"),
    [
        (Strategy.dp, 1, 32),
        (Strategy.dp, 2, 64),
        (Strategy.dp, 4, 128),
        (Strategy.ddp, 2, 32),
        (Strategy.ddp, 4, 32),
    ],
)
def test_dataparallel_loader_gets_the_whole_batch(strategy, devices, loader_batch):
    # DataParallel splits the loader's batch: it must be per-device x devices, so each GPU
    # really gets 32 (the old script gave the loader 32 and each of 2 GPUs got 16).
    plan = plan_scaling(32, 1e-4, devices, PD, LIN)
    assert loader_batch_size(plan, strategy) == loader_batch
    if strategy is Strategy.dp:
        assert loader_batch_size(plan, strategy) // devices == plan.per_device_batch_size


def _hw(name="gpu2", **kw):
    cfg = compose_config([f"hardware={name}", *[f"hardware.{k}={v}" for k, v in kw.items()]])
    return cfg.hardware


def test_select_devices_by_id_when_enough_are_visible():
    setup = select_devices(_hw("gpu4"), visible_cuda=8)
    assert setup.device == torch.device("cuda", 0)
    assert setup.device_ids == [0, 1, 2, 3]
    assert setup.for_rank(2).device == torch.device("cuda", 2)  # a DDP rank's own GPU


def test_too_many_devices_names_counts_and_env(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(UserError) as err:
        select_devices(_hw("gpu4"), visible_cuda=1)
    assert str(err.value).count("\n") == 0
    for part in ("hardware=gpu4", "needs 4", "1 visible", "CUDA_VISIBLE_DEVICES=0"):
        assert part in str(err.value)


def test_gpu1_falls_back_to_cpu_with_a_warning(caplog):
    setup = select_devices(_hw("gpu1"), visible_cuda=0)
    assert setup.device.type == "cpu" and setup.device_ids == []
    assert "falling back to the CPU" in caplog.text


def test_gpu2_does_not_fall_back():
    with pytest.raises(UserError, match="needs 2 CUDA device"):
        select_devices(_hw("gpu2"), visible_cuda=0)


def test_dry_run_plans_without_devices():
    setup = select_devices(_hw("gpu4"), visible_cuda=0, dry_run=True)
    assert setup.device_ids == [0, 1, 2, 3]
    lines = plan_run(compose_config(["hardware=gpu4", "dry_run=true"])).banner(train_size=None)
    assert lines[:3] == [
        "Using device: cuda",
        "Using 4 GPUs for training!",
        "GPU IDs: [0, 1, 2, 3]",
    ]
    assert "Effective batch size: 128" in lines
    assert "Precision: auto" in lines
    assert any(line.startswith("Learning rate: 0.0004 (linear") for line in lines)


@pytest.mark.parametrize(
    "requested, device, bf16_supported, expected",
    [
        (Precision.auto, "cuda", True, Precision.bf16),  # A100, H100
        (Precision.auto, "cuda", False, Precision.fp32),  # T4, V100
        (Precision.auto, "cpu", False, Precision.fp32),
        (Precision.fp16, "cuda", False, Precision.fp16),  # the colab profile on a T4
        (Precision.fp16, "cuda", True, Precision.fp16),
        (Precision.bf16, "cuda", True, Precision.bf16),
        (Precision.bf16, "cpu", False, Precision.bf16),  # CPU autocast has bf16
        (Precision.fp32, "cuda", True, Precision.fp32),
        (Precision.fp32, "cpu", False, Precision.fp32),
    ],
)
def test_precision_resolution(requested, device, bf16_supported, expected):
    assert resolve_precision(requested, device, bf16_supported) is expected


@pytest.mark.parametrize(
    "requested, device, bf16_supported, message",
    [
        (Precision.fp16, "cpu", False, "hardware.precision=fp16 needs a CUDA GPU"),
        (Precision.bf16, "cuda", False, "hardware.precision=bf16: this GPU has no bfloat16"),
    ],
)
def test_precision_refused(requested, device, bf16_supported, message):
    with pytest.raises(UserError, match=message):
        resolve_precision(requested, device, bf16_supported)


@pytest.mark.parametrize(
    "profile, precision", [("gpu1", "auto"), ("gpu4", "auto"), ("colab", "fp16"), ("cpu", "fp32")]
)
def test_profile_precision(profile, precision):
    assert compose_config([f"hardware={profile}"]).hardware.precision.value == precision


def test_cpu_dataparallel_over_several_devices_is_refused():
    with pytest.raises(UserError, match="hardware.devices=2 with hardware.accelerator=cpu"):
        select_devices(_hw("cpu", devices=2), visible_cuda=0)


class _Recording(nn.Module):
    """Stands in for DataParallel and DDP, which need GPUs or a process group to wrap."""

    def __init__(self, module, device_ids=None, output_device=None):
        super().__init__()
        self.module, self.device_ids, self.output_device = module, device_ids, output_device


class _RecordingDP(_Recording):
    pass


class _RecordingDDP(_Recording):
    pass


@pytest.mark.parametrize(
    ("ids", "strategy", "wrapper"),
    [
        ([], Strategy.dp, None),  # the CPU
        ([0], Strategy.dp, None),  # one GPU: nothing to split
        ([0, 1], Strategy.dp, _RecordingDP),
        ([0, 1, 2, 3], Strategy.dp, _RecordingDP),
        ([0, 1], Strategy.ddp, _RecordingDDP),  # one rank of a DDP job
        ([], Strategy.ddp, _RecordingDDP),  # a gloo rank on the CPU
    ],
)
def test_wrap_decision(monkeypatch, ids, strategy, wrapper):
    monkeypatch.setattr(nn, "DataParallel", _RecordingDP)
    monkeypatch.setattr(nn.parallel, "DistributedDataParallel", _RecordingDDP)
    setup = DeviceSetup(torch.device("cpu"), ids)  # .to() the CPU: no GPU needed
    scaling = plan_scaling(32, 1e-4, max(len(ids), 1), PD, LIN)
    model = nn.Linear(2, 2)
    out = wrap_model(model, RunPlan("test", strategy, scaling, setup, Precision.fp32))
    if wrapper is None:
        assert out is model
        return
    assert type(out) is wrapper and out.module is model
    if wrapper is _RecordingDP:
        assert out.device_ids == ids and out.output_device == ids[0]
    else:
        assert out.device_ids is None  # on the CPU DDP takes no device ids
