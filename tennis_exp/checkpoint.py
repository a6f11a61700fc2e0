"""Checkpoints: atomic writes, weights-only loading, wrapper prefixes.

A checkpoint is the users' old format, a dict with `model_state_dict`, `optimizer_state_dict`,
`epoch`, `best_f1` and `config`, so files move freely between the old script and this one.
The model state is always the unwrapped model's: no `module.` (DataParallel/DDP) or
`_orig_mod.` (torch.compile) prefix.
"""

from __future__ import annotations

import errno
import os
import pickle
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tennis_exp.errors import UserError, first_line

WRAPPER_PREFIXES = ("module.", "_orig_mod.")


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


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temporary file beside `path`, then rename: a kill mid-save keeps the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(
                f"no space left to write {path} ({err.strerror}); "
                + ("the previous one is kept" if path.exists() else "nothing was written")
            ) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load with `weights_only=True`; never falls back to unsafe unpickling."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower():
            raise UserError(
                f"checkpoint {path} holds Python objects that weights-only loading refuses; "
                "it is not loaded unsafely: re-save it with tensors and plain types only"
            ) from None
        raise UserError(f"checkpoint {path} is corrupt: {first_line(err)}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise UserError(
            f"checkpoint {path} is truncated or not a PyTorch file: {first_line(err)}"
        ) from None
    if not isinstance(payload, dict):
        raise UserError(f"checkpoint {path} holds a {type(payload).__name__}, not a dict")
    return payload


def model_state(payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint dict, or the dict itself if it is a bare state dict."""
    state = payload.get("model_state_dict", payload)
    return strip_prefixes(state)


def load_model_weights(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load a checkpoint's weights into `model` (wrapped or not); return the checkpoint dict."""
    payload = load_checkpoint(path)
    target = unwrap(model)
    state = model_state(payload)
    expected = target.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        k for k in set(state) & set(expected) if state[k].shape != expected[k].shape
    )
    if missing or unexpected or mismatched:
        raise UserError(
            f"checkpoint {path} does not fit this model (another architecture?): "
            f"missing {_some(missing)}, unexpected {_some(unexpected)}, "
            f"shape mismatch {_some(mismatched)}"
        )
    target.load_state_dict(state)
    return payload


def _some(keys: list[str], shown: int = 4) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return f"{len(keys)} keys [{', '.join(keys[:shown])}{more}]"


# What `resume` needs beyond the weights; `last.pth` holds all of it.
RESUME_KEYS = (
    "model_state_dict",
    "optimizer_state_dict",
    "scheduler_state_dict",
    "epoch",
    "best_f1",
    "global_step",
    "config",
    "rng_states",
    "mlflow_run_id",
    "mlflow_tracking_uri",
)


def resume_checkpoint(target: str) -> tuple[Path, dict[str, Any]]:
    """The checkpoint a `resume=<run dir or checkpoint>` points at, checked to be resumable."""
    path = Path(target)
    if path.is_dir():
        path = path / "checkpoints" / "last.pth"
    payload = load_checkpoint(path)
    missing = [key for key in RESUME_KEYS if key not in payload]
    if missing:
        raise UserError(
            f"resume={target}: {path} cannot be resumed (it lacks {', '.join(missing)}); "
            "start from its weights with model.init_from instead"
        )
    return path, payload


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
