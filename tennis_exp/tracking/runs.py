"""MLflow tracking: the store, one run per job, batched logging, honest run status."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tennis_exp.errors import UserError, first_line, one_line_report
from tennis_exp.files import locked
from tennis_exp.tracking.retry import HeldBack

log = logging.getLogger(__name__)
# MLflow announces the creation of a new SQLite store on stderr; a user mistake found right
# after it would no longer be the one line on stderr.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)

DEFAULT_STORE = "mlflow.db"
_MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
_PARAMS_PER_CALL = 100  # MLflow's limit on params in one log_batch
_MAX_TAG_LENGTH = 5000
DEFAULT_RETRY_S = 300.0  # tracking.retry_s's default


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else a SQLite store in the launch directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(DEFAULT_STORE).resolve()}"


def sqlite_file(uri: str) -> Path | None:
    """The database file of a SQLite store's URI; None for any other store."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def tracking_uri(cfg: DictConfig) -> str:
    """tracking.uri, else the default; a relative SQLite path is made absolute, so a run
    resumed from another directory finds its store."""
    uri = cfg.tracking.uri or default_tracking_uri()
    database = sqlite_file(uri)
    if database and not database.is_absolute():
        return f"sqlite:///{database.resolve()}"
    return uri


def ensure_experiment(uri: str, name: str) -> str:
    """Create the store (a schema migration on first use) and the experiment; return its id."""
    from mlflow.tracking import MlflowClient

    _probe(uri)
    database = sqlite_file(uri)
    # Two runs started at once on a new SQLite file would both migrate its schema and one would
    # fail ("duplicate column"): the first to take the lock creates it, the other then finds it.
    creating = database and database.parent.is_dir()  # else MLflow's own error says why
    with locked(database.with_name(f".{database.name}.lock")) if creating else nullcontext():
        try:
            client = MlflowClient(uri)
            experiment = client.get_experiment_by_name(name)
            if experiment is not None:
                return experiment.experiment_id
            # Next to the database, not in whatever directory a run happens to start from.
            artifacts = (database.parent / "mlartifacts").as_uri() if database else None
            return client.create_experiment(name, artifact_location=artifacts)
        except Exception as err:
            if type(err).__name__ == "MlflowException" and "already exists" in str(err):
                return client.get_experiment_by_name(name).experiment_id  # lost a creation race
            raise UserError(
                f"MLflow tracking store {uri} is not usable: {first_line(err)}"
            ) from None


def _probe(uri: str) -> None:
    """MLflow's client retries an unreachable server for minutes; a quick probe says it now."""
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10)
        except OSError as err:
            raise UserError(f"MLflow tracking server {uri} is unreachable ({err})") from None


def check_run_in_store(uri: str, run_id: str) -> None:
    """A UserError unless the store at `uri` holds the run `run_id` (the run a resume
    continues), found by reading only: a missing SQLite file is not created."""
    from mlflow.exceptions import MlflowException

    missing = f"the run to resume, {run_id}, is not in the store {uri}"
    database = sqlite_file(uri)
    if database and not database.is_file():
        raise UserError(f"{missing} (no such file)")
    _probe(uri)
    try:
        _client(uri).get_run(run_id)
    except MlflowException:
        raise UserError(missing) from None


OVERRIDES_TAG = "overrides"  # a job's command-line overrides: a sweep's table shows what varied


def overrides_tag(overrides: list[str] | None) -> str:
    """The overrides as a JSON list (values may hold spaces), as many as a tag holds."""
    items = list(overrides or [])
    while len(json.dumps(items)) > _MAX_TAG_LENGTH:
        items.pop()
    return json.dumps(items)


