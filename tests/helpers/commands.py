"""The commands as users type them, each in a subprocess of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .configs import ROOT
from .store import sqlite_uri


def smoke_args(data: Path, folder: Path, *extra: str, store: bool = True) -> list[str]:
    """`debug=smoke` on the frames at `data` (the session's tiny twin), its frame cache and,
    with `store`, its SQLite MLflow store in `folder`; then `extra`."""
    tracking = [f"tracking.uri={sqlite_uri(folder)}"] if store else []
    return [
        "debug=smoke",
        f"data.root={data}",
        f"data.cache_dir={folder / 'cache'}",
        *tracking,
        *extra,
    ]


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


def run_sweep(args: list[str], sweep_dir: Path, cwd: Path, **kwargs):
    """`python -m tennis_exp --multirun ARGS hydra.sweep.dir=SWEEP_DIR` in a subprocess."""
    return run_cli(["--multirun", *args, f"hydra.sweep.dir={sweep_dir}"], cwd, **kwargs)


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
