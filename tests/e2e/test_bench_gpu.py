"""`make bench-gpu ARGS=--quick`: every step of the GPU check, smoke-sized on the CPU."""

from __future__ import annotations

import math

import pytest

from ..helpers.commands import run_quick_bench, table_rows


@pytest.mark.slow
def test_quick_gpu_check_measures_every_step(tmp_path):
    text, printed = run_quick_bench("gpu", tmp_path, "*-gpu-quick.md")
    assert text in printed
    assert "[bench] plan: 5 steps within 480 s" in printed
    assert "- skipped for the budget: none" in text
    rows = table_rows(text, "step")
    assert {int(step) for step, *_ in rows} == {1, 2, 3, 4, 5}
    values = {label: float(value) for _, label, value, *_ in rows}
    for label, value in values.items():
        if "peak GPU memory" not in label:  # NaN on the CPU: no GPU memory to measure
            assert math.isfinite(value) and value > 0, (label, value)
    rate = {label: value for label, value in values.items() if label.endswith("samples/s")}
    (device,) = (v for k, v in rate.items() if "frames on the GPU" in k)
    (resident,) = (v for k, v in rate.items() if "one batch already" in k)
    # The ratio is these two rates' (to the table's 3 significant digits).
    assert values["frames on the GPU / batch already there"] == pytest.approx(
        device / resident, rel=0.01
    )
    # On the CPU nothing runs out of memory: each search reaches its cap of 16 windows.
    assert [v for k, v in values.items() if k.startswith("largest batch")] == [16, 16, 16]
    # Smoke-sized: no goal is claimed met or missed.
    assert all(goal == "" and met == "" for *_, goal, met, _ in rows)
