"""Models in MLflow: a training run's best weights logged as an MLflow model and registered
under a name with an alias; and the one place where what evaluate, predict and
`model.init_from` (`transfer_from`) name is found and read.

The model is MLflow 3's LoggedModel (`models:/m-<id>`, also `runs:/<run id>/model`, listed in
the run's and the experiment's Models tabs): a folder with an `MLmodel` file whose `tennis_exp`
flavor names a weights-only checkpoint (`model.pth`) and the run's resolved config, and whose
signature is the frames a window holds in and the logits out. No pickled module and no
pyfunc: every file is read by the checkpoint loader (`weights_only=True`), so nothing loaded
runs code. URIs resolve against the configured store with explicit clients (MLflow's own
resolution of `models:/` and `runs:/` reads the process-wide store instead).
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from tennis_exp.engine import checkpoint
from tennis_exp.engine.checkpoint import Checkpoint
from tennis_exp.errors import UserError, first_line
from tennis_exp.files import atomic_write
from tennis_exp.tracking.runs import (
    Run,
    _client,
    _probe,
    config_params,
    filter_value,
    sqlite_file,
)

log = logging.getLogger(__name__)

FLAVOR = "tennis_exp"
MODEL_NAME = "model"  # the logged model's name in its run: runs:/<run id>/model
CHECKPOINT_FILE = "model.pth"
CONFIG_FILE = "config.yaml"
FORMS = (
    "a checkpoint file, models:/<name>@<alias>, models:/<name>/<version>, "
    "models:/<name>/latest, models:/m-<model id> or runs:/<run id>/<path>"
)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")
_ALIAS = re.compile(r"^[\w-]+$")  # MLflow's rule for an alias
_RESERVED_ALIAS = re.compile(r"^(latest|[vV]\d+)$")  # MLflow keeps these for versions
_SHOWN = 10  # names listed in a message


@dataclass(frozen=True)
class ModelUri:
    """A parsed `models:/` or `runs:/` URI."""

    kind: str  # alias, version, latest, logged (a LoggedModel's id) or run
    name: str  # the registered model's name, the logged model's id, or the run id
    ref: str = ""  # the alias, the version, or the path in the run


def parse(source: str) -> ModelUri | None:
    """The model URI `source` is, None for a file path; a malformed URI is a UserError."""
    if not _SCHEME.match(source):
        return None
    scheme, _, rest = source.partition(":/")
    bad = f"{source} is not a model URI: use {FORMS}"
    if scheme == "runs":
        run_id, _, path = rest.strip("/").partition("/")
        if not run_id or not path:
            raise UserError(
                f"{source} names no path in the run: runs:/<run id>/<path>, e.g. "
                "runs:/<run id>/model or runs:/<run id>/checkpoints/best.pth"
            )
        return ModelUri("run", run_id, path)
    if scheme != "models":
        raise UserError(bad)
    if re.fullmatch(r"m-[0-9a-f]+", rest):
        return ModelUri("logged", rest)
    if "@" in rest:
        name, _, alias = rest.partition("@")
        if name and _ALIAS.match(alias) and "/" not in name:
            return ModelUri("alias", name, alias)
        raise UserError(bad)
    name, _, version = rest.partition("/")
    if name and version == "latest":
        return ModelUri("latest", name)
    if name and version.isdigit():
        return ModelUri("version", name, version)
    raise UserError(bad)


def parse_register_as(value: str) -> tuple[str, str | None]:
    """`tracking.register_as`'s (name, alias or None), as MLflow's registry accepts them."""
    name, at, alias = value.partition("@")
    rule = "tracking.register_as is <name> or <name>@<alias>"
    if not name.strip() or any(c in name for c in "/:"):
        raise UserError(f"tracking.register_as={value} is invalid: {rule}, the name without / or :")
    if at and (not _ALIAS.match(alias) or _RESERVED_ALIAS.match(alias) or len(alias) > 255):
        raise UserError(
            f"tracking.register_as={value} is invalid: {rule}, the alias of letters, digits, _ "
            "and -, not latest or v<number> (MLflow keeps those for versions)"
        )
    return name, alias or None


def load_checkpoint(source: str, tracking_uri: str) -> Checkpoint:
    """The checkpoint `source` names (any of FORMS, or a model folder), downloaded from the
    store at `tracking_uri` when it is a URI, read weights-only."""
    uri = parse(source)
    if uri is None:
        path = Path(source)
        return _read(path, None) if path.is_dir() else checkpoint.load(path)
    artifact = locate(uri, source, tracking_uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stderr is for errors
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="tennis-exp-model-") as tmp:
        try:
            local = download_artifacts(
                artifact_uri=artifact, tracking_uri=tracking_uri, dst_path=tmp
            )
        except (MlflowException, OSError) as err:
            raise UserError(f"{source}: {artifact} cannot be read: {first_line(err)}") from None
        ckpt = _read(Path(local), source)
    log.info("%s: read from %s", source, artifact)
    return ckpt


def check_source(source: str, tracking_uri: str) -> None:
    """Before a run starts: a model URI is well formed and in the store (its files are read
    later); a file path is left to the loader."""
    uri = parse(source)
    if uri is not None:
        locate(uri, source, tracking_uri)


def locate(uri: ModelUri, source: str, tracking_uri: str) -> str:
    """The artifact URI (file:, mlflow-artifacts:, s3: ...) that `uri` stands for in the store;
    a UserError naming what is there when it is not."""
    from mlflow.exceptions import MlflowException

    store = f"the store {tracking_uri}"
    database = sqlite_file(tracking_uri)
    if database and not database.is_file():
        raise UserError(
            f"{source}: {store} does not exist; set tracking.uri (or MLFLOW_TRACKING_URI) to "
            "the store the model was logged to"
        )
    _probe(tracking_uri)
    client = _client(tracking_uri)
    if uri.kind == "logged":
        try:
            return client.get_logged_model(uri.name).artifact_location
        except MlflowException:
            raise UserError(f"{source}: no logged model {uri.name} in {store}") from None
    if uri.kind == "run":
        return _run_artifact(client, uri, source, store)
    try:
        registered = client.get_registered_model(uri.name)
    except MlflowException:
        names = [m.name for m in client.search_registered_models(max_results=_SHOWN)]
        raise UserError(
            f"{source}: no registered model named {uri.name} in {store} "
            f"(registered: {', '.join(names) or 'none'})"
        ) from None
    versions = sorted(
        int(v.version) for v in client.search_model_versions(f"name = {filter_value(uri.name)}")
    )
    if uri.kind == "alias":
        if uri.ref not in registered.aliases:
            aliases = ", ".join(f"{a} (version {v})" for a, v in registered.aliases.items())
            raise UserError(
                f"{source}: the model {uri.name} has no alias {uri.ref} "
                f"(aliases: {aliases or 'none'}; versions: {_listed(versions)})"
            )
        version = str(registered.aliases[uri.ref])
    elif uri.kind == "latest":
        if not versions:
            raise UserError(f"{source}: the model {uri.name} has no version yet")
        version = str(versions[-1])
    else:
        if int(uri.ref) not in versions:
            raise UserError(
                f"{source}: the model {uri.name} has no version {uri.ref} "
                f"(versions: {_listed(versions)})"
            )
        version = uri.ref
    return client.get_model_version_download_uri(uri.name, version)


def _run_artifact(client, uri: ModelUri, source: str, store: str) -> str:
    """runs:/<run id>/<path>: a logged model of the run by its name (runs:/<id>/model), as
    MLflow 3 resolves it, or one of the run's artifacts."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(uri.name)
    except MlflowException:
        raise UserError(f"{source}: no run {uri.name} in {store}") from None
    first, _, rest = uri.ref.partition("/")
    models = [client.get_logged_model(o.model_id) for o in run.outputs.model_outputs]
    for model in models:
        if model.name == first:
            return (
                posixpath.join(model.artifact_location, rest) if rest else model.artifact_location
            )
    parent = posixpath.dirname(uri.ref)
    listed = client.list_artifacts(uri.name, parent or None)
    if uri.ref not in {a.path for a in listed}:
        there = sorted(
            {a.path for a in listed} | ({m.name for m in models} if not parent else set())
        )
        raise UserError(
            f"{source}: the run has no {uri.ref} "
            f"(in {parent or 'the run'}: {', '.join(there[:_SHOWN]) or 'nothing'})"
        )
    return posixpath.join(run.info.artifact_uri, uri.ref)


