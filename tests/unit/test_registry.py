"""Models in MLflow (tracking/models.py): the URIs evaluate, predict and transfer_from take,
the model a run logs and registers, and the one resolver, against a real SQLite store; a
pickle that would run code is refused under a model URI as it is in a file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf, open_dict
from requests import ConnectionError

from tennis_exp.config import validate
from tennis_exp.engine.checkpoint import Checkpoint, save
from tennis_exp.engine.train import initial_model
from tennis_exp.errors import UserError
from tennis_exp.models.cnn_lstm import build_model
from tennis_exp.tracking import retry
from tennis_exp.tracking.models import (
    ModelUri,
    load_checkpoint,
    log_model,
    parse,
    parse_register_as,
)
from tennis_exp.tracking.runs import mlflow_run

from ..helpers.configs import compose_config
from ..helpers.store import EXPERIMENT, copy_store

RUN_ID = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("source", "parsed"),
    [
        ("models:/tennis@champion", ModelUri("alias", "tennis", "champion")),
        ("models:/tennis/3", ModelUri("version", "tennis", "3")),
        ("models:/tennis/latest", ModelUri("latest", "tennis")),
        ("models:/m-0a1b2c", ModelUri("logged", "m-0a1b2c")),
        ("models:/tennis 4-event@prod-2", ModelUri("alias", "tennis 4-event", "prod-2")),
        (f"runs:/{RUN_ID}/model", ModelUri("run", RUN_ID, "model")),
        (f"runs:/{RUN_ID}/checkpoints/best.pth", ModelUri("run", RUN_ID, "checkpoints/best.pth")),
        ("outputs/run/checkpoints/best.pth", None),
        ("/abs/best_model.pth", None),
        ("run:1.pth", None),  # a file whose name holds a colon
    ],
)
def test_model_uris_parse(source, parsed):
    assert parse(source) == parsed


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("models:/tennis", "models:/tennis is not a model URI: use a checkpoint file, models:/"),
        ("models:/", "is not a model URI"),
        ("models:/tennis@", "is not a model URI"),
        ("models:/tennis@a/b", "is not a model URI"),
        ("models:/tennis/Production", "is not a model URI"),  # stages are gone from MLflow 3
        ("models:/tennis/3/MLmodel", "is not a model URI"),
        (f"runs:/{RUN_ID}", f"runs:/{RUN_ID} names no path in the run: runs:/<run id>/<path>"),
        ("runs:/", "names no path in the run"),
        ("s3://bucket/best.pth", "s3://bucket/best.pth is not a model URI"),
    ],
)
def test_malformed_model_uris_are_one_line(source, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        parse(source)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("tennis", ("tennis", None)),
        ("tennis@champion", ("tennis", "champion")),
        ("tennis baseline@prod_2", ("tennis baseline", "prod_2")),
        ("a/b", "the name without / or :"),
        ("@champion", "the name without / or :"),
        ("tennis@latest", "not latest or v<number>"),
        ("tennis@v3", "not latest or v<number>"),
        ("tennis@bad alias", "the alias of letters, digits, _ and -"),
    ],
)
def test_register_as_is_a_name_with_an_optional_alias(value, expected):
    if isinstance(expected, tuple):
        assert parse_register_as(value) == expected
    else:
        with pytest.raises(UserError, match=f"tracking.register_as={value} is invalid: .*"):
            parse_register_as(value)
        with pytest.raises(UserError, match=expected.replace("|", r"\|")):
            parse_register_as(value)


def _cfg(store: str, *overrides: str):
    cfg = compose_config(["debug=smoke", "hardware=cpu", "data.root=/frames", *overrides])
    with open_dict(cfg):
        cfg.tracking.uri = store
    return cfg


def _train_run(cfg, folder: Path, register_as: str | None) -> tuple[str, Checkpoint]:
    """What a finished run leaves: best.pth in its folder and as an artifact, and its model
    logged (and registered) as train's last step does."""
    with open_dict(cfg):
        cfg.tracking.register_as = register_as
    model = build_model(cfg.model, len(cfg.data.events))
    best = folder / "checkpoints" / "best.pth"
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    with mlflow_run(cfg.tracking.uri, EXPERIMENT, "train", {}) as run:
        written = Checkpoint(model.state_dict(), config, {"epoch": 1, "best_f1": 0.5, "step": 9},
                             run.run_id, cfg.tracking.uri)  # fmt: skip
        save(best, written)
        run.log_artifact(best, "checkpoints")
        log_model(run, cfg, best, step=1)
    return run.run_id, written


@pytest.fixture(scope="module")
def registry(empty_store, tmp_path_factory):
    """A SQLite store holding a run whose model is registered as tennis@champion (version 1)
    and a second run's as version 2, without alias."""
    root = tmp_path_factory.mktemp("registry")
    store = copy_store(empty_store, root)
    cfg = _cfg(store)
    first, written = _train_run(cfg, root / "run1", "tennis@champion")
    second, _ = _train_run(_cfg(store), root / "run2", "tennis")
    return {"root": root, "store": store, "run": first, "second": second, "written": written}


