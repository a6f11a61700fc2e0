"""Issue 17's end-to-end row: `python -m bench.baseline` (make bench-baseline).

The users' baseline as they would run it, timed from outside: `python -m tennis_exp
experiment=tennis_baseline` (frozen ResNet-50, 3-layer BiLSTM 512, batch 32, Adam 1e-4, 50
epochs, the feature cache) on the synthetic `full` preset at 224 px, which has the users' 7775
training windows, on GPU 0 (`hardware=gpu1`). The frame cache and the feature cache start empty,
so their builds are part of the time, as they would be on a user's first run; generating the
synthetic frames is not (a user has frames already) and is a row of its own. The old script took
about 2.5 hours on an RTX 2080 Ti; the goal is under 5 minutes on an H100/H200.

ResNet-50's weights are untrained (the machine may be offline; speed does not depend on them),
so the run's test macro-F1 is reported but says nothing about the recipe. `--quick` runs the
same command smoke-sized (tiny preset, 32 px, 2 epochs) and on the CPU, for the tests.
Prints a markdown table (machine, load) and writes it to bench/results/<timestamp>-baseline.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient

from bench.results import add_dirs, load, machine, publish
from tennis_exp.data.synthetic import ensure_synthetic

EXPERIMENT = "bench-baseline"
GOAL_MIN = 5.0
# (preset, image size, epochs, hardware profile)
FULL = ("full", 224, 50, "gpu1")
QUICK = ("tiny", 32, 2, "cpu")


def run_baseline(
    root: Path, preset: str, image_size: int, epochs: int, hardware: str, work: Path
) -> tuple[float, dict[str, float], list[float]]:
    """(wall seconds, final metrics, epoch seconds) of the users' baseline command, with empty
    frame and feature caches in `work`."""
    uri = f"sqlite:///{work / 'mlflow.db'}"
    out_dir = work / "run"
    command = [
        sys.executable, "-m", "tennis_exp", "experiment=tennis_baseline", "data=synthetic",
        f"data.root={root}", f"data.synthetic.preset={preset}", f"data.image_size={image_size}",
        f"training.epochs={epochs}", f"hardware={hardware}", "model.pretrained=false",
        f"data.cache_dir={work / 'frames'}", f"model.feature_cache_dir={work / 'features'}",
        f"tracking.uri={uri}", f"experiment_name={EXPERIMENT}", f"hydra.run.dir={out_dir}",
        "progress_bar=false",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"the baseline run failed:\n{proc.stderr[-3000:]}")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    (run,) = client.search_runs([experiment])
    epochs_s = [m.value for m in client.get_metric_history(run.info.run_id, "perf/epoch_time_s")]
    return wall, run.data.metrics, epochs_s


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke-sized, on the CPU: tiny preset, 32 px, 2 epochs"
    )
    add_dirs(parser, "bench-baseline", "the synthetic frames")
    args = parser.parse_args(argv)
    preset, image_size, epochs, hardware = QUICK if args.quick else FULL
    if not args.quick and not torch.cuda.is_available():
        parser.error(
            "the users' baseline at 224 px needs a CUDA GPU (hours on a CPU); --quick runs it "
            "smoke-sized on the CPU"
        )
    root = args.data_dir.resolve() / f"synthetic-{preset}-{image_size}px"
    started_at, load_before, clock = datetime.now().astimezone(), load(), time.perf_counter()
    print(f"[bench] synthetic `{preset}` preset at {image_size} px", end="", flush=True)
    generated = ensure_synthetic(root, preset, seed=0, image_size=image_size)
    generation = time.perf_counter() - clock
    print(f" ({generation:.1f} s{'' if generated else ', kept from an earlier run'})", flush=True)
    with tempfile.TemporaryDirectory(prefix="tennis-bench-baseline-") as tmp:
        print("[bench] the baseline command, caches empty", flush=True)
        wall, metrics, epochs_s = run_baseline(
            root, preset, image_size, epochs, hardware, Path(tmp)
        )
    trained = sum(epochs_s)
    minutes = wall / 60
    on_gpu = not args.quick
    device = torch.cuda.get_device_name(0) if on_gpu else "CPU"
    goal = f"goal < {GOAL_MIN:g} min: {'met' if minutes < GOAL_MIN else '**not met**'}"
    kept = "" if generated else " (kept: already generated)"
    lines = [
        f"## The users' baseline end to end, {started_at:%Y-%m-%d %H:%M %Z}",
        "",
        *machine(),
        f"- `python -m tennis_exp experiment=tennis_baseline data=synthetic "
        f"data.synthetic.preset={preset} data.image_size={image_size} training.epochs={epochs} "
        f"hardware={hardware} model.pretrained=false`, on {device}, frame and feature caches "
        "empty at the start",
        f"- load average (1 min): {load_before} at start, {load()} at end",
        "",
        "| measurement | value |",
        "|---|---:|",
        f"| the whole command, cache builds included | {minutes:.2f} min"
        + (f" ({goal})" if on_gpu else "")
        + " |",
        f"| of which {len(epochs_s)} epochs of training and validation | {trained / 60:.2f} min |",
        "| of which the rest: start, frame and feature cache builds, test, checkpoints | "
        f"{(wall - trained) / 60:.2f} min |",
        f"| median epoch | {statistics.median(epochs_s):.2f} s |",
        "| test macro-F1 (untrained ResNet-50 weights: not the recipe's figure) | "
        f"{metrics.get('test/macro_f1', float('nan')):.3f} |",
        "| generating the synthetic frames (not part of a user's run) | "
        f"{generation:.1f} s{kept} |",
    ]
    name = f"{started_at:%Y%m%d-%H%M%S}-baseline{'-quick' if args.quick else ''}.md"
    publish("\n".join(lines) + "\n", args.results_dir, name)


if __name__ == "__main__":
    main()