def filter_value(value: str) -> str:
    """`value` quoted for an MLflow search filter: single quotes, or double ones around a value
    holding a single quote (a path like /data/o'brien); MLflow's filters have no escapes."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise UserError(f"{value!r} holds both kinds of quote, which MLflow's filters cannot match")


def runs_tagged(
    client, experiment_id: str | list[str], tags: dict[str, str], max_results: int = 1000
):
    """The experiment's (or experiments') runs with these exact tag values."""
    where = " and ".join(f"tags.`{k}` = {filter_value(v)}" for k, v in tags.items())
    ids = [experiment_id] if isinstance(experiment_id, str) else experiment_id
    return client.search_runs(ids, where, max_results=max_results)


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


class Run:
    """One MLflow run, as one process logs to it. Every epoch's metrics go in one `log_batch`
    call: on a SQLite store a single call costs about as much as a hundred metrics in one batch.

    When the store stops answering, training goes on: the calls are held back and retried for
    up to `retry_s` seconds (see retry.HeldBack); `close` sends what is left and tells what
    could not be logged.
    """

    def __init__(
        self, client: Any, run_id: str, retry_s: float = DEFAULT_RETRY_S, uri: str | None = None
    ) -> None:
        self.client, self.run_id = client, run_id
        self.uri = uri or str(getattr(client, "tracking_uri", "the store"))
        self.calls = HeldBack(retry_s, self.uri)
        self.files: str | None = None  # where the run's checkpoints are kept, for the account

    @classmethod
    def open(cls, uri: str, run_id: str, retry_s: float | None = None) -> Run:
        """This process's one Run for `run_id` (the run context's and the training loop's are
        the same object, so an outage is noticed, and waited out, once)."""
        run = _OPEN.get((uri, run_id))
        if run is None:
            run = _OPEN[(uri, run_id)] = cls(_client(uri), run_id, uri=uri)
        if retry_s is not None:
            run.calls.bound_s = retry_s
        return run

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:_MAX_PARAM_LENGTH]) for k, v in params.items()]
        for i in range(0, len(items), _PARAMS_PER_CALL):
            batch = items[i : i + _PARAMS_PER_CALL]
            self.calls.call(
                f"{len(batch)} params", lambda b=batch: self.client.log_batch(self.run_id, params=b)
            )

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self.calls.call(
            f"metrics at step {step}",
            lambda: self.client.log_batch(self.run_id, metrics=items),
            values=len(items),
        )

    def history(self, keys, last_step: int) -> dict[str, list[tuple[int, float]]]:
        """Each metric's (step, value) pairs up to `last_step`, by step; a step logged twice
        (epochs trained again after a resume from best.pth) keeps its latest value."""
        out = {}
        for key in keys:
            logged = sorted(
                self.client.get_metric_history(self.run_id, key), key=lambda m: m.timestamp
            )
            latest = {m.step: m.value for m in logged if m.step <= last_step}
            out[key] = sorted(latest.items())
        return out

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        name = f"{artifact_path}/{path.name}" if artifact_path else path.name
        self.calls.call(f"artifact {name}", lambda: self._upload(path, artifact_path))

    def _upload(self, path: Path, artifact_path: str | None) -> None:
        try:
            self.client.log_artifact(self.run_id, str(path), artifact_path)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise UserError(
                    f"no space left to store {path.name} in MLflow ({err.strerror})"
                ) from None
            raise

    def set_tag(self, key: str, value: str) -> None:
        self.calls.call(f"tag {key}", lambda: self.client.set_tag(self.run_id, key, value))

    def end(self, status: str, error: str | None = None) -> None:
        """The run's final status (FINISHED, FAILED, KILLED) and its one-line error."""
        if error is not None:
            self.calls.call("error tag", lambda: self.client.set_tag(self.run_id, "error", error))
        self.calls.call(f"status {status}", lambda: self.client.set_terminated(self.run_id, status))

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind, err, trace) -> None:
        self.close(failing=err is not None)

    def close(self, failing: bool = False) -> None:
        """Send what is held back, waiting up to the bound. What could not be sent is a
        UserError naming it; when the caller is failing already (its error is the one to
        report), a logged line."""
        _OPEN.pop((self.uri, self.run_id), None)
        lost = self.calls.drain()
        if lost is None:
            return
        message = (
            f"MLflow at {self.calls.store} did not answer for {self.calls.bound_s:g} s "
            f"(tracking.retry_s): not logged: {lost}"
        )
        if self.files:
            message += f"; the run's checkpoints and files are in {self.files}"
        if failing:
            log.error(message)
            return
        raise UserError(message)


