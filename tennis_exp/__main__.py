"""`python -m tennis_exp [overrides]` (also installed as `tennis-exp`): train one run, or a
sweep of them with `--multirun`."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from tennis_exp.cli import is_user_error, one_line, reported, run_command, traceback_wanted
from tennis_exp.config import register_configs

log = logging.getLogger("tennis_exp")

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@reported
def run(cfg: DictConfig) -> float:
    """One job: returns the best val macro-F1, the value sweepers optimise (None if it failed,
    which Optuna's sweeper records as a failed trial)."""
    # torch and mlflow load once the config is good
    from tennis_exp.engine.devicepool import job_devices
    from tennis_exp.engine.train import train

    hc = HydraConfig.get()
    output_dir = Path(hc.runtime.output_dir)
    sweep_dir = hc.sweep.dir if hc.mode is RunMode.MULTIRUN else None
    try:
        with job_devices(cfg, sweep_dir, hc.launcher) as job_cfg:
            return train(job_cfg, output_dir, list(hc.overrides.task), sweep_dir)
    except Exception as err:
        # The sweep goes on with its next job (`reported` returns None): this one stays a row.
        if sweep_dir and is_user_error(err) and not traceback_wanted():
            sweep_job_failed(cfg, output_dir, hc, one_line(err))
        raise


def sweep_job_failed(cfg: DictConfig, output_dir: Path, hc, message: str) -> None:
    from tennis_exp.engine.distributed import process_rank
    from tennis_exp.tracking.sweep import record_failed_job

    log.error("job %s (%s) failed: %s", hc.job.num, " ".join(hc.overrides.task), message)
    if process_rank() != 0:  # one DDP rank of the job: rank 0 records the job's failure
        return
    try:
        record_failed_job(cfg, output_dir, hc.sweep.dir, message, list(hc.overrides.task))
    except Exception as tracking_err:  # the job's own error is the one to report
        log.warning("could not record the failed job in MLflow: %s", tracking_err)


def main() -> None:
    run_command(run)


if __name__ == "__main__":
    main()
