"""The benchmark still runs: `python -m bench.run --quick` writes a table with a number in every
row. It checks no speed; the numbers of a quick run on a test machine mean nothing.

Slow: three fresh interpreters import torch and MLflow (the bench, the run, the startup phases),
about 35 s on a quiet 2-core CPU and minutes on a busy one."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from bench.run import CASES, RATIOS

from .conftest import ROOT


@pytest.mark.slow
def test_quick_bench_writes_a_number_in_every_row(tmp_path):
    results = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--data-dir", str(tmp_path / "data"),
         "--results-dir", str(results)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (written,) = results.glob("*.md")
    text = written.read_text()
    assert "- machine: " in text
    rows = [
        [cell.strip() for cell in line.split("|")[1:-1]]
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith("| item ")
    ]
    assert {int(item) for item, *_ in rows} == {1, 2, 3, 4, 5, 8, 9, 10}
    for item, label, value, *_ in rows:
        assert math.isfinite(float(value)), f"row {item} {label!r}: {value!r}"
    labels = [label for _, label, *_ in rows]
    for expected in [*(f"{c.label}, samples/s" for c in CASES), *(r.label for r in RATIOS)]:
        assert expected in labels
    assert text in proc.stdout  # the table printed is the table written
