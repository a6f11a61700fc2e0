"""The MLflow UI, in a real headless Chromium, shows a sweep and its jobs for comparison.

Needs Debian's `chromium` (CI installs it). Screenshots are kept in test-artifacts/.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from .conftest import ROOT, run_cli

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chromium(url: str, tmp_path, *flags: str) -> str:
    out = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chrome'}", *flags, url],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_sweep_in_the_mlflow_ui(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = run_cli(
        [
            "--multirun",
            "hardware=cpu,gpu1",
            "debug=smoke",
            f"data.root={tmp_path / 'data'}",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"tracking.uri={uri}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=tmp_path,
    )
    assert sweep.returncode == 0, sweep.stderr
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tennis_4event").experiment_id
    runs = client.search_runs([experiment])
    jobs = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    [parent] = [r for r in runs if r not in jobs]

    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if urllib.request.urlopen(f"{base}/health", timeout=2).status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the MLflow UI did not start"
            time.sleep(1)

        ARTIFACTS.mkdir(exist_ok=True)
        runs_page = f"{base}/#/experiments/{experiment}/runs"
        dom = _chromium(runs_page, tmp_path, "--dump-dom")
        assert parent.info.run_name in dom  # the sweep, one expandable row
        _chromium(runs_page, tmp_path, f"--screenshot={ARTIFACTS / 'mlflow_ui_runs.png'}")

        ids = json.dumps([r.info.run_id for r in jobs], separators=(",", ":"))
        compare = f'{base}/#/compare-runs?runs={ids}&experiments=["{experiment}"]'
        dom = _chromium(compare, tmp_path, "--dump-dom")
        for name in [r.info.run_name for r in jobs]:
            assert name in dom
        for column in ["test/macro_f1", "perf/samples_per_sec", "scaling.effective_batch_size"]:
            assert column in dom
        _chromium(compare, tmp_path, f"--screenshot={ARTIFACTS / 'mlflow_ui_compare.png'}")
    finally:
        server.terminate()
        server.wait(timeout=30)
