"""`resume=<run dir or checkpoint>`: which overrides may come with it, the epoch the resumed run
trains to, and the config it continues with.

The same rule is checked twice: by `ResumeCheck`, a Hydra callback that runs before Hydra
writes the job's folder, so that a refused resume leaves nothing behind, and by `train` for
its other callers (in-process runs, sweeps' jobs).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from tennis_exp.config import from_container
from tennis_exp.errors import RefusedBeforeRun, UserError
from tennis_exp.tracking.runs import check_run_in_store, tracking_uri

if TYPE_CHECKING:
    from tennis_exp.engine.checkpoint import Checkpoint

# The overrides that may come with resume=: how long the run goes on, its loaders, the console,
# where its own MLflow store is reached from here, and which devices (of the same count:
# hardware.devices, and so the batch and LR scaling, stay) run it. Any other key would make the
# run something it was not configured as, and is refused.
RESUME_KEYS = (
    "training.epochs",
    "training.num_workers",
    "training.prefetch_factor",
    "progress_bar",
    "tracking.uri",
    "tracking.retry_s",
    "tracking.system_metrics",
    "tracking.log_checkpoint",
    "hardware.device_ids",
)
# MLflow params cannot change: an extended run keeps its `training.epochs` param (the epochs it
# was started with) and gets this tag, the epochs it now trains to.
EPOCHS_TAG = "training.epochs"


def override_keys(overrides: Sequence[str] | None) -> list[str]:
    """The keys and config groups that command-line overrides set, `resume` itself left out."""
    parsed = OverridesParser.create().parse_overrides(list(overrides or []))
    return [o.key_or_group for o in parsed if o.key_or_group != "resume"]


def allowed_keys(target: str, overrides: Sequence[str] | None) -> list[str]:
    """The keys `overrides` set, all in RESUME_KEYS; otherwise a UserError naming the others."""
    keys = override_keys(overrides)
    refused = [key for key in keys if key not in RESUME_KEYS]
    if refused:
        raise UserError(
            f"resume={target} continues the run as it was configured; {', '.join(refused)} "
            f"cannot change on resume (allowed: {', '.join(RESUME_KEYS)})"
        )
    return keys


def epochs_to_run(done: int, planned: int, requested: int | None) -> int:
    """The last epoch of the resumed run: the planned one, or `training.epochs` when given and
    above the epochs done (more extends a run, finished or not; fewer, but above those done,
    ends an interrupted run sooner). The planned number again is a plain resume."""
    if requested is None or requested == planned:
        return planned
    if requested <= done:
        raise UserError(
            f"training.epochs={requested}: the run to resume has done {done} epochs already; "
            f"give more to extend it, or leave training.epochs out to resume it as planned "
            f"({planned} epochs)"
        )
    return requested


def resumed_config(resume: Checkpoint, cfg: DictConfig, keys: list[str]) -> DictConfig:
    """The config of the run that `resume` continues: its saved one, with the values `cfg` (the
    config the command composed) gives the allowed `keys`, logging to the run's own store."""
    saved = from_container(resume.config)
    for key in keys:
        OmegaConf.update(saved, key, OmegaConf.select(cfg, key), merge=False)
    requested = cfg.training.epochs if "training.epochs" in keys else None
    done, planned = resume.train_state["epoch"], resume.config["training"]["epochs"]
    saved.training.epochs = epochs_to_run(done, planned, requested)
    saved.resume = str(resume.path)
    # The store the run was logged to, unless told where it is reached from here.
    if "tracking.uri" not in keys and not os.environ.get("MLFLOW_TRACKING_URI"):
        saved.tracking.uri = resume.mlflow_tracking_uri
    return saved


def resume_run(cfg: DictConfig, overrides: Sequence[str] | None) -> tuple[Checkpoint, DictConfig]:
    """The checkpoint `cfg.resume` names and the config its run continues with, every check
    done before anything is written: the overrides, the checkpoint, the epochs, the store."""
    from tennis_exp.engine import checkpoint  # torch loads only for a resume

    keys = allowed_keys(cfg.resume, overrides)
    resume = checkpoint.load_resumable(cfg.resume)
    resumed = resumed_config(resume, cfg, keys)
    check_run_in_store(tracking_uri(resumed), resume.mlflow_run_id)
    return resume, resumed


class ResumeCheck(Callback):
    """Checks a resume before Hydra writes the job's folder and its log: a refused resume
    writes nothing, and touches no MLflow run."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.get("resume"):
            return
        try:
            resume_run(config, config.hydra.overrides.task)
        except UserError as err:
            raise RefusedBeforeRun(str(err)) from err
