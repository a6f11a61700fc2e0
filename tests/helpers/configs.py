"""Configs composed as the commands compose them (Hydra's compose API), and one process's
training loop run on one."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from tennis_exp.config import register_configs
from tennis_exp.engine.distributed import Dist
from tennis_exp.engine.hardware import plan_run
from tennis_exp.engine.loop import Job
from tennis_exp.engine.train import fit_and_test

from .store import sqlite_uri

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"

register_configs()


def compose_config(overrides: list[str] | None = None, hydra: bool = False) -> DictConfig:
    """The config `python -m tennis_exp OVERRIDES` runs with, a copy of its own to change; with
    `hydra`, Hydra's own node (launcher, sweeper) too, composed afresh."""
    if hydra:
        return _compose(tuple(overrides or []), hydra=True)
    return copy.deepcopy(_composed(tuple(overrides or [])))


@cache
def _composed(overrides: tuple[str, ...]) -> DictConfig:
    """Each set of overrides composed once per session: copies are handed out."""
    return _compose(overrides, hydra=False)


def _compose(overrides: tuple[str, ...], hydra: bool) -> DictConfig:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def smoke_config(data: Path, folder: Path, *overrides: str, hardware: str = "cpu") -> DictConfig:
    """`debug=smoke` on `hardware` and the frames at `data` (the session's tiny twin), its frame
    cache and SQLite MLflow store in `folder`; then `overrides`."""
    cfg = compose_config(["debug=smoke", f"hardware={hardware}", *overrides])
    with open_dict(cfg):
        cfg.data.root = str(data)
        cfg.data.cache_dir = str(folder / "cache")
        cfg.tracking.uri = sqlite_uri(folder)
    return cfg


def fit_untracked(cfg: DictConfig, output_dir: Path) -> float:
    """The training loop of one process on `cfg`, with no MLflow run: fit, then test."""
    return fit_and_test(Job(cfg, plan_run(cfg), output_dir, None, ""), Dist(), None, None)
