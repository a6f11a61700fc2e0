"""Shared fixtures: composed configs (Hydra's compose API) and CLI subprocess runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from tennis_exp.config import register_configs
from tennis_exp.engine.distributed import Dist
from tennis_exp.engine.hardware import plan_run
from tennis_exp.engine.loop import Job
from tennis_exp.engine.train import fit_and_test

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

register_configs()


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides or [])


@pytest.fixture
def smoke_cfg(tmp_path: Path) -> DictConfig:
    """`debug=smoke` on the CPU, with its data and MLflow store inside tmp_path."""
    cfg = compose_config(["debug=smoke", "hardware=cpu"])
    with open_dict(cfg):
        cfg.data.root = str(tmp_path / "data")
        cfg.data.cache_dir = str(tmp_path / "cache")
        cfg.tracking.uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return cfg


def fit_untracked(cfg: DictConfig, output_dir: Path) -> float:
    """The training loop of one process on `cfg`, with no MLflow run: fit, then test."""
    return fit_and_test(Job(cfg, plan_run(cfg), output_dir, None, ""), Dist(), None, None)


def run_cli(
    args: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: int = 300,
    module: str = "tennis_exp",
):
    """`python -m tennis_exp ARGS` (or another command's module) in a subprocess, as a user
    types it."""
    full_env = {
        k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "HYDRA_FULL_ERROR")
    }
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_quick_bench(module: str, tmp_path: Path, written: str) -> tuple[str, str]:
    """`python -m bench.<module> --quick`, its data and results in tmp_path: (the one report
    it wrote, named like `written`, and what it printed)."""
    results = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", "--quick", "--data-dir", str(tmp_path / "data"),
         "--results-dir", str(results)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = results.glob(written)
    return path.read_text(), proc.stdout


def table_rows(text: str, header: str) -> list[list[str]]:
    """The cells of a markdown table's rows, without the row that starts with `header`."""
    return [
        [cell.strip() for cell in line.split("|")[1:-1]]
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith(f"| {header} ")
    ]
