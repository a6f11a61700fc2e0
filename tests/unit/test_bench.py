"""The benchmarks still run: `python -m bench.run --quick` writes a table with a number in every
row, `python -m bench.baseline --quick` times the users' baseline command; and the pieces of the
GPU rows that a CPU can check. No test checks a speed: the numbers of a quick run on a test
machine mean nothing.

The quick runs are slow: fresh interpreters import torch and MLflow (the bench, the run, the
startup phases), about 35 s on a quiet 2-core CPU and minutes on a busy one."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from bench import baseline
from bench.run import CASES, FULL, RATIOS, SIZES, Bench, largest_batch
from tennis_exp.config import from_container, register_configs
from tennis_exp.engine.checkpoint import load

from ..helpers.commands import run_quick_bench, table_rows
from ..helpers.configs import ROOT
from ..helpers.scoring import scores_on_test_split


@pytest.mark.slow
def test_quick_bench_writes_a_number_in_every_row(tmp_path):
    text, printed = run_quick_bench("run", tmp_path, "*.md")
    assert "- machine: " in text
    rows = table_rows(text, "item")
    assert {int(item) for item, *_ in rows} == {1, 2, 3, 4, 5, 8, 9, 10}
    for item, label, value, *_ in rows:
        assert math.isfinite(float(value)), f"row {item} {label!r}: {value!r}"
    labels = [label for _, label, *_ in rows]
    for expected in [*(f"{c.label}, samples/s" for c in CASES), *(r.label for r in RATIOS)]:
        assert expected in labels
    assert text in printed  # the table printed is the table written


@pytest.mark.parametrize(
    ("limit", "start", "cap", "bounds"),
    [
        (1000, 32, 2048, (938, 1000)),  # doubles to 1024, then bisects to within 1/16
        (64, 32, 2048, (64, 64)),  # exactly a power of two
        (5000, 32, 2048, (2048, 2048)),  # everything up to the cap fits
        (20, 32, 2048, (20, 20)),  # not even the start: bisects below it, exactly
        (0, 32, 2048, (0, 0)),  # nothing fits
        (100, 48, 100, (100, 100)),  # the cap is not a doubling of the start
    ],
)
def test_largest_batch_finds_the_limit_to_within_a_sixteenth(limit, start, cap, bounds):
    tried = []

    def fits(n):
        tried.append(n)
        return n <= limit

    found = largest_batch(fits, start, cap)
    assert bounds[0] <= found <= bounds[1]
    assert max(tried) <= cap and len(tried) <= 16
    assert found == 0 or found in tried and found <= limit


def test_fits_runs_real_training_steps_and_reports_running_out_of_memory(tmp_path, monkeypatch):
    register_configs()
    bench = Bench(SIZES["quick"], CASES, tmp_path / "data", tmp_path)
    fits = bench.fits(FULL)
    assert fits(2)

    # What the GPU raises when a batch does not fit.
    def out_of_memory(*args):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(F, "cross_entropy", out_of_memory)
    assert not fits(2)


@pytest.mark.slow
def test_quick_baseline_bench_times_the_whole_command(tmp_path, monkeypatch):
    # The bench in this process (the baseline command it times still runs in its own), its
    # run's best weights scored again while the run's folder still exists.
    scored, timed = {}, baseline.run_baseline

    def time_then_score(root, preset, image_size, epochs, hardware, work):
        result = timed(root, preset, image_size, epochs, hardware, work)
        best = work / "run" / "checkpoints" / "best.pth"
        scored.update(scores_on_test_split(from_container(load(best).config), best))
        return result

    monkeypatch.setattr(baseline, "run_baseline", time_then_score)
    results = tmp_path / "results"
    baseline.main(["--quick", "--data-dir", str(tmp_path / "data"), "--results-dir", str(results)])
    (path,) = results.glob("*-baseline-quick.md")
    values = dict(table_rows(path.read_text(), "measurement"))
    whole = float(values["the whole command, cache builds included"].split()[0])
    epochs = float(values["of which 2 epochs of training and validation"].split()[0])
    assert 0 < epochs < whole
    # The run's test macro-F1 as the table rounds it: its best weights' own score.
    f1 = values["test macro-F1 (untrained ResNet-50 weights: not the recipe's figure)"]
    assert f1 == f"{scored['macro_f1']:.3f}"


def test_baseline_bench_refuses_the_full_run_without_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the full run would start")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.baseline", "--data-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "needs a CUDA GPU" in proc.stderr and "--quick" in proc.stderr
    assert not any(tmp_path.iterdir())
