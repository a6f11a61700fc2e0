"""The search loop: ask the study for as many trials as the launcher runs at once, launch them
as jobs of the sweep, tell the study their scores (a failed job: a FAIL trial with its error),
until the study holds `n_trials`; then the best trial (`optimization_results.yaml`) and
Optuna's plots in the sweep's folder.

Written for Optuna >= 4 rather than kept on hydra-optuna-sweeper, whose last release (1.3)
pins optuna<3 and keeps no study between runs."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from tennis_exp.errors import FAILURE_LOG, UserError, one_line_report

from .space import search_space, trial_overrides
from .study import (
    ERROR_ATTR,
    Heartbeat,
    fail_abandoned,
    mark_alive,
    open_study,
    past_limit,
    shown,
    storage_url,
    trials_to_ask,
)

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"
DIRECTIONS = ("maximize", "minimize")


class OptunaSearch(Sweeper):
    def __init__(
        self,
        sampler: DictConfig,
        direction: str,
        storage: str | None,
        study_name: str,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: DictConfig | None,
    ) -> None:
        self.sampler = OmegaConf.to_container(sampler, resolve=True)
        self.direction = direction
        self.storage = storage
        self.study_name = study_name
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.max_failure_rate = max_failure_rate
        self.params = OmegaConf.to_container(params, resolve=True) if params else {}

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: list[str]) -> None:
        import optuna

        sweep_dir = Path(self.config.hydra.sweep.dir)
        try:
            space, fixed = self._check(arguments)
            url = storage_url(self.storage, str(sweep_dir))
            study = open_study(url, self.study_name, self.direction, sampler=None)
        except UserError:
            _close_sweep_run(self.config)  # the sweep's MLflow run exists already: not left RUNNING
            raise
        study.sampler = self._sampler(len(study.trials))
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the search logs its own lines
        fail_abandoned(study)
        done = self.n_trials - trials_to_ask(self.n_trials, study.trials)
        log.info(
            "Study '%s' in %s: %d of its %d trials done or running (optuna-dashboard %s)",
            study.study_name, shown(url), done, self.n_trials, shown(url),
        )  # fmt: skip
        self._run(study, space, fixed)
        _write_results(study, sweep_dir)

    def _check(self, arguments: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
        """The search space (preset's params, then the command line's), after the settings."""
        if self.n_trials < 1:
            raise UserError(f"hydra.sweeper.n_trials={self.n_trials}: a search needs 1 or more")
        if self.n_jobs < 1:
            raise UserError(f"hydra.sweeper.n_jobs={self.n_jobs}: 1 or more trials at once")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise UserError(
                f"hydra.sweeper.max_failure_rate={self.max_failure_rate}: a share, 0.0 to 1.0"
            )
        if self.direction not in DIRECTIONS:
            raise UserError(
                f"hydra.sweeper.direction={self.direction}: one of {', '.join(DIRECTIONS)}"
            )
        space, fixed = search_space([*(f"{k}={v}" for k, v in self.params.items()), *arguments])
        if not space:
            raise UserError("the search varies no key: give hydra.sweeper.params or a choice(...)")
        return space, fixed

    def _sampler(self, trials_held: int):
        """The sampler, its seed (if it has one) moved on by the trials the study holds: a
        continued or joining search must not redraw the points the first one drew."""
        from hydra.utils import instantiate

        config = dict(self.sampler)
        if config.get("seed") is not None:
            config["seed"] = int(config["seed"]) + trials_held
        return instantiate(config)

    def _run(self, study, space: dict[str, Any], fixed: dict[str, str]) -> None:
        from optuna.trial import TrialState

        while True:
            fail_abandoned(study)
            trials = study.get_trials(deepcopy=False)
            wanted = min(self.n_jobs, trials_to_ask(self.n_trials, trials))
            if wanted == 0:
                return
            asked = [study.ask(space) for _ in range(wanted)]
            for trial in asked:
                mark_alive(trial)
            # Another node may have asked at the same moment: the trials past n_trials go.
            over = past_limit(self.n_trials, study.get_trials(deepcopy=False))
            for trial in asked:
                if trial.number in over:
                    study.tell(trial, state=TrialState.FAIL)
            batch = [t for t in asked if t.number not in over]
            if not batch:
                continue
            overrides = [trial_overrides({k: t.params[k] for k in space}, fixed) for t in batch]
            try:
                with Heartbeat(batch):
                    returns = self.launcher.launch(overrides, initial_job_idx=batch[0].number)
            except BaseException:  # Ctrl-C, a launcher's crash: the trials are run again later
                for trial in batch:
                    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                raise
            failed = sum(not _tell(study, t, r) for t, r in zip(batch, returns, strict=True))
            if failed / len(batch) > self.max_failure_rate:
                log.error(
                    "%d of %d trials failed, more than hydra.sweeper.max_failure_rate=%s: "
                    "the search stops", failed, len(batch), self.max_failure_rate,
                )  # fmt: skip
                return


def _tell(study, trial, job_return) -> bool:
    """Tell the study the job's score, or that it failed; whether it scored."""
    from optuna.trial import TrialState

    score, error = _score(job_return)
    if error is None:
        study.tell(trial, score)
        return True
    trial.set_user_attr(ERROR_ATTR, error[:2000])
    study.tell(trial, state=TrialState.FAIL)
    log.warning("Trial %d failed: %s", trial.number, error)
    return False