def _same_weights(ckpt: Checkpoint, expected: Checkpoint) -> None:
    assert ckpt.model_state.keys() == expected.model_state.keys()
    assert all(torch.equal(ckpt.model_state[k], v) for k, v in expected.model_state.items())


def test_the_run_logs_its_model_and_registers_it(registry):
    client = MlflowClient(registry["store"])
    run = client.get_run(registry["run"])
    [output] = run.outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    assert model.name == "model" and model.source_run_id == registry["run"]
    assert model.status == LoggedModelStatus.READY
    assert model.params["model.backbone"] == "small_cnn"
    registered = client.get_registered_model("tennis")
    assert registered.aliases == {"champion": 1}
    version = client.get_model_version("tennis", "1")
    assert version.source == f"models:/{model.model_id}" and version.run_id == registry["run"]
    assert client.get_model_version("tennis", "2").run_id == registry["second"]

    folder = registry["root"] / "run1" / "model"
    assert sorted(p.name for p in folder.iterdir()) == ["MLmodel", "config.yaml", "model.pth"]
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    assert mlmodel["model_id"] == model.model_id and mlmodel["run_id"] == registry["run"]
    flavor = mlmodel["flavors"]["tennis_exp"]
    assert flavor["checkpoint"] == "model.pth" and flavor["events"] == [
        "Smash", "Net Play", "Rally", "Serve"]  # fmt: skip
    assert "python_function" not in mlmodel["flavors"] and "pytorch" not in mlmodel["flavors"]
    assert '"shape": [-1, 16, 3, 32, 32]' in mlmodel["signature"]["inputs"]
    assert '"shape": [-1, 4]' in mlmodel["signature"]["outputs"]
    assert yaml.safe_load((folder / "config.yaml").read_text())["model"]["backbone"] == "small_cnn"
    # The weights alone: the optimizer and the rest of the train state stay in best.pth.
    stored = torch.load(folder / "model.pth", weights_only=True)
    assert set(stored) == {"model_state_dict", "config", "epoch", "best_f1", "mlflow_run_id",
                           "mlflow_tracking_uri"}  # fmt: skip


@pytest.mark.parametrize(
    "form",
    [
        "models:/tennis@champion",
        "models:/tennis/1",
        "models:/{logged}",
        "runs:/{run}/model",
        "runs:/{run}/model/model.pth",
        "runs:/{run}/checkpoints/best.pth",
        "{root}/run1/model",  # the model folder on disk
    ],
)
def test_every_form_resolves_to_the_runs_weights(registry, form, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a fresh directory: the store comes from the config alone
    logged = MlflowClient(registry["store"]).get_run(registry["run"]).outputs.model_outputs[0]
    source = form.format(run=registry["run"], logged=logged.model_id, root=registry["root"])
    ckpt = load_checkpoint(source, registry["store"])
    _same_weights(ckpt, registry["written"])
    assert ckpt.mlflow_run_id == registry["run"]  # an evaluation nests under the training run
    assert ckpt.config["model"]["backbone"] == "small_cnn"
    assert ckpt.name == (str(ckpt.path) if form.startswith("{root}") else source)
    assert not (tmp_path / "mlflow.db").exists() and not list(tmp_path.iterdir())


def test_latest_is_the_newest_version(registry):
    ckpt = load_checkpoint("models:/tennis/latest", registry["store"])
    assert ckpt.mlflow_run_id == registry["second"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("models:/nope@champion",
         "models:/nope@champion: no registered model named nope in the store {store} "
         "(registered: tennis)"),
        ("models:/tennis@prod",
         "models:/tennis@prod: the model tennis has no alias prod (aliases: champion "
         "(version 1); versions: 1, 2)"),
        ("models:/tennis/7",
         "models:/tennis/7: the model tennis has no version 7 (versions: 1, 2)"),
        ("models:/m-0123", "models:/m-0123: no logged model m-0123 in the store {store}"),
        (f"runs:/{RUN_ID}/model", f"runs:/{RUN_ID}/model: no run {RUN_ID} in the store {{store}}"),
        ("runs:/{run}/checkpoints/last.pth",
         "runs:/{run}/checkpoints/last.pth: the run has no checkpoints/last.pth (in "
         "checkpoints: checkpoints/best.pth)"),
        ("runs:/{run}/best.pth",
         "runs:/{run}/best.pth: the run has no best.pth (in the run: checkpoints, model)"),
        ("runs:/{run}/checkpoints", "runs:/{run}/checkpoints is a folder without an MLmodel file"),
    ],
)  # fmt: skip
def test_what_is_not_in_the_store_is_one_line_naming_what_is(registry, source, message):
    source = source.format(run=registry["run"])
    expected = message.format(run=registry["run"], store=registry["store"])
    with pytest.raises(UserError) as err:
        load_checkpoint(source, registry["store"])
    assert str(err.value).startswith(expected), str(err.value)


