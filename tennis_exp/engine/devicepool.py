"""GPUs for the jobs of a sweep that run side by side on one machine (hydra/launcher=parallel).

Each job holds one lock file per GPU it uses, in the sweep directory, for as long as it runs,
and takes GPUs that no running job holds. Jobs finish at different times, so a job's number
says nothing about which GPUs are free; the locks do. The OS releases a dead job's locks.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from omegaconf import DictConfig

from tennis_exp.config import Accelerator
from tennis_exp.errors import UserError
from tennis_exp.files import locked

log = logging.getLogger(__name__)

POOL_DIR = ".gpus"  # under the sweep directory
# Launchers that run a sweep's jobs side by side in processes of this machine.
SIDE_BY_SIDE = ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",)


@contextmanager
def claimed(pool: Path, wanted: int, visible: int, busy_hint: str = "") -> Iterator[list[int]]:
    """`wanted` GPU ids out of `visible` that no other holder has, held until the block ends;
    one line (a UserError) when fewer are free."""
    pool.mkdir(parents=True, exist_ok=True)
    with ExitStack() as gpus:
        # One job places itself at a time: two jobs taking GPUs at once could each get part
        # of what they need and both fail, where one of them fits.
        with locked(pool / "placing.lock"):
            ids = []
            for gpu in range(visible):
                if len(ids) == wanted:
                    break
                if gpus.enter_context(locked(pool / f"gpu{gpu}.lock", wait=False)):
                    ids.append(gpu)
            if len(ids) < wanted:
                raise UserError(
                    f"no {wanted} free GPU(s) for this job: {visible - len(ids)} of the "
                    f"{visible} visible are held by other jobs of the sweep{busy_hint}"
                )
        yield ids


@contextmanager
def job_devices(cfg: DictConfig, sweep_dir: str | None, launcher) -> Iterator[DictConfig]:
    """The job's config, with `hardware.device_ids` set to GPUs of its own while the block runs
    when the job is one of a sweep's jobs running side by side on this machine's GPUs.

    `launcher`: the sweep's launcher config (hydra.launcher). A profile asking for more GPUs
    than are visible, or none visible, is left to `select_devices` to report.
    """
    hw = cfg.hardware
    side_by_side = sweep_dir is not None and launcher.get("_target_") in SIDE_BY_SIDE
    if side_by_side:
        # joblib's worker makes its own 'loky' the default start method, which a process the
        # job starts (a DDP rank, a loader worker) cannot set up: back to the platform's.
        multiprocessing.set_start_method(None, force=True)
    if (
        not side_by_side
        or hw.accelerator is not Accelerator.cuda
        or hw.device_ids is not None
        or cfg.dry_run
    ):
        yield cfg
        return
    import torch

    visible = torch.cuda.device_count()
    if not 0 < hw.devices <= visible:
        yield cfg
        return
    hint = (
        f"; hydra.launcher.n_jobs={launcher.n_jobs} jobs of hardware.devices={hw.devices} "
        f"run at once: lower n_jobs"
    )
    with claimed(Path(sweep_dir) / POOL_DIR, hw.devices, visible, hint) as ids:
        log.info("This job of the parallel sweep holds GPU(s) %s", ids)
        cfg.hardware.device_ids = ids
        yield cfg
