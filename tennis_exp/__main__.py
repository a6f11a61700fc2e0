"""Command line: `python -m tennis_exp [overrides]`, also installed as `tennis-exp`."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from tennis_exp.config import register_configs
from tennis_exp.tracking import sweep_failures

log = logging.getLogger("tennis_exp")

register_configs()


# User mistakes met inside jobs. A job that raises makes Hydra print a multi-line report, and
# `sys.exit` in a job would abort a sweep; so a job reports its mistake here and returns NaN.
_failures: list[str] = []
_show_traceback = False


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def run(cfg: DictConfig) -> float:
    """One job: returns the best val macro-F1, the value sweepers optimise (NaN if it failed)."""
    from tennis_exp.train import train  # torch and mlflow load after the config is known good

    hc = HydraConfig.get()
    multirun = hc.mode is RunMode.MULTIRUN
    try:
        return train(
            cfg,
            output_dir=Path(hc.runtime.output_dir),
            overrides=list(hc.overrides.task),
            sweep_dir=hc.sweep.dir if multirun else None,
        )
    except Exception as err:
        if _show_traceback or not is_user_error(err):
            raise
        _failures.append(one_line(err))
        if multirun:  # the sweep goes on with its next job
            log.error(
                "job %s (%s) failed: %s", hc.job.num, " ".join(hc.overrides.task), _failures[-1]
            )
            from tennis_exp.distributed import process_rank
            from tennis_exp.tracking import record_failed_job

            if process_rank() != 0:  # one DDP rank of the job: rank 0 records the job's failure
                return float("nan")
            try:
                record_failed_job(cfg, Path(hc.runtime.output_dir), hc.sweep.dir, _failures[-1])
            except Exception as tracking_err:  # the job's own error is the one to report
                log.warning("could not record the failed job in MLflow: %s", tracking_err)
        return float("nan")


def one_line(err: BaseException) -> str:
    """A user mistake as one line: Hydra and OmegaConf spread theirs over several."""
    options = getattr(err, "options", None)
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if options:  # an unknown config group option
        return f"{lines[0]}; valid options: {', '.join(options)}"
    text = lines[0] if lines else type(err).__name__
    cause = err.__cause__
    if cause is not None and getattr(cause, "msg", None):
        text += f": {str(cause.msg).strip().splitlines()[0]}"
    return text


def is_user_error(err: BaseException) -> bool:
    return isinstance(err, CompactHydraException | MissingMandatoryValue)


def main() -> None:
    global _show_traceback
    _show_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    # Let composition errors reach us instead of Hydra's multi-line report.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        run()
    except KeyboardInterrupt as err:
        sys.exit(f"Interrupted ({err or 'Ctrl-C'})")
    except Exception as err:
        if _show_traceback or not is_user_error(err):
            raise
        _failures.append(one_line(err))
    # Jobs that a submitit launcher ran in other processes are known by their FAILED runs.
    failures = _failures or sweep_failures
    if len(failures) == 1:
        sys.exit(f"Error: {failures[0]}")
    if failures:
        sys.exit(f"Error: {len(failures)} jobs failed; the first: {failures[0]}")


if __name__ == "__main__":
    main()
