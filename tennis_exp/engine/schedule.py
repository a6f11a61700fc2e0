"""The learning rate of every optimizer step, as pure functions of the step.

A scaled-up LR (the guide's rule: 1e-4 at batch 32 is 2e-4 at 64) is reached by a linear
warmup from the unscaled LR (Goyal et al.), which lands on the plan exactly at the last warmup
step; from then on the LR is the plan times what the plateau rule has done to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# torch.optim.lr_scheduler.ReduceLROnPlateau's defaults, which the plateau rule reproduces:
# an improvement must beat the best by this relative margin, and a reduction smaller than
# EPS is not made.
THRESHOLD = 1e-4
EPS = 1e-8


@dataclass(frozen=True)
class LrSchedule:
    planned: float  # the scaling plan's LR
    lr_factor: float  # planned / the unscaled LR (>= 1)
    warmup_steps: int

    @classmethod
    def for_run(
        cls, planned: float, lr_factor: float, warmup_epochs: int, steps_per_epoch: int
    ) -> LrSchedule:
        """Warm up only an LR the plan scaled up: an unscaled one has nothing to reach."""
        warmup = warmup_epochs * steps_per_epoch if lr_factor > 1 else 0
        return cls(planned, lr_factor, warmup)

    def lr(self, step: int, plateau_scale: float = 1.0) -> float:
        """The LR of optimizer step `step` (0-based): a ramp from planned / lr_factor that
        reaches `planned` at step warmup_steps - 1, then planned x plateau_scale (the plateau
        rule acts only after the warmup)."""
        if step + 1 < self.warmup_steps:
            start = self.planned / self.lr_factor
            return start + (self.planned - start) * (step + 1) / self.warmup_steps
        return self.planned * plateau_scale  # the plan itself, not a sum that rounds near it

    def warming_up(self, steps_done: int) -> bool:
        """Whether the warmup still has steps to take (the plateau rule waits for its end)."""
        return steps_done < self.warmup_steps


@dataclass(frozen=True)
class Plateau:
    """ReduceLROnPlateau (mode max, cooldown 0) as a value: its best metric, the epochs since
    it improved, and the scale its reductions have applied to the planned LR."""

    best: float = -math.inf
    bad_epochs: int = 0
    scale: float = 1.0


def plateau_step(
    plateau: Plateau, metric: float, patience: int, factor: float, planned_lr: float
) -> Plateau:
    """The plateau rule after one epoch's metric: more than `patience` epochs without an
    improvement multiply the LR by `factor`."""
    if metric > plateau.best * (1 + THRESHOLD):
        return Plateau(metric, 0, plateau.scale)
    bad = plateau.bad_epochs + 1
    if bad <= patience:
        return Plateau(plateau.best, bad, plateau.scale)
    old = planned_lr * plateau.scale
    scale = plateau.scale * factor if old - old * factor > EPS else plateau.scale
    return Plateau(plateau.best, 0, scale)
