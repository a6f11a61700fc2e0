"""A run's GPUs as an epoch measures them: peak memory, and waiting for their queued work
before a time is read. Nothing to do on the CPU."""

from __future__ import annotations

import torch

from tennis_exp.config import Strategy
from tennis_exp.engine.hardware import RunPlan


def reset_peak_memory(plan: RunPlan) -> None:
    if plan.device.type != "cuda":
        return
    torch.cuda.reset_peak_memory_stats(plan.device)
    for i in plan.setup.device_ids if plan.strategy is Strategy.dp else []:
        torch.cuda.reset_peak_memory_stats(i)


def peak_memory(plan: RunPlan) -> dict[str, float]:
    """Peak allocated memory per GPU this epoch, in MiB (GPU 0 carries DataParallel's extra).
    Under DDP each rank sees only its own GPU: this is rank 0's."""
    if plan.device.type != "cuda":
        return {}
    ids = plan.setup.device_ids if plan.strategy is Strategy.dp else [plan.device.index]
    return {f"perf/peak_mem_mb/gpu{i}": torch.cuda.max_memory_allocated(i) / 2**20 for i in ids}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