def _listed(versions: list[int]) -> str:
    return ", ".join(map(str, versions[-_SHOWN:])) or "none"


def _read(local: Path, source: str | None) -> Checkpoint:
    """A checkpoint file, or the checkpoint an MLflow model folder's tennis_exp flavor names."""
    if not local.is_dir():
        return checkpoint.load(local, source)
    name = source or str(local)
    mlmodel = local / "MLmodel"
    if not mlmodel.is_file():
        raise UserError(
            f"{name} is a folder without an MLmodel file: name a checkpoint file in it, or an "
            "MLflow model logged by a training run"
        )
    import yaml

    try:
        flavors = yaml.safe_load(mlmodel.read_text()).get("flavors") or {}
    except (yaml.YAMLError, AttributeError) as err:
        raise UserError(f"{name}: its MLmodel file is not MLflow's: {first_line(err)}") from None
    named = (flavors.get(FLAVOR) or {}).get("checkpoint")
    if not named:
        raise UserError(
            f"{name} is an MLflow model without the {FLAVOR} flavor (it has: "
            f"{', '.join(flavors) or 'none'}): only models a training run logged are loaded, "
            "as weights, never as pickled code"
        )
    file = (local / named).resolve()
    if not file.is_relative_to(local.resolve()):
        raise UserError(f"{name}: its MLmodel names a checkpoint outside the model ({named})")
    return checkpoint.load(file, source)


