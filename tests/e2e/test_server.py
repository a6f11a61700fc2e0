"""`make server`: a real MLflow server on a free local port, jobs that log to it (a DDP job, a
parallel sweep), the server going away mid-run, and PostgreSQL as its store where it can be
started here."""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from ..helpers.commands import run_cli, smoke_args
from ..helpers.ports import free_port
from ..helpers.store import copy_store, runs_of


class Server:
    """`python -m tennis_exp.server` in its own process group (so that killing it kills the
    server's workers too), read until it prints where the runs are."""

    def __init__(self, tmp: Path, store: str | None = None, port: int | None = None):
        self.tmp, self.port = tmp, port or free_port()
        self.store = store or f"sqlite:///{tmp / 'server.db'}"
        self.url = f"http://127.0.0.1:{self.port}"
        self.banner: list[str] = []
        self.proc: subprocess.Popen | None = None

    def start(self) -> Server:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tennis_exp.server",
                "--store",
                self.store,
                "--artifacts",
                str(self.tmp / "server-artifacts"),
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            cwd=self.tmp,
            stdout=subprocess.PIPE,
            stderr=open(self.tmp / "server.log", "a"),  # noqa: SIM115 - the child keeps it
            text=True,
            start_new_session=True,
        )
        deadline = time.monotonic() + 180
        self.banner = []
        for line in self.proc.stdout:
            self.banner.append(line.rstrip())
            if line.startswith("Ctrl-C stops it"):
                return self
            assert time.monotonic() < deadline, self.banner
        raise AssertionError(f"the server stopped: {self.banner} {self.log()[-2000:]}")

    def log(self) -> str:
        return (self.tmp / "server.log").read_text()

    def kill(self) -> None:
        """The server goes away at once, workers and all, as a crashed machine's would."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def shared_server(empty_store, tmp_path_factory):
    """One server for the tests that leave it running (it takes seconds to start)."""
    tmp = tmp_path_factory.mktemp("shared")
    srv = Server(tmp, copy_store(empty_store, tmp, "server.db")).start()
    yield srv
    srv.stop()


@pytest.fixture
def server(empty_store, tmp_path):
    """A server of the test's own, which it may stop."""
    srv = Server(tmp_path, copy_store(empty_store, tmp_path, "server.db")).start()
    yield srv
    srv.stop()


def _smoke(data, tmp_path, *extra):
    """Smoke arguments for a job that logs where MLFLOW_TRACKING_URI says."""
    return smoke_args(data, tmp_path, *extra, store=False)


def test_the_server_prints_where_jobs_log_and_where_the_runs_are(shared_server):
    server = shared_server
    experiment = MlflowClient(server.url).get_experiment_by_name("tennis_4event")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # through the server
    assert f"Jobs log to it with: MLFLOW_TRACKING_URI={server.url} python -m tennis_exp ..." in (
        server.banner
    )
    runs_url = (
        f"{server.url}/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning"
    )
    assert f"Runs of tennis_4event: {runs_url}" in server.banner


