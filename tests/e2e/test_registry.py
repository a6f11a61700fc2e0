"""Models in the registry as users type them: a run registers its model, then predict and
evaluate take `models:/<name>@<alias>` and `runs:/<run id>/<path>` from a fresh directory
against the same store (a SQLite file, and the project's MLflow server); a registered pickle
that would run code is refused in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import open_dict

from tennis_exp.inference.split_report import evaluate_checkpoint
from tennis_exp.synthetic.match import write_match

from ..helpers.commands import run_cli, smoke_args
from ..helpers.configs import CONF
from ..helpers.store import copy_store, runs_of, sqlite_uri
from .test_server import Server


def _train(data: Path, root: Path, env: dict[str, str] | None = None) -> str:
    """A smoke run registered as tennis@champion; its run id."""
    out = run_cli(
        [*smoke_args(data, root, "hardware=cpu", store=env is None),
         "tracking.register_as=tennis@champion", f"hydra.run.dir={root / 'run'}"],
        cwd=root, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert ", models:/tennis@champion" in out.stdout + out.stderr
    return torch.load(root / "run" / "model" / "model.pth", weights_only=True)["mlflow_run_id"]


@pytest.fixture(scope="module")
def registered(tiny_twin, empty_store, tmp_path_factory):
    """A SQLite store whose run registered its model, and a short match to predict on."""
    root = tmp_path_factory.mktemp("registered")
    copy_store(empty_store, root)
    run_id = _train(tiny_twin, root)
    write_match(root / "matches", 0, seconds=8)
    return root, run_id


def _fresh(tmp_path: Path) -> Path:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    return fresh


def _predict(match: Path, checkpoint: str, fresh: Path, *store: str, env=None):
    return run_cli(
        [f"checkpoint={checkpoint}", f"video={match}", "hardware=cpu",
         "predict.min_confidence=0", *store, f"hydra.run.dir={fresh / 'p'}"],
        cwd=fresh, env=env, module="tennis_exp.predict",
    )  # fmt: skip


def _evaluate(data: Path, checkpoint: str, fresh: Path, *store: str, env=None):
    return run_cli(
        [f"checkpoint={checkpoint}", "debug=smoke", "hardware=cpu", f"data.root={data}",
         f"data.cache_dir={fresh / 'cache'}", *store, f"hydra.run.dir={fresh / 'e'}"],
        cwd=fresh, env=env, module="tennis_exp.evaluate",
    )  # fmt: skip


def _nested_user(uri: str, run_id: str, role: str, source: str):
    [used] = [r for r in runs_of(uri) if r.data.tags.get("tennis_exp.role") == role]
    assert used.info.status == "FINISHED"
    assert used.data.tags["checkpoint"] == source
    assert used.data.tags["mlflow.parentRunId"] == run_id  # nested under the training run


def test_predict_takes_a_registered_model_from_a_fresh_directory(registered, tmp_path):
    root, run_id = registered
    fresh = _fresh(tmp_path)
    store = sqlite_uri(root)
    out = _predict(root / "matches" / "match_000.avi", "models:/tennis@champion", fresh,
                   f"tracking.uri={store}")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert (fresh / "p" / "match_000" / "segments.csv").is_file()
    _nested_user(store, run_id, "prediction", "models:/tennis@champion")
    assert not (fresh / "mlflow.db").exists() and not (fresh / "mlartifacts").exists()


def test_evaluate_takes_a_run_artifact_in_process(registered, tiny_twin, tmp_path, monkeypatch):
    # The in-process twin of the slow subprocess test below.
    root, run_id = registered
    store, source = sqlite_uri(root), f"runs:/{run_id}/checkpoints/best.pth"
    monkeypatch.chdir(_fresh(tmp_path))
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("evaluate", [f"checkpoint={source}", "debug=smoke", "hardware=cpu",
                                   f"data.root={tiny_twin}", f"tracking.uri={store}"])  # fmt: skip
    with open_dict(cfg):
        cfg.data.cache_dir = str(tmp_path / "cache")
    result = evaluate_checkpoint(cfg, tmp_path / "e")
    training = MlflowClient(store).get_run(run_id).data.metrics
    assert result.metrics["macro_f1"] == pytest.approx(training["test/macro_f1"], rel=1e-6)
    _nested_user(store, run_id, "evaluation", source)


@pytest.mark.slow  # a 15 s subprocess; the in-process twin is in the fast suite
def test_evaluate_takes_a_run_artifact_from_a_fresh_directory(registered, tiny_twin, tmp_path):
    root, run_id = registered
    fresh = _fresh(tmp_path)
    out = _evaluate(tiny_twin, f"runs:/{run_id}/checkpoints/best.pth", fresh,
                    f"tracking.uri={sqlite_uri(root)}")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "video accuracy (vote)" in out.stdout
    assert not (fresh / "mlflow.db").exists()


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.slow  # a subprocess; the refusal itself is in tests/unit/test_registry.py
def test_a_registered_pickle_that_runs_code_is_one_line(registered, tiny_twin, tmp_path):
    root, _ = registered
    store, marker = sqlite_uri(root), tmp_path / "pwned"
    evil = tmp_path / "evil"
    shutil.copytree(root / "run" / "model", evil)
    torch.save({"model_state_dict": {}, "config": _RunsCode(marker)}, evil / "model.pth")
    client = MlflowClient(store)
    model = client.create_logged_model(client.get_experiment_by_name("tennis_4event").experiment_id)
    client.log_model_artifacts(model.model_id, str(evil))
    client.create_registered_model("evil")
    client.create_model_version("evil", model.artifact_location)
    client.set_registered_model_alias("evil", "champion", "1")
    runs_before = len(runs_of(store))
    fresh = _fresh(tmp_path)
    out = _evaluate(tiny_twin, "models:/evil@champion", fresh, f"tracking.uri={store}")
    assert out.returncode == 1
    refused = "Error: checkpoint models:/evil@champion holds Python objects that weights-only"
    assert out.stderr.strip().splitlines()[-1].startswith(refused), out.stderr
    assert not marker.exists() and len(runs_of(store)) == runs_before


@pytest.mark.slow  # a server, a training run and two commands: about a minute
def test_the_registry_through_the_mlflow_server(empty_store, tiny_twin, tmp_path):
    server = Server(tmp_path, copy_store(empty_store, tmp_path, "server.db")).start()
    try:
        env = {"MLFLOW_TRACKING_URI": server.url}
        train_dir = tmp_path / "train"
        train_dir.mkdir()
        run_id = _train(tiny_twin, train_dir, env)
        write_match(tmp_path / "matches", 0, seconds=8)
        fresh = _fresh(tmp_path)
        out = _predict(tmp_path / "matches" / "match_000.avi", "models:/tennis@champion", fresh,
                       env=env)  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        out = _evaluate(tiny_twin, f"runs:/{run_id}/model", fresh, env=env)
        assert out.returncode == 0, out.stderr[-3000:]
        _nested_user(server.url, run_id, "prediction", "models:/tennis@champion")
        _nested_user(server.url, run_id, "evaluation", f"runs:/{run_id}/model")
        # The model went through the server into its artifact store.
        [model] = MlflowClient(server.url).get_run(run_id).outputs.model_outputs
        stored = tmp_path / "server-artifacts"
        assert list(stored.rglob(f"{model.model_id}/artifacts/model.pth"))
        assert not (fresh / "mlflow.db").exists() and not (train_dir / "mlflow.db").exists()
    finally:
        server.stop()
