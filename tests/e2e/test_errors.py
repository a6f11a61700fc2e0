"""Failures of a run as users meet them, in a subprocess: an unreachable tracking server, a
diverging loss; each one line, the run marked."""

from __future__ import annotations

from ..helpers.commands import run_cli, smoke_args
from ..helpers.ports import free_port
from ..helpers.store import only_run, sqlite_uri


def _smoke(data, tmp_path, *extra):
    return smoke_args(
        data, tmp_path, "hardware=cpu", f"hydra.run.dir={tmp_path / 'run'}", *extra, store=False
    )


def test_unreachable_tracking_server_fails_before_any_work(tmp_path):
    port = free_port()  # nobody listens on it
    out = run_cli(
        _smoke(tmp_path / "data", tmp_path),
        cwd=tmp_path,
        env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"},
    )
    assert out.returncode == 1
    [line] = out.stderr.strip().splitlines()
    assert line.startswith(f"Error: MLflow tracking server http://127.0.0.1:{port} is unreachable")
    assert not (tmp_path / "data").exists()  # no data generated, no training started


def test_diverging_loss_stops_with_epoch_and_step(tiny_twin, store, tmp_path):
    uri = sqlite_uri(tmp_path)
    out = run_cli(
        _smoke(
            tiny_twin,
            tmp_path,
            "training.learning_rate=1e30",
            "training.grad_clip=null",
            "training.epochs=3",
            f"tracking.uri={uri}",
        ),
        cwd=tmp_path,
    )
    assert out.returncode == 1
    # (MLflow may log the creation of its new store above it.)
    line = out.stderr.strip().splitlines()[-1]
    assert "Traceback" not in out.stderr
    assert line.startswith("Error: training loss became nan at epoch 1 step ")
    assert "no epoch had finished, so there is no checkpoint" in line
    assert "lower training.learning_rate" in line
    run = only_run(uri)
    assert run.info.status == "FAILED" and "training loss became nan" in run.data.tags["error"]
