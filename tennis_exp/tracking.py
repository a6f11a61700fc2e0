"""MLflow tracking: the store, one run per job, batched logging, honest run status."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from tennis_exp.errors import UserError, one_line_report

log = logging.getLogger(__name__)
# MLflow announces the creation of a new SQLite store on stderr; a user mistake found right
# after it would no longer be the one line on stderr.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)

DEFAULT_STORE = "mlflow.db"
_MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
_PARAMS_PER_CALL = 100  # MLflow's limit on params in one log_batch


SWEEP_ROLE_TAG = "tennis_exp.role"  # "sweep" on a multirun's parent run

# The errors of the last sweep's failed jobs, in the order they started (see SweepTracking).
sweep_failures: list[str] = []


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else a SQLite store in the launch directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(DEFAULT_STORE).resolve()}"


def tracking_uri(cfg: DictConfig) -> str:
    return cfg.tracking.uri or default_tracking_uri()


def ensure_experiment(uri: str, name: str) -> str:
    """Create the store (a schema migration on first use) and the experiment; return its id."""
    from mlflow.tracking import MlflowClient

    if uri.startswith(("http://", "https://")):
        # MLflow's client retries an unreachable server for minutes; a quick probe says it now.
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10)
        except OSError as err:
            raise UserError(f"MLflow tracking server {uri} is unreachable ({err})") from None
    client = MlflowClient(uri)
    try:
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        artifacts = None
        if uri.startswith("sqlite:///"):
            # Next to the database, not in whatever directory a run happens to start from.
            artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
        return client.create_experiment(name, artifact_location=artifacts)
    except Exception as err:
        if type(err).__name__ == "MlflowException" and "already exists" in str(err):
            return client.get_experiment_by_name(name).experiment_id  # lost a creation race
        raise UserError(
            f"MLflow tracking store {uri} is not usable: {str(err).splitlines()[0]}"
        ) from None


def sweep_parent(client, experiment_id: str, sweep_dir: str) -> str | None:
    """The id of the parent run of the sweep writing into `sweep_dir`, if there is one."""
    runs = client.search_runs(
        [experiment_id],
        f"tags.{SWEEP_ROLE_TAG} = 'sweep' and tags.sweep_dir = '{Path(sweep_dir).resolve()}'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def record_failed_job(cfg: DictConfig, output_dir: Path, sweep_dir: str, message: str) -> None:
    """A sweep job that failed before its run started still gets a FAILED run, so the sweep's
    table and the UI show it instead of silently having one job fewer."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(cfg)
    client = MlflowClient(uri)
    experiment_id = ensure_experiment(uri, cfg.experiment_name)
    if client.search_runs([experiment_id], f"tags.output_dir = '{output_dir.resolve()}'"):
        return  # the job's own run exists and is already marked FAILED
    tags = {
        "hardware": cfg.hardware.name,
        "strategy": cfg.hardware.strategy.value,
        "sweep_dir": str(Path(sweep_dir).resolve()),
        "output_dir": str(output_dir.resolve()),
        "error": message[:5000],
    }
    parent = sweep_parent(client, experiment_id, sweep_dir)
    if parent:
        tags["mlflow.parentRunId"] = parent
    name = f"{cfg.hardware.name}-{cfg.hardware.strategy.value}-failed"
    run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
    client.log_batch(
        run_id,
        params=[
            Param("scaling.devices", str(cfg.hardware.devices)),
            Param("hardware.strategy", cfg.hardware.strategy.value),
        ],
    )
    client.set_terminated(run_id, "FAILED")