@pytest.mark.slow  # 98 s on the shared 2-core machine (load 7)
def test_a_parallel_sweep_of_ddp_jobs_logs_to_the_server(shared_server, tiny_twin, tmp_path):
    # Two DDP jobs side by side (hydra/launcher=parallel), each starting its own two ranks.
    server = shared_server
    sweep = run_cli(
        [
            "--multirun",
            "hydra/launcher=parallel",
            "hydra.launcher.n_jobs=2",
            *_smoke(tiny_twin, tmp_path, "hardware=cpu_ddp2", "training.learning_rate=1e-4,2e-4"),
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=tmp_path,
        env={"MLFLOW_TRACKING_URI": server.url},
    )
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    client = MlflowClient(server.url)
    sweep_dir = str(tmp_path / "sweep")
    runs = [r for r in runs_of(server.url) if r.data.tags.get("sweep_dir") == sweep_dir]
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    [parent] = [r for r in runs if r.data.tags.get("tennis_exp.role") == "sweep"]
    jobs = [r for r in runs if r is not parent]
    for job in jobs:
        assert job.data.params["scaling.world_size"] == "2"
        steps = [m.step for m in client.get_metric_history(job.info.run_id, "val/macro_f1")]
        assert steps == [1]
        # Artifacts went through the server into its store, not beside the job.
        assert "checkpoints" in {a.path for a in client.list_artifacts(job.info.run_id)}
        stored = server.tmp / "server-artifacts" / job.info.experiment_id / job.info.run_id
        assert (stored / "artifacts" / "checkpoints" / "best.pth").is_file()
    assert not (tmp_path / "mlartifacts").exists() and not (tmp_path / "mlflow.db").exists()
    assert f"/runs/{parent.info.run_id}?workflowType=machine_learning" in sweep.stdout


def _train_until_epoch(data, tmp_path, server, epochs: int, retry_s: float, first_epoch_seen):
    """A run against the server that calls `first_epoch_seen()` once epoch 1 is logged."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tennis_exp",
            *_smoke(
                data,
                tmp_path,
                "hardware=cpu",
                f"training.epochs={epochs}",
                f"tracking.retry_s={retry_s}",
                f"hydra.run.dir={tmp_path / 'run'}",
            ),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": server.url, "PYTHONUNBUFFERED": "1"},
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if f"epoch 1/{epochs}" in line:
            first_epoch_seen()
            break
    out, err = proc.communicate(timeout=300)
    return proc.returncode, "".join(lines) + out, err


# A real server killed and restarted, about a minute on the 2-core machine. In the fast suite
# the held-back logging is checked in-process (unit/test_retry.py), and a real outage by the
# next test.
@pytest.mark.slow
def test_a_server_back_within_the_bound_loses_nothing(server, tiny_twin, tmp_path):
    epochs, outage = 4, {}

    def go_away():
        server.kill()
        outage["from"] = time.time()

    def come_back():
        time.sleep(4)
        server.start()
        outage["to"] = time.time()

    # The server goes away after epoch 1 and comes back 4 s later, on the same port and store.
    threads = []

    def outage_begins():
        go_away()
        threads.append(_in_thread(come_back))

    code, out, err = _train_until_epoch(tiny_twin, tmp_path, server, epochs, 300, outage_begins)
    threads[0].join(timeout=300)  # the server back and showing its banner
    assert code == 0, out[-3000:] + err[-3000:]
    log = out + err
    assert log.count("does not answer") == 1  # said once
    assert log.count("answers again") == 1
    client = MlflowClient(server.url)
    [run] = runs_of(server.url)
    assert run.info.status == "FINISHED"
    for key in ("train/loss", "val/macro_f1", "lr"):
        history = client.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in history) == list(range(1, epochs + 1))
    # Training went on while the server was away: epochs were logged with times inside it.
    times = [m.timestamp / 1000 for m in client.get_metric_history(run.info.run_id, "lr")]
    assert any(outage["from"] < t < outage["to"] for t in times)
    assert "test/macro_f1" in run.data.metrics
    assert "checkpoints" in {a.path for a in client.list_artifacts(run.info.run_id)}


def _in_thread(fn):
    import threading

    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


def test_a_server_gone_past_the_bound_ends_the_run_in_one_line(server, tiny_twin, tmp_path):
    epochs = 3
    code, out, err = _train_until_epoch(tiny_twin, tmp_path, server, epochs, 3, server.kill)
    assert code == 1
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, err
    said = re.match(
        rf"Error: MLflow at {re.escape(server.url)} did not answer for 3 s \(tracking.retry_s\): "
        rf"not logged: metrics at step\(s\) (\d+)-{epochs} \(\d+ values\), ",
        errors[0],
    )
    assert said, errors[0]
    for lost in ("artifact confusion_matrix.png", "artifact checkpoints/best.pth", "FINISHED"):
        assert lost in errors[0]
    assert errors[0].endswith(f"the run's checkpoints and files are in {tmp_path / 'run'}")
    assert (out + err).count("does not answer") == 1
    # What the line names is exactly what the store lacks (read from its file directly).
    client = MlflowClient(server.store)
    [run] = runs_of(server.store)
    logged = [m.step for m in client.get_metric_history(run.info.run_id, "val/macro_f1")]
    assert sorted(logged) == list(range(1, int(said.group(1))))
    # Training finished, and its checkpoints are there.
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pth", weights_only=True)
    assert last["epoch"] == epochs
    assert (tmp_path / "run" / "checkpoints" / "best.pth").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--store", "foo://x"], "'foo://x' is not a database store URI"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--store", "postgresql+psycopg2://nobody@127.0.0.1:1/no"], "cannot open the store"),
    ],
)
def test_bad_server_input_is_one_line(tmp_path, args, message):
    out = subprocess.run(
        [sys.executable, "-m", "tennis_exp.server", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("Error: ") and message in line


def test_a_port_in_use_is_one_line(shared_server, tmp_path):
    server = shared_server
    out = subprocess.run(
        [sys.executable, "-m", "tennis_exp.server", "--port", str(server.port)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert out.stderr.strip() == (
        f"Error: cannot listen on 127.0.0.1:{server.port} (Address already in use): "
        "pass another PORT"
    )


def _postgres_bin() -> Path | None:
    found = shutil.which("initdb") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)), None
    )
    return Path(found).resolve().parent if found else None


@pytest.fixture
def postgres():
    """A PostgreSQL cluster of its own in a temporary directory, on a free port: the URI of
    its `mlflow` database. As root, the cluster runs as Debian's `postgres` user."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("needs PostgreSQL's initdb (Debian: apt-get install postgresql)")
    prefix = []
    if os.geteuid() == 0:  # initdb refuses root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a postgres user to run the cluster as")
        prefix = ["runuser", "-u", "postgres", "--"]
    home = Path(tempfile.mkdtemp(prefix="tennis-pg-"))
    if prefix:
        os.chown(home, user.pw_uid, user.pw_gid)
    port = free_port()

    def pg(tool: str, *args: str) -> None:
        subprocess.run(
            [*prefix, str(bin_dir / tool), *args], check=True, capture_output=True, timeout=120
        )

    try:
        pg("initdb", "-D", str(home / "data"), "-U", "mlflow", "--auth=trust")
        pg(
            "pg_ctl",
            "-D",
            str(home / "data"),
            "-l",
            str(home / "log"),
            "-w",
            "-o",
            f"-p {port} -k {home} -c listen_addresses=127.0.0.1",
            "start",
        )
        pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow")
        yield f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        if (home / "data" / "postmaster.pid").exists():
            pg("pg_ctl", "-D", str(home / "data"), "-m", "immediate", "stop")
        shutil.rmtree(home, ignore_errors=True)


# 39 s on a quiet 2-core machine; the server's other tests run it on SQLite in the fast suite.
@pytest.mark.slow
def test_a_postgresql_store_behind_the_server(postgres, tiny_twin, tmp_path):
    srv = Server(tmp_path, store=postgres).start()
    try:
        out = run_cli(
            [
                "--multirun",
                "hydra/launcher=parallel",
                "hydra.launcher.n_jobs=2",
                *_smoke(tiny_twin, tmp_path, "hardware=cpu", "training.learning_rate=1e-4,2e-4"),
                f"hydra.sweep.dir={tmp_path / 'sweep'}",
            ],
            cwd=tmp_path,
            env={"MLFLOW_TRACKING_URI": srv.url},
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert f"MLflow server: {srv.url} (store {postgres})" in srv.banner
        runs = runs_of(srv.url)
        assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    finally:
        srv.stop()
    # The runs are in PostgreSQL itself, not in a file beside the server.
    assert runs_of(postgres)
    assert not list(tmp_path.glob("*.db"))
