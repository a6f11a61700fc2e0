"""Checkpoint files: the one place they are written and read.

A checkpoint keeps the users' old format, a dict with `model_state_dict`, `optimizer_state_dict`,
`epoch`, `best_f1` and `config`, so files move freely between the old script and this one; ours
add the rest of the train state (`TrainState.state_dict()`) and the MLflow run they belong to.
The model state is always the unwrapped model's: no `module.` (DataParallel/DDP) or `_orig_mod.`
(torch.compile) prefix. Files are written atomically and read with `weights_only=True`.
"""

from __future__ import annotations

import pickle
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tennis_exp.engine.state import TrainState
from tennis_exp.errors import UserError, first_line
from tennis_exp.files import atomic_write

WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# The envelope around the train state: `resume` needs these and the train state's own keys.
_RUN_KEYS = ("config", "mlflow_run_id", "mlflow_tracking_uri")


@dataclass
class Checkpoint:
    """A checkpoint file's content. Weights alone (the old script's `best_model.pth`, a bare
    state dict) have no train state and no run."""

    model_state: dict[str, torch.Tensor]
    config: dict[str, Any] | None = None
    train_state: dict[str, Any] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    mlflow_tracking_uri: str | None = None
    path: Path | None = None  # where it was read from
    source: str | None = None  # the model URI it was resolved from (models:/..., runs:/...)

    def payload(self) -> dict[str, Any]:
        return {
            "model_state_dict": self.model_state,
            "config": self.config,
            **self.train_state,
            "mlflow_run_id": self.mlflow_run_id,
            "mlflow_tracking_uri": self.mlflow_tracking_uri,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any], path: Path | None = None) -> Checkpoint:
        if "model_state_dict" not in payload:  # a bare state dict
            return cls(strip_prefixes(payload), path=path)
        rest = {k: v for k, v in payload.items() if k != "model_state_dict" and k not in _RUN_KEYS}
        return cls(
            strip_prefixes(payload["model_state_dict"]),
            payload.get("config"),
            rest,
            payload.get("mlflow_run_id"),
            payload.get("mlflow_tracking_uri"),
            path,
        )

    @property
    def name(self) -> str:
        """How the user named it: its model URI, else its file."""
        return self.source or str(self.path)

    @property
    def run_dir(self) -> Path:
        """The output directory of the run that wrote it (<run dir>/checkpoints/<file>)."""
        return self.path.parent.parent


def strip_prefixes(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Remove wrapper prefixes, however nested (`module._orig_mod.lstm.weight` -> `lstm.weight`)."""
    out = {}
    for key, value in state_dict.items():
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DataParallel, DistributedDataParallel and torch.compile wrappers."""
    while True:
        if isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save(path: Path, checkpoint: Checkpoint) -> None:
    """Write atomically: a kill or a full disk mid-save keeps the previous file."""
    with atomic_write(path) as tmp:
        torch.save(checkpoint.payload(), tmp)


def load(path: str | Path, source: str | None = None) -> Checkpoint:
    """Read with `weights_only=True`; never falls back to unsafe unpickling. `source`: the
    model URI the file was downloaded for, which messages name instead of the file."""
    path = Path(path)
    name = source or path
    if not path.is_file():
        raise UserError(f"checkpoint {name} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower():
            raise UserError(
                f"checkpoint {name} holds Python objects that weights-only loading refuses; "
                "it is not loaded unsafely: re-save it with tensors and plain types only"
            ) from None
        raise UserError(f"checkpoint {name} is corrupt: {first_line(err)}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise UserError(
            f"checkpoint {name} is truncated or not a PyTorch file: {first_line(err)}"
        ) from None
    if not isinstance(payload, dict):
        raise UserError(f"checkpoint {name} holds a {type(payload).__name__}, not a dict")
    checkpoint = Checkpoint.from_payload(payload, path)
    checkpoint.source = source
    return checkpoint


def load_resumable(target: str) -> Checkpoint:
    """The checkpoint a `resume=<run dir or checkpoint>` points at, checked to be resumable."""
    path = Path(target)
    if path.is_dir():
        path = path / "checkpoints" / "last.pth"
    checkpoint = load(path)
    payload = checkpoint.payload()
    missing = [key for key in (*TrainState.REQUIRED, *_RUN_KEYS) if payload.get(key) is None]
    if missing:
        raise UserError(
            f"resume={target}: {path} cannot be resumed (it lacks {', '.join(missing)}); "
            "start from its weights with model.init_from instead"
        )
    return checkpoint


def load_weights(model: nn.Module, source: Checkpoint | str | Path) -> Checkpoint:
    """Load a checkpoint's weights (a file, or one already read) into `model`, wrapped or not,
    which they must fit exactly; return the checkpoint."""
    checkpoint = source if isinstance(source, Checkpoint) else load(source)
    target = unwrap(model)
    state = checkpoint.model_state
    expected = target.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        k for k in set(state) & set(expected) if state[k].shape != expected[k].shape
    )
    if missing or unexpected or mismatched:
        raise UserError(
            f"checkpoint {checkpoint.name} does not fit this model (another architecture?): "
            f"missing {_some(missing)}, unexpected {_some(unexpected)}, "
            f"shape mismatch {_some(mismatched)}"
        )
    target.load_state_dict(state)
    return checkpoint


def _some(keys: list[str], shown: int = 4) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return f"{len(keys)} keys [{', '.join(keys[:shown])}{more}]"


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends, so an epoch's checkpoint and its metrics are
    written together or not at all."""
    held = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


class StopSignal:
    """SIGINT and SIGTERM as a request to stop: the training loop finishes its step, saves where
    it is and exits, instead of being cut mid-step. A second signal stops at once."""

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignal:
        self._previous = {s: signal.signal(s, self._handle) for s in self._SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.name:
            raise KeyboardInterrupt(f"stopped by {self.name}")
        self.name = signal.Signals(signum).name