def _score(job_return) -> tuple[float | None, str | None]:
    """(the job's score, None), or (None, why there is none)."""
    try:
        value = job_return.return_value  # the job's exception, if it raised (a bug)
    except Exception as err:
        return None, one_line_report(err)
    if value is None:  # tennis-exp's job reported its mistake and returned nothing
        return None, _reported_error(job_return) or "the job failed (see its MLflow run)"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None, f"the job returned {value!r}, not a score"
    if not math.isfinite(value):
        return None, f"the job's score is {value}"
    return value, None


def _reported_error(job_return) -> str | None:
    """The one line the job recorded in the command's failure log (same machine only)."""
    path = os.environ.get(FAILURE_LOG)
    output_dir = str(Path(job_return.hydra_cfg.hydra.runtime.output_dir).resolve())
    try:
        lines = Path(path).read_text().splitlines() if path else []
    except FileNotFoundError:
        return None
    errors = dict(line.split("\t", 1) for line in lines if "\t" in line)
    return errors.get(output_dir)


def _write_results(study, sweep_dir: Path) -> None:
    """The best trial into optimization_results.yaml, and the plots, for the whole study."""
    from optuna.trial import TrialState

    from tennis_exp.files import write_text

    from .plots import plot_study

    if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        best = study.best_trial
        log.info("Best trial of the study: %d, value %.4f: %s",
                 best.number, best.value, best.params)  # fmt: skip
        results = {"name": "optuna", "study_name": study.study_name, "best_trial": best.number,
                   "best_params": best.params, "best_value": best.value}  # fmt: skip
        write_text(sweep_dir / RESULTS_FILE, OmegaConf.to_yaml(OmegaConf.create(results)))
    else:
        log.warning("No trial of the study finished: there is no best trial")
    plot_study(study, sweep_dir, objective="best val macro-F1")


def _close_sweep_run(config: DictConfig) -> None:
    """Mark the sweep's MLflow run FAILED: a search refused before its first trial."""
    from mlflow.tracking import MlflowClient

    from tennis_exp.tracking.runs import tracking_uri
    from tennis_exp.tracking.sweep import sweep_parent

    client = MlflowClient(tracking_uri(config))
    experiment = client.get_experiment_by_name(config.experiment_name)
    sweep_dir = str(Path(config.hydra.sweep.dir).resolve())
    parent = experiment and sweep_parent(client, experiment.experiment_id, sweep_dir)
    if parent:
        client.set_terminated(parent, "FAILED")
