"""Sweeps in MLflow: one parent run per multirun with a nested run per job, a FAILED run for a
job that failed before its own run started; at the sweep's end the failed runs MLflow knows of
join the command's failure log (`errors.record_failure`), which also covers jobs on other
machines (SLURM)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from tennis_exp.config.jobnames import (
    SWEPT_ENV,
    failed_name,
    groups_in,
    job_values,
    swept_keys,
    swept_override,
)
from tennis_exp.errors import UserError, record_failure
from tennis_exp.tracking.compare import Row, best_row, report, to_text
from tennis_exp.tracking.runs import (
    OVERRIDES_TAG,
    ensure_experiment,
    overrides_tag,
    runs_tagged,
    tracking_uri,
    ui_url,
)

log = logging.getLogger(__name__)

SWEEP_ROLE_TAG = "tennis_exp.role"  # "sweep" on a multirun's parent run


def _sweep_tags(sweep_dir: str) -> dict[str, str]:
    return {SWEEP_ROLE_TAG: "sweep", "sweep_dir": str(Path(sweep_dir).resolve())}


def sweep_parent(client, experiment_id: str, sweep_dir: str) -> str | None:
    """The id of the parent run of the sweep writing into `sweep_dir`, if there is one."""
    runs = runs_tagged(client, experiment_id, _sweep_tags(sweep_dir), max_results=1)
    return runs[0].info.run_id if runs else None


def job_parent(uri: str, experiment_id: str, sweep_dir: str) -> str | None:
    """The id of the sweep's run that a job in this experiment nests under (None: no sweep's
    run). A sweep's run in another experiment could neither nest nor report the job: a swept
    preset that sets experiment_name, with none on the command line. That is refused."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    parent = sweep_parent(client, experiment_id, sweep_dir)
    elsewhere = None if parent else sweep_parent_run(client, sweep_dir)
    if elsewhere is not None:
        name = client.get_experiment(experiment_id).name
        sweep_experiment = client.get_experiment(elsewhere.info.experiment_id).name
        raise UserError(
            f"this job logs to experiment '{name}' but its sweep's run is in "
            f"'{sweep_experiment}', which would neither nest nor report it: pass "
            f"experiment_name={name} on the command line"
        )
    return parent