def test_a_store_that_is_not_there_is_named_and_not_created(tmp_path):
    store = f"sqlite:///{tmp_path / 'other.db'}"
    with pytest.raises(
        UserError,
        match=r"models:/tennis@champion: the store .*other.db does not "
        r"exist; set tracking.uri \(or MLFLOW_TRACKING_URI\)",
    ):
        load_checkpoint("models:/tennis@champion", store)  # fmt: skip
    assert not (tmp_path / "other.db").exists()


class _RunsCode:
    """Unpickling it calls open(marker, "w"): code run by the loader, which creates the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _register_folder(store: str, folder: Path, name: str) -> None:
    """Log `folder` as a model and register it as name@champion, as another tool could."""
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    model = client.create_logged_model(experiment, "model")
    client.log_model_artifacts(model.model_id, str(folder))
    client.create_registered_model(name)
    version = client.create_model_version(name, model.artifact_location)
    client.set_registered_model_alias(name, "champion", version.version)


def test_a_pickle_that_runs_code_is_refused_under_a_model_uri(registry, tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "evil"
    shutil.copytree(registry["root"] / "run1" / "model", folder)
    torch.save({"model_state_dict": {}, "config": _RunsCode(marker)}, folder / "model.pth")
    control = tmp_path / "control.pth"
    shutil.copy(folder / "model.pth", control)
    torch.load(control, weights_only=False)  # the unsafe way runs it ...
    assert marker.exists()
    marker.unlink()
    _register_folder(registry["store"], folder, "evil")
    with pytest.raises(
        UserError,
        match="checkpoint models:/evil@champion holds Python objects "
        "that weights-only loading refuses; it is not loaded",
    ):
        load_checkpoint("models:/evil@champion", registry["store"])  # fmt: skip
    assert not marker.exists()  # ... the resolver does not


def test_models_of_other_flavors_and_escaping_paths_are_refused(registry, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "MLmodel").write_text(
        yaml.safe_dump({"flavors": {"pytorch": {"model_data": "data"}, "python_function": {}}})
    )
    _register_folder(registry["store"], pickled, "pickled")
    with pytest.raises(
        UserError,
        match="models:/pickled@champion is an MLflow model without the "
        "tennis_exp flavor \\(it has: python_function, pytorch\\)",
    ):
        load_checkpoint("models:/pickled@champion", registry["store"])  # fmt: skip
    escaping = tmp_path / "escaping"
    escaping.mkdir()
    (escaping / "MLmodel").write_text(
        yaml.safe_dump({"flavors": {"tennis_exp": {"checkpoint": "../../best.pth"}}})
    )
    with pytest.raises(UserError, match="names a checkpoint outside the model"):
        load_checkpoint(str(escaping), registry["store"])


def test_validate_checks_register_as_and_a_model_uri_before_the_run(registry):
    store = registry["store"]
    with pytest.raises(UserError, match="tracking.register_as=t@latest is invalid"):
        validate(_cfg(store, "tracking.register_as=t@latest"))
    with pytest.raises(UserError, match="set tracking.log_model=true, or tracking.register_as"):
        validate(_cfg(store, "tracking.register_as=t", "tracking.log_model=false"))
    with pytest.raises(UserError, match="models:/tennis@prod: the model tennis has no alias"):
        validate(_cfg(store, "experiment=badminton_frozen", "transfer_from=models:/tennis@prod"))
    validate(_cfg(store, "experiment=badminton_frozen", "transfer_from=models:/tennis@champion"))
    # A dry run reads no store, but the URI's form is still checked.
    validate(_cfg(store, "model.init_from=models:/tennis@prod", "dry_run=true"))
    with pytest.raises(UserError, match="models:/tennis is not a model URI"):
        validate(_cfg(store, "model.init_from=models:/tennis", "dry_run=true"))


def test_transfer_from_a_registered_model_starts_the_run_from_its_weights(registry):
    cfg = _cfg(registry["store"], "model.init_from=models:/tennis@champion")
    model = initial_model(cfg, None)
    _same_weights(Checkpoint(model.state_dict()), registry["written"])


def test_a_store_away_mid_way_resumes_the_model_where_it_failed(empty_store, tmp_path, monkeypatch):
    # The upload meets a store that does not answer once: the held-back logging sends the rest
    # later, without a second logged model or registered version.
    monkeypatch.setattr(retry.time, "sleep", lambda seconds: None)
    store = copy_store(empty_store, tmp_path)
    upload = MlflowClient.log_model_artifacts
    failures = [ConnectionError("Connection refused")]

    def away_once(self, *args, **kwargs):
        if failures:
            raise failures.pop()
        return upload(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_model_artifacts", away_once)
    run_id, _ = _train_run(_cfg(store), tmp_path / "run", "tennis@champion")
    client = MlflowClient(store)
    experiment = client.get_run(run_id).info.experiment_id
    assert not failures and len(client.search_logged_models([experiment])) == 1
    assert len(client.get_run(run_id).outputs.model_outputs) == 1
    assert [v.version for v in client.search_model_versions("name = 'tennis'")] == [1]
    assert load_checkpoint("models:/tennis@champion", store).mlflow_run_id == run_id