def child_runs(client, parent) -> list:
    return client.search_runs(
        [parent.info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        max_results=5000,
    )


class SweepTracking(Callback):
    """A multirun is one parent MLflow run with a nested run per job, and ends with the
    comparison table (terminal, markdown, CSV, plots) logged to the parent.

    The store and experiment are also created here, once, before the jobs start: the SQLite
    schema migration takes seconds and races when jobs start it concurrently.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from mlflow.tracking import MlflowClient

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

        from tennis_exp.compare import report, to_text

        uri = tracking_uri(config)
        client = MlflowClient(uri)
        experiment_id = client.get_experiment_by_name(config.experiment_name).experiment_id
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        parent_id = sweep_parent(client, experiment_id, str(sweep_dir))
        if parent_id is None:
            return
        children = child_runs(client, client.get_run(parent_id))
        rows, paths = report(client, children, sweep_dir / "comparison")
        for path in paths:
            client.log_artifact(parent_id, str(path))
        log.info("Sweep of %d job(s):\n%s", len(rows), to_text(rows))
        failed = any(r.status != "FINISHED" for r in rows)
        client.set_terminated(parent_id, "FAILED" if failed else "FINISHED")
        # A job that failed on a user error returned NaN so that the sweep went on; one that a
        # submitit launcher ran in another process can only tell this process through its run.
        sweep_failures[:] = [
            run.data.tags.get("error", f"{run.info.run_name} failed")
            for run in sorted(children, key=lambda r: r.info.start_time)
            if run.info.status == "FAILED"
        ]


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def config_params(cfg: DictConfig) -> dict[str, Any]:
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return flatten(container)


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@dataclass
class Run:
    """One MLflow run. Every epoch's metrics go in one `log_batch` call: on a SQLite store a
    single call costs about as much as a hundred metrics in one batch."""

    client: Any
    run_id: str

    @classmethod
    def open(cls, uri: str, run_id: str) -> Run:
        """An existing run, e.g. one that a launching process created for its DDP workers."""
        from mlflow.tracking import MlflowClient

        return cls(MlflowClient(uri), run_id)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:_MAX_PARAM_LENGTH]) for k, v in params.items()]
        for i in range(0, len(items), _PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=items[i : i + _PARAMS_PER_CALL])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=items)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        try:
            self.client.log_artifact(self.run_id, str(path), artifact_path)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise UserError(
                    f"no space left to store {path.name} in MLflow ({err.strerror})"
                ) from None
            raise


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


@contextmanager
def mlflow_run(
    uri: str,
    experiment: str,
    run_name: str,
    tags: dict[str, str],
    resume_id: str | None = None,
    system_metrics: bool = False,
) -> Iterator[Run]:
    """A run that ends FINISHED, KILLED (Ctrl-C, SIGTERM) or FAILED (with the error as a tag).

    With `resume_id` the interrupted run is reopened and continues where it stopped. A job of a
    sweep (a `sweep_dir` tag) is nested under the sweep's parent run. `system_metrics` logs
    CPU, memory and per-GPU utilisation and memory (MLflow's `system/` metrics).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    from torch.distributed.elastic.multiprocessing.api import SignalException

    experiment_id = ensure_experiment(uri, experiment)
    client = MlflowClient(uri)
    if resume_id:
        try:
            previous = client.get_run(resume_id)
        except MlflowException:
            raise UserError(f"the run to resume, {resume_id}, is not in the store {uri}") from None
        info = previous.info
        client.update_run(resume_id, status="RUNNING")
        if "error" in previous.data.tags:
            client.delete_tag(resume_id, "error")
    else:
        commit = git_commit()
        if commit:
            tags = {**tags, "mlflow.source.git.commit": commit}
        parent = tags.get("sweep_dir") and sweep_parent(client, experiment_id, tags["sweep_dir"])
        if parent:
            tags = {**tags, "mlflow.parentRunId": parent}
        info = client.create_run(experiment_id, run_name=run_name, tags=tags).info
    run = Run(client, info.run_id)
    log.info(
        "MLflow run %s (%s) in experiment '%s' at %s%s",
        info.run_name,
        info.run_id,
        experiment,
        uri,
        ", resumed" if resume_id else "",
    )
    # `kill` (SIGTERM, as `nohup` jobs are stopped) would otherwise end Python without cleanup.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    monitor = None
    if system_metrics:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(
            info.run_id, sampling_interval=5, tracking_uri=uri, resume_logging=bool(resume_id)
        )
        monitor.start()
    try:
        yield run
    except BaseException as err:
        client.set_tag(info.run_id, "error", one_line_report(err)[:5000])
        # A signal to the whole process group also kills loader workers, whose death then
        # surfaces while the interrupt is being handled: still an interruption.
        interrupts = (KeyboardInterrupt, SignalException)
        killed = isinstance(err, interrupts) or isinstance(err.__context__, interrupts)
        client.set_terminated(info.run_id, "KILLED" if killed else "FAILED")
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        if monitor is not None:
            monitor.finish()
    client.set_terminated(info.run_id, "FINISHED")