def sweep_parent_run(client, sweep_dir: str):
    """The parent run of the sweep writing into `sweep_dir`, in whichever experiment, or None."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = runs_tagged(client, experiments, _sweep_tags(sweep_dir), max_results=1)
    return runs[0] if runs else None


def newest_sweep(client, experiment_id: str):
    """The parent run of the experiment's newest sweep, or None."""
    runs = client.search_runs(
        [experiment_id],
        f"tags.`{SWEEP_ROLE_TAG}` = 'sweep'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    return runs[0] if runs else None


def child_runs(client, parent) -> list:
    return runs_tagged(
        client, parent.info.experiment_id, {"mlflow.parentRunId": parent.info.run_id}, 5000
    )


def record_failed_job(
    cfg: DictConfig,
    output_dir: Path,
    sweep_dir: str,
    message: str,
    overrides: list[str] | None = None,
) -> None:
    """A sweep job that failed before its run started still gets a FAILED run, so the sweep's
    table and the UI show it instead of silently having one job fewer."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(cfg)
    client = MlflowClient(uri)
    # In the sweep's experiment, as the sweep's table reads it, whatever the job's config says.
    parent = sweep_parent_run(client, sweep_dir)
    experiment_id = (
        parent.info.experiment_id if parent else ensure_experiment(uri, cfg.experiment_name)
    )
    if runs_tagged(client, experiment_id, {"output_dir": str(output_dir.resolve())}):
        return  # the job's own run exists and is already marked FAILED
    tags = {
        "hardware": cfg.hardware.name,
        "strategy": cfg.hardware.strategy.value,
        "sweep_dir": str(Path(sweep_dir).resolve()),
        "output_dir": str(output_dir.resolve()),
        "error": message[:5000],
        OVERRIDES_TAG: overrides_tag(overrides),
    }
    if parent:
        tags["mlflow.parentRunId"] = parent.info.run_id
    values = job_values(overrides or [], os.environ.get(SWEPT_ENV))
    name = failed_name(values, groups_in(cfg, values), cfg.hardware.name, tags["strategy"])
    run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
    client.log_batch(
        run_id,
        params=[
            Param("scaling.devices", str(cfg.hardware.devices)),
            Param("hardware.strategy", cfg.hardware.strategy.value),
        ],
    )
    client.set_terminated(run_id, "FAILED")


def log_best(client, parent_id: str, rows: list[Row]) -> None:
    """Print the job with the best val macro-F1 and its values of the swept keys; log them to
    the sweep's run (params `best.<key>`, metrics `best/...`, tag `best_run_id`)."""
    from mlflow.entities import Metric, Param

    best = best_row(rows)
    if best is None:
        log.warning("No job of the sweep finished: there is no best one")
        return
    values = ", ".join(f"{k}={v}" for k, v in best.swept.items()) or "no key varied"
    log.info(
        "Best job: %s (run %s), best val macro-F1 %.4f: %s",
        best.run,
        best.run_id,
        best.best_val_macro_f1,
        values,
    )
    now = int(time.time() * 1000)
    scores = {"best/val_macro_f1": best.best_val_macro_f1, "best/test_macro_f1": best.test_macro_f1}
    client.log_batch(
        parent_id,
        metrics=[Metric(k, v, now, 0) for k, v in scores.items() if v is not None],
        params=[Param(f"best.{k}", str(v)) for k, v in best.swept.items() if v is not None],
    )
    client.set_tag(parent_id, "best_run_id", best.run_id)


def hand_swept_keys_to_jobs(config: DictConfig) -> None:
    """Every launcher composes a job's config from the sweep's `hydra.overrides.hydra` and the
    job's own overrides: one more there gives each job the keys the sweep varies (its folder
    and run name show their values)."""
    params = OmegaConf.select(config, "hydra.sweeper.params")
    search = OmegaConf.to_container(params) if params is not None else None
    override = swept_override(swept_keys(config.hydra.overrides.task, search))
    if override is not None:
        with read_write(config.hydra.overrides), open_dict(config.hydra.overrides):
            config.hydra.overrides.hydra.append(override)


class SweepTracking(Callback):
    """A multirun is one parent MLflow run with a nested run per job, and ends with the
    comparison table (terminal, markdown, CSV, plots) logged to the parent.

    The store and experiment are created here, once, before the jobs start: the parent run
    needs the experiment, and no job then waits on the store's schema migration (seconds).
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from mlflow.tracking import MlflowClient

        hand_swept_keys_to_jobs(config)
        uri = tracking_uri(config)
        experiment_id = ensure_experiment(uri, config.experiment_name)
        sweep_dir = str(Path(config.hydra.sweep.dir).resolve())
        MlflowClient(uri).create_run(
            experiment_id,
            run_name=f"sweep {Path(sweep_dir).parent.name}/{Path(sweep_dir).name}",
            tags={SWEEP_ROLE_TAG: "sweep", "sweep_dir": sweep_dir},
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri(config))
        experiment_id = client.get_experiment_by_name(config.experiment_name).experiment_id
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        parent_id = sweep_parent(client, experiment_id, str(sweep_dir))
        if parent_id is None:
            return
        children = child_runs(client, client.get_run(parent_id))
        rows, paths = report(client, children, sweep_dir / "comparison")
        optuna_results = sweep_dir / "optimization_results.yaml"  # hparams_search's sampler's
        for path in [*paths, optuna_results] if optuna_results.is_file() else paths:
            client.log_artifact(parent_id, str(path))
        for plot in sorted((sweep_dir / "optuna").glob("*.png")):  # the search's study plots
            client.log_artifact(parent_id, str(plot), "optuna")
        log.info("Sweep of %d job(s):\n%s", len(rows), to_text(rows))
        log_best(client, parent_id, rows)
        uri = tracking_uri(config)
        if uri.startswith(("http://", "https://")):
            log.info("The sweep in the MLflow UI: %s", ui_url(uri, experiment_id, parent_id))
        failed = any(r.status != "FINISHED" for r in rows)
        client.set_terminated(parent_id, "FAILED" if failed else "FINISHED")
        # Jobs another process ran (submitit) are known here by their FAILED runs.
        for run in sorted(children, key=lambda r: r.info.start_time):
            if run.info.status == "FAILED":
                tags = run.data.tags
                record_failure(
                    tags.get("output_dir", run.info.run_id),
                    tags.get("error", f"{run.info.run_name} failed"),
                )