def log_model(run: Run, cfg: DictConfig, best: Path, step: int) -> None:
    """The run's best weights as its MLflow model, registered as tracking.register_as says:
    once, at the run's end, by the process that logs. Its folder is <run dir>/model (a model
    folder that `checkpoint=` takes too); sending it waits out an outage like any logging."""
    folder = best.parent.parent / MODEL_NAME
    trained = checkpoint.load(best)
    kept = {k: v for k, v in trained.train_state.items() if k in ("epoch", "best_f1")}
    weights = Checkpoint(
        trained.model_state,
        trained.config,
        kept,
        trained.mlflow_run_id,
        trained.mlflow_tracking_uri,
    )
    checkpoint.save(folder / CHECKPOINT_FILE, weights)
    with atomic_write(folder / CONFIG_FILE) as tmp:
        tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    register_as = cfg.tracking.register_as
    sending = _ModelLogging(
        run, folder, cfg, step, *(parse_register_as(register_as) if register_as else (None, None))
    )
    run.calls.call("the model", sending.send)


def signature(cfg: DictConfig):
    """What the model takes and gives: uint8 frames [batch, window, 3, size, size] in, one
    logit per event out (their softmax is the events' probabilities)."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    size, window = cfg.data.image_size, cfg.data.window
    frames = TensorSpec(np.dtype(np.uint8), (-1, window, 3, size, size), "frames")
    logits = TensorSpec(np.dtype(np.float32), (-1, len(cfg.data.events)), "logits")
    return ModelSignature(inputs=Schema([frames]), outputs=Schema([logits]))


@dataclass
class _ModelLogging:
    """The calls that log and register the model, each done once: when the store stops
    answering part way, a retry goes on from the call that failed."""

    run: Run
    folder: Path
    cfg: DictConfig
    step: int
    register_name: str | None
    alias: str | None
    model_id: str = ""
    version: str = ""
    done: set[str] = field(default_factory=set)

    def send(self) -> None:
        steps = [
            ("create", self.create),
            ("upload", self.upload),
            ("link", self.link),
            ("register", self.register),
            ("alias", self.set_alias),
        ]
        for name, step in steps:
            if name not in self.done:
                step()
                self.done.add(name)
        registered = ""
        if self.register_name:
            at = f", models:/{self.register_name}@{self.alias}" if self.alias else ""
            registered = f"; registered as models:/{self.register_name}/{self.version}{at}"
        log.info("Model: models:/%s (runs:/%s/%s)%s", self.model_id, self.run.run_id,
                 MODEL_NAME, registered)  # fmt: skip

    def create(self) -> None:
        from mlflow.models import Model

        client = self.run.client
        experiment_id = client.get_run(self.run.run_id).info.experiment_id
        params = {k: str(v) for k, v in config_params(self.cfg).items()}
        model = client.create_logged_model(
            experiment_id, MODEL_NAME, self.run.run_id, params=params, model_type=FLAVOR
        )
        self.model_id = model.model_id
        mlmodel = Model(
            artifact_path=model.artifact_location,
            run_id=self.run.run_id,
            model_uuid=model.model_id,
            model_id=model.model_id,
            signature=signature(self.cfg),
        )
        mlmodel.add_flavor(
            FLAVOR,
            checkpoint=CHECKPOINT_FILE,
            config=CONFIG_FILE,
            events=list(self.cfg.data.events),
            loader="torch.load(weights_only=True)",
        )
        with atomic_write(self.folder / "MLmodel") as tmp:
            mlmodel.save(str(tmp))

    def upload(self) -> None:
        from mlflow.entities import LoggedModelStatus

        self.run.client.log_model_artifacts(self.model_id, str(self.folder))
        self.run.client.finalize_logged_model(self.model_id, LoggedModelStatus.READY)

    def link(self) -> None:
        from mlflow.entities import LoggedModelOutput

        self.run.client.log_outputs(self.run.run_id, [LoggedModelOutput(self.model_id, self.step)])

    def register(self) -> None:
        from mlflow.exceptions import MlflowException

        if not self.register_name:
            return
        client = self.run.client
        try:
            client.create_registered_model(self.register_name)
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        # A SQL registry finds the logged model behind models:/m-<id> through the process-wide
        # store, not the client's (MLflow's own TODO in SqlAlchemyStore.create_model_version).
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri

        with _use_tracking_uri(self.run.uri):
            version = client.create_model_version(
                self.register_name,
                f"models:/{self.model_id}",
                self.run.run_id,
                model_id=self.model_id,
            )
        self.version = str(version.version)

    def set_alias(self) -> None:
        if self.alias:
            self.run.client.set_registered_model_alias(self.register_name, self.alias, self.version)
