"""MLflow tracking: the store, one run per job, batched logging, honest run status."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from tennis_exp.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_STORE = "mlflow.db"
_MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
_PARAMS_PER_CALL = 100  # MLflow's limit on params in one log_batch


def tracking_uri(cfg: DictConfig) -> str:
    """`tracking.uri`, else $MLFLOW_TRACKING_URI, else a SQLite store in the launch directory."""
    uri = cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{Path(DEFAULT_STORE).resolve()}"


def ensure_experiment(uri: str, name: str) -> str:
    """Create the store (a schema migration on first use) and the experiment; return its id."""
    from mlflow.tracking import MlflowClient

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


class PrepareStore(Callback):
    """Create the store and experiment once, before a sweep's jobs start.

    The SQLite schema migration takes seconds and races when jobs start it concurrently.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        ensure_experiment(tracking_uri(config), config.experiment_name)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys: {"training": {"batch_size": 32}} -> {"training.batch_size": 32}."""
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

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


@contextmanager
def mlflow_run(
    uri: str, experiment: str, run_name: str, tags: dict[str, str], resume_id: str | None = None
) -> Iterator[Run]:
    """A run that ends FINISHED, KILLED (Ctrl-C, SIGTERM) or FAILED (with the error as a tag).

    With `resume_id` the interrupted run is reopened and continues where it stopped.
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
        info = client.create_run(experiment_id, run_name=run_name, tags=tags).info
    run = Run(client, info.run_id)
    log.info("MLflow run %s (%s) in experiment '%s' at %s%s", info.run_name, info.run_id,
             experiment, uri, ", resumed" if resume_id else "")
    # `kill` (SIGTERM, as `nohup` jobs are stopped) would otherwise end Python without cleanup.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield run
    except BaseException as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        client.set_tag(info.run_id, "error", f"{type(err).__name__}: {message}"[:5000])
        # A signal to the whole process group also kills loader workers, whose death then
        # surfaces while the interrupt is being handled: still an interruption.
        interrupts = (KeyboardInterrupt, SignalException)
        killed = isinstance(err, interrupts) or isinstance(err.__context__, interrupts)
        client.set_terminated(info.run_id, "KILLED" if killed else "FAILED")
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    client.set_terminated(info.run_id, "FINISHED")
