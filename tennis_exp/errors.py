"""The one exception type for user mistakes, errors told in one line, and the failure log that
carries them from a command's jobs to the command.

Failures reach the command through a file, not process state: the command names it in
$TENNIS_EXP_FAILURE_LOG, jobs in this process or in processes it started (submitit's local
executor) append to it, and at a sweep's end the sweep's callback adds the failed runs MLflow
knows of, which also covers jobs on other machines (SLURM).
"""

import os
from pathlib import Path

from hydra.errors import CompactHydraException

FAILURE_LOG = "TENNIS_EXP_FAILURE_LOG"


class UserError(CompactHydraException):
    """A mistake in the user's input (config, data, checkpoint, environment).

    Reported as its one-line message without a traceback; ``HYDRA_FULL_ERROR=1``
    shows the traceback anyway.
    """


class RefusedBeforeRun(BaseException):
    """A user mistake that a Hydra callback finds before Hydra writes the job's folder (a
    refused resume), reported as a UserError is. Not an Exception: Hydra turns a callback's
    Exception into a warning and goes on with the job."""


def first_line(err: BaseException | str) -> str:
    """A message's first line; an exception without one is named by its type."""
    text = str(err).strip()
    if text:
        return text.splitlines()[0]
    return type(err).__name__ if isinstance(err, BaseException) else ""


def one_line_report(err: BaseException) -> str:
    """How a failure is recorded (MLflow's error tag, another rank's report): a user mistake
    as the console shows it, anything else with its type, as a bug."""
    line = first_line(err)
    return line if isinstance(err, UserError) else f"{type(err).__name__}: {line}"


def record_failure(output_dir: str, message: str) -> None:
    """Add a failed job (its output directory, its one-line error) to the command's list."""
    path = os.environ.get(FAILURE_LOG)
    if not path:
        return
    try:
        with open(path, "a") as log_file:
            log_file.write(f"{output_dir}\t{message}\n")
    except OSError:  # a task on another machine: its FAILED run in MLflow tells instead
        pass


def read_failures(path: Path) -> list[str]:
    """The failed jobs' errors, in the order they were recorded, one per job."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    jobs = dict(line.split("\t", 1) for line in lines if "\t" in line)
    return list(jobs.values())
