"""An MLflow server for a lab (`make server`) or the UI on the local store (`make ui`), started
and shown with the address that opens the experiment's runs.

A lab's server keeps runs in a database (SQLite, or PostgreSQL for many writers) and artifacts
behind itself: clients upload and download them through the server, so no node needs the
server's disk. It listens on 127.0.0.1 unless given a host.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

from tennis_exp.errors import UserError, first_line
from tennis_exp.tracking.runs import sqlite_file, ui_url

# MLflow 3's UI opens an experiment on its GenAI overview (traces, "No data available" for a
# training run) unless the page asks for the "Model training" view; the view a browser last
# used is kept in its local storage, so a fresh profile needs this in the address.
DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
START_TIMEOUT_S = 180.0  # a fresh database is migrated before the server answers


@dataclass(frozen=True)
class ServerSpec:
    store: str  # the backend store URI
    artifacts: str | None  # where the server keeps artifacts; None: the UI of a local store
    host: str
    port: int
    workers: int | None = None  # None: MLflow's default
    extra: tuple[str, ...] = ()  # more `mlflow server` options, as given

    @property
    def local_url(self) -> str:
        """How this machine reaches the server."""
        return f"http://{_loopback(self.host)}:{self.port}"

    @property
    def url(self) -> str:
        """How other machines reach it (this machine's name when it listens on all)."""
        host = socket.gethostname() if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "mlflow"]
        if self.artifacts is None:
            cmd += ["ui", "--backend-store-uri", self.store]
        else:
            cmd += ["server", "--backend-store-uri", self.store]
            cmd += ["--serve-artifacts", "--artifacts-destination", self.artifacts]
        cmd += ["--host", self.host, "--port", str(self.port)]
        if self.workers is not None:
            cmd += ["--workers", str(self.workers)]
        return [*cmd, *self.extra]


def check(spec: ServerSpec) -> None:
    """One line (a UserError) for a store that is not a reachable database or a port in use,
    before anything starts."""
    scheme = spec.store.split(":", 1)[0].split("+", 1)[0]
    if scheme not in DB_SCHEMES:
        raise UserError(
            f"{spec.store!r} is not a database store URI: use sqlite:///<file>.db or "
            "postgresql+psycopg2://<user>@<host>/<database>"
        )
    _check_database(spec.store)
    with socket.socket(socket.AF_INET6 if ":" in spec.host else socket.AF_INET) as probe:
        # As the server binds: a port left in TIME_WAIT by a server that just stopped is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((spec.host, spec.port))
        except OSError as err:
            raise UserError(
                f"cannot listen on {spec.host}:{spec.port} ({err.strerror}): pass another PORT"
            ) from None


def _check_database(store: str) -> None:
    import sqlalchemy

    database = sqlite_file(store)
    if database:
        database.expanduser().parent.mkdir(parents=True, exist_ok=True)
    try:
        engine = sqlalchemy.create_engine(store)
        with engine.connect():
            pass
    except ModuleNotFoundError as err:
        raise UserError(
            f"the store {store} needs the {err.name} package, its database driver; for "
            "PostgreSQL write postgresql+psycopg2://... and pip install psycopg2-binary (the "
            "[postgres] extra)"
        ) from None
    except sqlalchemy.exc.SQLAlchemyError as err:
        raise UserError(f"cannot open the store {store}: {first_line(err.orig or err)}") from None


def serve(spec: ServerSpec, experiment: str, out=sys.stdout) -> int:
    """Start the server, wait until it answers, print where to find the runs, then run
    until it stops (Ctrl-C or SIGTERM stop it). Its exit code."""
    from tennis_exp.tracking.runs import ensure_experiment

    check(spec)
    server = subprocess.Popen(spec.command())
    # Stopping this command stops the server; Ctrl-C reaches both through the terminal.
    signal.signal(signal.SIGTERM, lambda *_: server.terminate())
    try:
        _wait_until_up(server, spec.local_url)
        # A lab server's experiment is created through it: its artifacts then go through it.
        experiment_id = ensure_experiment(
            spec.store if spec.artifacts is None else spec.local_url, experiment
        )
        for line in _banner(spec, experiment, experiment_id):
            print(line, file=out, flush=True)
        return server.wait()
    except KeyboardInterrupt:
        server.send_signal(signal.SIGINT)
        return server.wait()
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait()


def show_remote(url: str, experiment: str, out=sys.stdout) -> int:
    """A store that is a server already: where its runs are."""
    from tennis_exp.tracking.runs import ensure_experiment

    experiment_id = ensure_experiment(url, experiment)
    print(f"Runs of {experiment}: {ui_url(url, experiment_id)}", file=out)
    return 0


def _wait_until_up(server: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        code = server.poll()
        if code is not None:
            raise UserError(f"mlflow server stopped with exit code {code} (its output is above)")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise UserError(f"mlflow server did not answer at {url} within {START_TIMEOUT_S:g} s")
        time.sleep(0.5)


def _banner(spec: ServerSpec, experiment: str, experiment_id: str) -> list[str]:
    from mlflow.tracking import MlflowClient

    from tennis_exp.tracking.sweep import newest_sweep

    client = MlflowClient(spec.local_url)
    kind = "UI" if spec.artifacts is None else "server"
    lines = [f"MLflow {kind}: {spec.url} (store {spec.store})"]
    if spec.artifacts is not None:
        lines += [
            f"Artifacts: {spec.artifacts}, uploaded and downloaded through the server",
            f"Jobs log to it with: MLFLOW_TRACKING_URI={spec.url} python -m tennis_exp ...",
        ]
    lines.append(f"Runs of {experiment}: {ui_url(spec.url, experiment_id)}")
    sweep = newest_sweep(client, experiment_id)
    if sweep is not None:
        url = ui_url(spec.url, experiment_id, sweep.info.run_id)
        lines.append(f"Newest sweep, {sweep.info.run_name}: {url}")
    lines.append("Ctrl-C stops it.")
    return lines


def _loopback(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
