"""Fixtures for every test: the tiny synthetic twin and an empty MLflow store made once per
session, and configs composed once and handed out as copies."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, open_dict

from tennis_exp.data.frames import build_datasets

from .helpers.configs import compose_config, smoke_config
from .helpers.store import copy_store, sqlite_uri


@pytest.fixture(scope="session")
def tiny_twin(tmp_path_factory) -> Path:
    """The frames `debug=smoke` generates (the tiny preset of the synthetic tennis twin), made
    once per session through the runs' own data path: point data.root at it and a run finds it
    made. Read only: a test that changes frames copies it first."""
    root = tmp_path_factory.mktemp("tiny-twin")
    cfg = compose_config(["debug=smoke", f"data.root={root / 'data'}"])
    with open_dict(cfg):
        cfg.data.frame_cache = False  # the frames only: each run builds its cache where told
    build_datasets(cfg.data, cfg.seed)
    return root / "data"


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store, its schema made once per session: copy_store() copies it
    where a test's run will log (tests of a store's creation start without it)."""
    folder = tmp_path_factory.mktemp("empty-store")
    MlflowClient(sqlite_uri(folder)).search_experiments()  # makes the schema
    return folder / "mlflow.db"


@pytest.fixture
def store(empty_store: Path, tmp_path: Path) -> str:
    """The URI of tmp_path/mlflow.db, an empty store whose schema is made: where
    smoke_args(..., tmp_path) and smoke_cfg log."""
    return copy_store(empty_store, tmp_path)


@pytest.fixture
def smoke_cfg(tiny_twin: Path, store: str, tmp_path: Path) -> DictConfig:
    """`debug=smoke` on the CPU on the tiny twin, its frame cache and MLflow store in tmp_path."""
    return smoke_config(tiny_twin, tmp_path)
