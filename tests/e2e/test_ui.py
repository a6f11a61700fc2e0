"""The MLflow UI (`make ui`), in a real headless Chromium with a fresh profile, opens on the
runs of the experiment and on the sweep's run, and shows its jobs for comparison.

Needs Debian's `chromium` (CI installs it). Screenshots are kept in test-artifacts/.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from ..helpers.commands import run_sweep, smoke_args
from ..helpers.configs import ROOT
from ..helpers.ports import free_port
from ..helpers.store import runs_of, sqlite_uri

CHROMIUM = shutil.which("chromium")
ARTIFACTS = ROOT / "test-artifacts"
# Flags for a closed network: no background connections, no sandbox as root.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
    "--virtual-time-budget=30000",
]


def _chromium(url: str, profile, *flags: str) -> str:
    """Chromium on `url` with the profile folder `profile` (a new folder: a fresh profile)."""
    out = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *flags, url],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_sweep_in_the_mlflow_ui(tiny_twin, store, tmp_path):
    uri = sqlite_uri(tmp_path)
    sweep = run_sweep(
        ["hardware=cpu,gpu1", *smoke_args(tiny_twin, tmp_path)], tmp_path / "sweep", tmp_path
    )
    assert sweep.returncode == 0, sweep.stderr
    experiment = MlflowClient(uri).get_experiment_by_name("tennis_4event").experiment_id
    runs = runs_of(uri)
    jobs = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    [parent] = [r for r in runs if r not in jobs]

    # `make ui`, which prints where the runs are.
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tennis_exp.server",
            "--ui",
            "--store",
            uri,
            "--port",
            str(free_port()),
            "--workers",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        printed = {}
        for line in server.stdout:
            name, _, url = line.strip().rpartition(": ")
            printed[name] = url
            if line.startswith("Ctrl-C stops it"):
                break
        runs_page = printed["Runs of tennis_4event"]
        sweep_page = printed[f"Newest sweep, {parent.info.run_name}"]
        base = runs_page.split("/#/")[0]

        # Each page in a fresh profile, as a newcomer opens it. Without the view in the address
        # MLflow 3.17 lands on the GenAI overview, with no sign of a training run:
        dom = _chromium(f"{base}/#/experiments/{experiment}", tmp_path / "fresh0", "--dump-dom")
        assert "No data available" in dom and parent.info.run_name not in dom
        # ... the printed address opens the runs table in the Model training view, the sweep a
        # row of it,
        dom = _chromium(runs_page, tmp_path / "fresh1", "--dump-dom")
        assert parent.info.run_name in dom and "Model registry" in dom
        assert "No data available" not in dom and "Judges" not in dom  # not the GenAI view
        ARTIFACTS.mkdir(exist_ok=True)
        shot = f"--screenshot={ARTIFACTS / 'mlflow_ui_runs.png'}"
        _chromium(runs_page, tmp_path / "fresh2", shot)
        # ... and the sweep's own page lists its jobs and its best one.
        dom = _chromium(sweep_page, tmp_path / "fresh3", "--dump-dom")
        assert "Model registry" in dom and "best_run_id" in dom and "best/val_macro_f1" in dom
        for name in [r.info.run_name for r in jobs]:
            assert name in dom

        profile = tmp_path / "chrome"
        ids = json.dumps([r.info.run_id for r in jobs], separators=(",", ":"))
        compare = f'{base}/#/compare-runs?runs={ids}&experiments=["{experiment}"]'
        dom = _chromium(compare, profile, "--dump-dom")
        for name in [r.info.run_name for r in jobs]:
            assert name in dom
        for column in ["test/macro_f1", "perf/samples_per_sec", "scaling.effective_batch_size"]:
            assert column in dom
        _chromium(compare, profile, f"--screenshot={ARTIFACTS / 'mlflow_ui_compare.png'}")
    finally:
        server.terminate()
        server.wait(timeout=60)