_OPEN: dict[tuple[str, str], Run] = {}


def _client(uri: str):
    """A client whose requests fail fast: the Run's own retries, which do not hold up
    training, replace MLflow's (7 of them, minutes in all, each blocking the caller)."""
    from mlflow.tracking import MlflowClient

    if uri.startswith(("http://", "https://")):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    return MlflowClient(uri)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


@contextmanager
def mlflow_run(
    uri: str,
    experiment: str,
    run_name: str,
    tags: dict[str, str],
    resume_id: str | None = None,
    parent_id: str | None = None,
    system_metrics: bool = False,
    retry_s: float = DEFAULT_RETRY_S,
) -> Iterator[Run]:
    """A run that ends FINISHED, KILLED (Ctrl-C, SIGTERM) or FAILED (with the error as a tag).

    With `resume_id` the interrupted run is reopened and continues where it stopped; a new run
    is nested under `parent_id` if given. `system_metrics` logs CPU, memory and per-GPU
    utilisation and memory (MLflow's `system/` metrics). Logging is retried for up to
    `retry_s` seconds when the store stops answering; what could not be logged by the end
    fails the run's block in one line (the run then stays RUNNING in the store).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException

    client = _client(uri)
    experiment_id = ensure_experiment(uri, experiment)
    if resume_id:
        info = _reopen(client, uri, resume_id)
    else:
        info = _create(client, experiment_id, run_name, tags, parent_id)
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
    monitor = _system_monitor(uri, info.run_id, bool(resume_id)) if system_metrics else None
    with Run.open(uri, info.run_id, retry_s) as run:
        run.files = tags.get("output_dir")
        try:
            yield run
        except BaseException as err:
            # A signal to the whole process group also kills loader workers, whose death then
            # surfaces while the interrupt is being handled: still an interruption.
            interrupts = (KeyboardInterrupt, SignalException)
            killed = isinstance(err, interrupts) or isinstance(err.__context__, interrupts)
            run.end("KILLED" if killed else "FAILED", one_line_report(err)[:_MAX_TAG_LENGTH])
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
            if monitor is not None:
                monitor.finish()
        run.end("FINISHED")


def _reopen(client, uri: str, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        previous = client.get_run(run_id)
    except MlflowException:
        raise UserError(f"the run to resume, {run_id}, is not in the store {uri}") from None
    client.update_run(run_id, status="RUNNING")
    if "error" in previous.data.tags:
        client.delete_tag(run_id, "error")
    return previous.info


def _create(client, experiment_id: str, run_name: str, tags: dict[str, str], parent_id):
    commit = git_commit()
    if commit:
        tags = {**tags, "mlflow.source.git.commit": commit}
    if parent_id:
        tags = {**tags, "mlflow.parentRunId": parent_id}
    return client.create_run(experiment_id, run_name=run_name, tags=tags).info


def _system_monitor(uri: str, run_id: str, resumed: bool):
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(
        run_id, sampling_interval=5, tracking_uri=uri, resume_logging=resumed
    )
    monitor.start()
    return monitor


# MLflow 3.17's UI opens an experiment in its GenAI view unless the address asks for this one.
TRAINING_VIEW = "workflowType=machine_learning"


def ui_url(base: str, experiment_id: str, run_id: str | None = None) -> str:
    """The UI page of an experiment's runs table (or of one run, e.g. a sweep's), in the
    Model training view."""
    page = f"runs/{run_id}" if run_id else "runs"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/{page}?{TRAINING_VIEW}"
