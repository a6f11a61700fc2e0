"""Fixtures for every test: the tiny synthetic twin made once per session, and configs
composed once and handed out as copies."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import DictConfig, open_dict

from tennis_exp.data.frames import build_datasets

from .helpers.configs import compose_config, smoke_config


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


@pytest.fixture
def smoke_cfg(tiny_twin: Path, tmp_path: Path) -> DictConfig:
    """`debug=smoke` on the CPU on the tiny twin, its frame cache and MLflow store in tmp_path."""
    return smoke_config(tiny_twin, tmp_path)
