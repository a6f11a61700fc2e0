"""Hardware profiles: the guide's batch and LR scaling rules, device selection, model wrapping.

Everything that depends on how many devices a run uses is decided here, once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace

import torch
from torch import nn

from tennis_exp.config import Accelerator, BatchScaling, LrScaling, Precision, Strategy
from tennis_exp.errors import UserError

log = logging.getLogger(__name__)

_LR_EXPONENT = {LrScaling.none: 0.0, LrScaling.linear: 1.0, LrScaling.sqrt: 0.5}


@dataclass(frozen=True)
class ScalingPlan:
    devices: int
    per_device_batch_size: int
    effective_batch_size: int
    learning_rate: float
    lr_factor: float  # learning_rate / training.learning_rate
    batch_rule: str  # how the batch sizes were derived, for the banner
    lr_rule: str  # how the LR was derived, for the banner


def plan_scaling(
    batch_size: int,
    learning_rate: float,
    devices: int,
    batch_scaling: BatchScaling,
    lr_scaling: LrScaling,
) -> ScalingPlan:
    """Turn the user's batch size and LR into per-device batch, effective batch and LR.

    per_device: `batch_size` is per device, effective = batch_size x devices (the guide's rule).
    constant: `batch_size` is the effective batch, split evenly over the devices.
    The LR is `learning_rate` at `batch_size` on one device, scaled by
    (effective / batch_size) ** {none: 0, linear: 1, sqrt: 1/2}.
    """
    if batch_scaling is BatchScaling.per_device:
        per_device, effective = batch_size, batch_size * devices
        batch_rule = f"per_device: {batch_size} per device x {devices} device(s)"
    else:
        if batch_size % devices:
            raise UserError(
                f"training.batch_size={batch_size} cannot be split evenly over "
                f"hardware.devices={devices} with hardware.batch_scaling=constant: "
                f"use a multiple of {devices}, or hardware.batch_scaling=per_device"
            )
        per_device, effective = batch_size // devices, batch_size
        batch_rule = f"constant: {batch_size} effective / {devices} device(s)"
    exponent = _LR_EXPONENT[lr_scaling]
    factor = (effective / batch_size) ** exponent
    lr_rule = f"{lr_scaling.value}: {learning_rate:g} x ({effective}/{batch_size})^{exponent:g}"
    return ScalingPlan(
        devices=devices,
        per_device_batch_size=per_device,
        effective_batch_size=effective,
        learning_rate=learning_rate * factor,
        lr_factor=factor,
        batch_rule=batch_rule,
        lr_rule=lr_rule,
    )


def loader_batch_size(plan: ScalingPlan, strategy: Strategy) -> int:
    """Batch size for one process's DataLoader.

    DataParallel splits the loader's batch across its devices, so the loader must yield the
    effective batch; otherwise every GPU gets per_device / devices samples and the guide's
    rule silently fails. Under DDP every process loads its own per-device batch.
    """
    return plan.effective_batch_size if strategy is Strategy.dp else plan.per_device_batch_size


@dataclass(frozen=True)
class DeviceSetup:
    device: torch.device  # where the model and each batch live (the first device)
    device_ids: list[int]  # CUDA device ids used by this run; empty on the CPU
    fallback: bool = False  # a GPU profile running on the CPU: no GPU was visible

    def for_rank(self, local_rank: int) -> DeviceSetup:
        """A DDP process's own device: the local rank's GPU (the CPU stays the CPU)."""
        if self.device.type != "cuda":
            return self
        return replace(self, device=torch.device("cuda", self.device_ids[local_rank]))


def device_ids(hw) -> list[int]:
    """The CUDA ids a profile uses: `hardware.device_ids` when given (each job of a parallel
    sweep is given its own), else the first `hardware.devices`."""
    return list(range(hw.devices)) if hw.device_ids is None else list(hw.device_ids)


def _check_device_ids(hw, visible_cuda: int | None) -> list[int]:
    """`device_ids(hw)`, refused in one line when they do not name `hardware.devices` distinct
    visible devices (`visible_cuda` None: not checked against the machine, as in a dry run)."""
    ids = device_ids(hw)
    if hw.device_ids is None:
        return ids
    if len(ids) != hw.devices:
        raise UserError(
            f"hardware.device_ids={ids} names {len(ids)} device(s) but hardware.devices="
            f"{hw.devices}: give one id per device"
        )
    if len(set(ids)) != len(ids) or min(ids) < 0:
        raise UserError(f"hardware.device_ids={ids} must be distinct ids >= 0")
    if visible_cuda is not None and max(ids) >= visible_cuda:
        env = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise UserError(
            f"hardware.device_ids={ids} but {visible_cuda} CUDA device(s) are visible "
            f"(CUDA_VISIBLE_DEVICES={env if env is not None else 'unset'}): ids run from 0 to "
            f"{visible_cuda - 1}"
        )
    return ids


def select_devices(hw, visible_cuda: int, dry_run: bool = False) -> DeviceSetup:
    """Choose the devices a hardware profile asks for, given how many CUDA devices are visible.

    Devices are picked by id (`device_ids`), never by changing CUDA_VISIBLE_DEVICES: sweep jobs
    share one process and CUDA caches the device count at first use. A dry run plans without
    the devices.
    """
    strategy, wanted = hw.strategy, hw.devices
    if hw.accelerator is Accelerator.cpu:
        if wanted > 1 and strategy is Strategy.dp:
            raise UserError(
                f"hardware.devices={wanted} with hardware.accelerator=cpu: DataParallel needs "
                "CUDA devices; use hardware.devices=1 on the CPU"
            )
        return DeviceSetup(torch.device("cpu"), [])
    if dry_run:
        ids = _check_device_ids(hw, None)
        return DeviceSetup(torch.device("cuda", ids[0]), ids)
    if visible_cuda == 0 and wanted == 1:
        log.warning("hardware=%s: no CUDA device is visible; falling back to the CPU", hw.name)
        return DeviceSetup(torch.device("cpu"), [], fallback=True)
    if wanted > visible_cuda:
        env = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise UserError(
            f"hardware={hw.name} needs {wanted} CUDA device(s) but {visible_cuda} visible "
            f"(CUDA_VISIBLE_DEVICES={env if env is not None else 'unset'}); pick a profile with "
            f"at most {visible_cuda} device(s) or set hardware.devices"
        )
    ids = _check_device_ids(hw, visible_cuda)
    return DeviceSetup(torch.device("cuda", ids[0]), ids)


def resolve_precision(requested: Precision, device_type: str, bf16_supported: bool) -> Precision:
    """The precision a run computes in: `auto` is bf16 on a GPU that has it, else fp32."""
    if device_type != "cuda":
        if requested is Precision.fp16:
            raise UserError(
                "hardware.precision=fp16 needs a CUDA GPU (its gradient scaler is CUDA's); "
                "on the CPU use bf16 or fp32"
            )
        return Precision.fp32 if requested is Precision.auto else requested
    if requested is Precision.auto:
        return Precision.bf16 if bf16_supported else Precision.fp32
    if requested is Precision.bf16 and not bf16_supported:
        raise UserError(
            "hardware.precision=bf16: this GPU has no bfloat16 support; "
            "use fp16 (with gradient scaling) or fp32"
        )
    return requested


_AUTOCAST_DTYPES = {Precision.fp16: torch.float16, Precision.bf16: torch.bfloat16}


def autocast(precision: Precision, device_type: str) -> torch.autocast:
    """Autocast to the precision's dtype; a no-op for fp32."""
    return torch.autocast(
        device_type,
        dtype=_AUTOCAST_DTYPES.get(precision),
        enabled=precision in _AUTOCAST_DTYPES,
    )


@dataclass(frozen=True)
class RunPlan:
    """What a run uses, decided once before any work and handed to every rank: the strategy,
    the scaling, the devices and the precision. A DDP rank's own copy is `for_rank`'s."""

    hardware: str  # the profile's name
    strategy: Strategy
    scaling: ScalingPlan
    setup: DeviceSetup
    precision: Precision
    dry_run: bool = False

    @property
    def device(self) -> torch.device:
        return self.setup.device

    @property
    def world_size(self) -> int:
        """Processes that train: one per device under DDP, one under DataParallel."""
        return self.scaling.devices if self.strategy is Strategy.ddp else 1

    @property
    def loader_batch_size(self) -> int:
        return loader_batch_size(self.scaling, self.strategy)

    @property
    def backend(self) -> str:
        """DDP's process group backend."""
        return "nccl" if self.device.type == "cuda" else "gloo"

    def for_rank(self, local_rank: int) -> RunPlan:
        """A DDP rank's own plan: its device is the local rank's GPU."""
        if self.strategy is not Strategy.ddp:
            return self
        return replace(self, setup=self.setup.for_rank(local_rank))

    def params(self) -> dict[str, object]:
        """What the run really uses, as MLflow params (the config says what was asked)."""
        return {
            "scaling.devices": self.scaling.devices,
            "scaling.world_size": self.world_size,
            "scaling.per_device_batch_size": self.scaling.per_device_batch_size,
            "scaling.effective_batch_size": self.scaling.effective_batch_size,
            "scaling.learning_rate": self.scaling.learning_rate,
            "run.device": self.device.type,
            "run.device_ids": ",".join(map(str, self.setup.device_ids)) or "none",
            "run.precision": self.precision.value,
        }

    def banner(self, train_size: int | None) -> list[str]:
        """The lines the users' old script printed, then the plan (train_size None: dry run)."""
        lines = [f"Using device: {self.device.type}"]
        ids = list(self.setup.device_ids)
        if len(ids) > 1:
            lines += [f"Using {len(ids)} GPUs for training!", f"GPU IDs: {ids}"]
        scaling = self.scaling
        lines += [
            f"Strategy: ddp (backend {self.backend}, world size {scaling.devices})"
            if self.strategy is Strategy.ddp
            else "Strategy: dp",
            f"Precision: {self.precision.value}",
            f"Train set: {train_size} samples"
            if train_size is not None
            else "Train set: not loaded (dry run; devices not checked)",
            f"Per-device batch size: {scaling.per_device_batch_size} ({scaling.batch_rule})",
            f"Effective batch size: {scaling.effective_batch_size}",
            f"Learning rate: {scaling.learning_rate:g} ({scaling.lr_rule})",
        ]
        return lines


def plan_run(cfg, world_size: int | None = None) -> RunPlan:
    """The run's plan from its config. `world_size`: the process group's, when torchrun or
    SLURM started the ranks (across nodes it exceeds one node's devices). A dry run plans
    without devices and shows the precision as asked."""
    hw = cfg.hardware
    scaling = plan_scaling(
        cfg.training.batch_size,
        cfg.training.learning_rate,
        world_size or hw.devices,
        hw.batch_scaling,
        hw.lr_scaling,
    )
    visible = torch.cuda.device_count() if hw.accelerator is Accelerator.cuda else 0
    setup = select_devices(hw, visible, dry_run=cfg.dry_run)
    precision = hw.precision
    if not cfg.dry_run:
        bf16 = setup.device.type == "cuda" and torch.cuda.is_bf16_supported()
        precision = resolve_precision(hw.precision, setup.device.type, bf16)
    return RunPlan(hw.name, hw.strategy, scaling, setup, precision, cfg.dry_run)


def wrap_model(model: nn.Module, plan: RunPlan) -> nn.Module:
    """Move the module to its device; wrap it in DistributedDataParallel (a DDP rank) or in
    DataParallel (one process driving several GPUs). Wrap only what trains: DataParallel
    copies every parameter it holds to every GPU at every step."""
    model = model.to(plan.device)
    if plan.strategy is Strategy.ddp:
        ids = [plan.device.index] if plan.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)
    ids = list(plan.setup.device_ids)
    if len(ids) > 1:
        return nn.DataParallel(model, device_ids=ids, output_device=ids[0])
    return model
