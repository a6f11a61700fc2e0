"""Issue 16's benchmark: `python -m bench.sweep` (make bench-sweep).

1. A sweep of four CPU jobs (`seed=1,2,3,4`, the whole tiny synthetic twin at 64 px, 4 epochs
   each, about 20 s of training per job), its jobs
   one after the other (Hydra's basic launcher) against side by side (`hydra/launcher=parallel`,
   one job per core): the command's wall time, sequential and parallel runs interleaved.
2. What an MLflow server costs per logged epoch against the SQLite file: the metrics one
   training epoch logs (the loop's 25), logged epoch after epoch through the project's run
   wrapper into a SQLite file and into `python -m tennis_exp.server` on 127.0.0.1 (its
   default SQLite database store), interleaved; the median time per epoch.

Prints a markdown table (machine, load) and writes it to bench/results/<timestamp>-sweep.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench.results import add_dirs, load, machine, publish
from tennis_exp.config import EVENTS, metric_name, usable_cpus
from tennis_exp.tracking.runs import mlflow_run

JOB = [
    "hardware=cpu", "debug=smoke", "training.epochs=4", "training.max_batches=null",
    "data.max_videos_per_action=null", "data.image_size=64",
]  # fmt: skip


def sweep_seconds(tmp: Path, launcher: list[str], name: str) -> float:
    """Wall time of one 4-job sweep command."""
    args = [
        sys.executable, "-m", "tennis_exp", "--multirun", "seed=1,2,3,4", *JOB, *launcher,
        f"data.root={tmp / 'data'}", f"data.cache_dir={tmp / 'cache'}",
        f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}", f"hydra.sweep.dir={tmp / name}",
    ]  # fmt: skip
    start = time.perf_counter()
    out = subprocess.run(args, cwd=tmp, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"the sweep failed: {out.stderr[-2000:]}")
    return time.perf_counter() - start


def epoch_metrics(epoch: int) -> dict[str, float]:
    """What the training loop logs per epoch (engine/loop.py), with made-up values."""
    per_class = {
        f"val/{kind}_{metric_name(e)}": 0.5
        for e in EVENTS
        for kind in ("precision", "recall", "f1")
    }
    common = ["train/loss", "train/acc", "val/loss", "val/acc", "val/macro_precision"]
    rest = ["val/macro_recall", "val/macro_f1", "lr", "perf/samples_per_sec"]
    rest += ["perf/epoch_time_s", "perf/data_wait_frac"]
    return {**dict.fromkeys(common + rest, 1.0 / epoch), **per_class}


def seconds_per_epoch(uri: str, epochs: int) -> float:
    """Median time to log one epoch's metrics into the store at `uri`."""
    times = []
    with mlflow_run(uri, "bench-logging", "bench", {}) as run:
        for epoch in range(1, epochs + 1):
            metrics = epoch_metrics(epoch)
            start = time.perf_counter()
            run.log_metrics(metrics, step=epoch)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def start_server(tmp: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "tennis_exp.server", "--store", f"sqlite:///{tmp / 'server.db'}",
         "--artifacts", str(tmp / "artifacts"), "--port", str(port), "--workers", "1"],
        cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True,
    )  # fmt: skip
    for line in server.stdout:
        if line.startswith("Ctrl-C stops it"):
            return server, f"http://127.0.0.1:{port}"
    raise RuntimeError("the MLflow server did not start")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="sweeps of each kind (2)")
    parser.add_argument("--epochs", type=int, default=50, help="epochs logged per store (50)")
    add_dirs(parser, None)
    args = parser.parse_args(argv)
    loads = [load()]
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp_name:
        tmp = Path(tmp_name)
        # Generates the data and fills the frame cache, so every timed sweep finds them.
        sweep_seconds(tmp, [], "warm-up")
        walls: dict[str, list[float]] = {"sequential": [], "parallel": []}
        for i in range(args.repeats):
            walls["sequential"].append(sweep_seconds(tmp, [], f"seq{i}"))
            walls["parallel"].append(sweep_seconds(tmp, ["hydra/launcher=parallel"], f"par{i}"))
            loads.append(load())
        server, url = start_server(tmp)
        try:
            per_epoch: dict[str, list[float]] = {"SQLite file": [], "server": []}
            for _ in range(3):
                per_epoch["SQLite file"].append(
                    seconds_per_epoch(f"sqlite:///{tmp / 'file.db'}", args.epochs)
                )
                per_epoch["server"].append(seconds_per_epoch(url, args.epochs))
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
        loads.append(load())
    seq, par = (statistics.median(walls[k]) for k in ("sequential", "parallel"))
    each = {k: ", ".join(f"{w:.1f}" for w in v) for k, v in walls.items()}
    file_s, server_s = (statistics.median(per_epoch[k]) for k in per_epoch)
    lines = [
        f"# bench.sweep, {datetime.now():%Y-%m-%d %H:%M}",
        "",
        *machine(),
        f"- load average (1 min) during the run: {', '.join(loads)}",
        "",
        f"4-job CPU sweep ({' '.join(JOB)}), median of {args.repeats}:",
        "",
        "| launcher | wall s | runs |",
        "|---|---:|---|",
        f"| basic (one after the other) | {seq:.1f} | {each['sequential']} |",
        f"| parallel ({usable_cpus()} at once) | {par:.1f} | {each['parallel']} |",
        f"| ratio sequential / parallel | {seq / par:.2f}x | |",
        "",
        f"Logging one epoch's metrics, median over {args.epochs} epochs, median of 3 runs:",
        "",
        "| store | ms per epoch |",
        "|---|---:|",
        f"| SQLite file | {file_s * 1000:.1f} |",
        f"| MLflow server (127.0.0.1, SQLite database) | {server_s * 1000:.1f} |",
    ]  # fmt: skip
    publish("\n".join(lines) + "\n", args.results_dir, f"{datetime.now():%Y%m%d-%H%M%S}-sweep.md")


if __name__ == "__main__":
    main()
