"""The train state: everything besides the weights that a run needs to continue where it
stopped, with `state_dict()` / `load_state_dict()` (torchtitan's Stateful trainer is the model).
`checkpoint.py` saves and reads it; these are the names of its keys in a checkpoint file."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from tennis_exp.engine.schedule import Plateau
from tennis_exp.errors import UserError


@dataclass
class EpochProgress:
    """The epoch in progress: its batches done and running sums (a resumed epoch logs the
    same metrics as one never stopped)."""

    epoch: int
    batches_done: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    # [true, predicted] counts of the training predictions: the epoch's train macro-F1.
    # None in a checkpoint from before it was kept: that epoch's F1 then counts what is left.
    confusion: list[list[int]] | None = None


class TrainState:
    """Epoch, step, best F1, the plateau rule, the position inside an epoch, each rank's RNG
    states, and the optimizer and gradient scaler whose states travel with them."""

    # What a checkpoint must hold to be resumed (older ones lack the scaler and progress).
    REQUIRED = (
        "optimizer_state_dict",
        "scheduler_state_dict",
        "epoch",
        "best_f1",
        "global_step",
        "rng_states",
    )

    def __init__(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
        self.optimizer = optimizer
        self.scaler = scaler
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken
        self.best_f1 = -1.0
        self.plateau = Plateau()
        self.progress: EpochProgress | None = None  # set while an epoch is under way
        self.rng_states: list[dict[str, torch.Tensor]] = []  # per rank, gathered when saved

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer_state_dict": self.optimizer.state_dict(),
            "scheduler_state_dict": asdict(self.plateau),
            "scaler_state_dict": self.scaler.state_dict(),
            "epoch": self.epoch,
            "epoch_progress": asdict(self.progress) if self.progress else None,
            "best_f1": self.best_f1,
            "global_step": self.step,
            "rng_states": self.rng_states,
        }

    def load_state_dict(self, state: dict[str, Any], planned_lr: float) -> None:
        """`planned_lr` reads the plateau state of a checkpoint from before the train state
        (a ReduceLROnPlateau's state dict)."""
        self.optimizer.load_state_dict(state["optimizer_state_dict"])
        self.scaler.load_state_dict(state.get("scaler_state_dict") or {})
        self.epoch, self.best_f1 = state["epoch"], state["best_f1"]
        self.step = state["global_step"]
        self.plateau = _plateau(state["scheduler_state_dict"], planned_lr)
        progress = state.get("epoch_progress")
        self.progress = EpochProgress(**progress) if progress else None
        self.rng_states = state["rng_states"]


def _plateau(saved: dict[str, Any], planned_lr: float) -> Plateau:
    if "num_bad_epochs" not in saved:
        return Plateau(**saved)
    # A ReduceLROnPlateau's state: its reductions are the powers of its factor in the LR it
    # reached (rounded: an earlier warmup stopped a little short of the plan).
    reductions = round(math.log(saved["_last_lr"][0] / planned_lr) / math.log(saved["factor"]))
    if reductions < 0:
        raise UserError(
            f"the checkpoint's LR {saved['_last_lr'][0]:g} is above the planned {planned_lr:g}: "
            "it was written with other scaling settings"
        )
    return Plateau(saved["best"], saved["num_bad_epochs"], saved["factor"] ** reductions)
