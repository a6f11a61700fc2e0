"""Fixtures for every test: configs composed once and handed out as copies."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import DictConfig, open_dict

from .helpers.configs import compose_config


@pytest.fixture
def smoke_cfg(tmp_path: Path) -> DictConfig:
    """`debug=smoke` on the CPU, with its data and MLflow store inside tmp_path."""
    cfg = compose_config(["debug=smoke", "hardware=cpu"])
    with open_dict(cfg):
        cfg.data.root = str(tmp_path / "data")
        cfg.data.cache_dir = str(tmp_path / "cache")
        cfg.tracking.uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return cfg
