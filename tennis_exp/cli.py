"""What every command does with errors: a user mistake, in the command or in any job of its
sweep, ends it with one line on stderr and exit code 1; a bug keeps its traceback, and
`HYDRA_FULL_ERROR=1` shows the traceback of a mistake too."""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from tennis_exp.errors import (
    FAILURE_LOG,
    RefusedBeforeRun,
    first_line,
    read_failures,
    record_failure,
)

# The user's HYDRA_FULL_ERROR, kept here for jobs: the command sets Hydra's own to 1.
SHOW_TRACEBACK = "TENNIS_EXP_SHOW_TRACEBACK"


def run_command(hydra_main: Callable[[], object]) -> None:
    """Run a `@hydra.main` function and report what failed, in one line each."""
    os.environ.setdefault(SHOW_TRACEBACK, os.environ.get("HYDRA_FULL_ERROR", "0"))
    # Let composition errors reach us instead of Hydra's multi-line report.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    with tempfile.TemporaryDirectory(prefix="tennis-exp-") as tmp:
        failures = Path(tmp) / "failures"
        os.environ[FAILURE_LOG] = str(failures)
        try:
            hydra_main()
        except KeyboardInterrupt as err:
            sys.exit(f"Interrupted ({str(err) or 'Ctrl-C'})")
        except (Exception, RefusedBeforeRun) as err:
            if traceback_wanted() or not is_user_error(err):
                raise
            record_failure("command", one_line(err))
        finally:
            del os.environ[FAILURE_LOG]
        lines = read_failures(failures)
    if len(lines) == 1:
        sys.exit(f"Error: {lines[0]}")
    if lines:
        sys.exit(f"Error: {len(lines)} jobs failed; the first: {lines[0]}")


def reported(job: Callable[[DictConfig], float]) -> Callable[[DictConfig], float | None]:
    """A job whose user mistakes are recorded for `run_command`'s one line, and which then
    returns None: raising would make Hydra print its multi-line report first, and None is what
    Optuna's sweeper records as a failed trial (a NaN would stop its search: hydra#2237)."""

    @functools.wraps(job)
    def run(cfg: DictConfig) -> float | None:
        try:
            return job(cfg)
        except Exception as err:
            if traceback_wanted() or not is_user_error(err):
                raise
            from tennis_exp.engine.distributed import process_rank

            if process_rank() == 0:  # a job's other DDP ranks leave its report to rank 0
                output_dir = Path(HydraConfig.get().runtime.output_dir).resolve()
                record_failure(str(output_dir), one_line(err))
            return None

    return run


def traceback_wanted() -> bool:
    return os.environ.get(SHOW_TRACEBACK) == "1"


def one_line(err: BaseException) -> str:
    """A user mistake as one line: Hydra and OmegaConf spread theirs over several."""
    options = getattr(err, "options", None)
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if options:  # an unknown config group option
        return f"{lines[0]}; valid options: {', '.join(options)}"
    text = lines[0] if lines else type(err).__name__
    cause_message = first_line(str(getattr(err.__cause__, "msg", "") or ""))
    return f"{text}: {cause_message}" if cause_message else text


def is_user_error(err: BaseException) -> bool:
    return isinstance(err, CompactHydraException | MissingMandatoryValue | RefusedBeforeRun)
