"""The command line's mistakes and the one line each ends the command with, by where the
command finds them: composing the config, converting a value, validating it, placing the
run on devices, opening its data."""

from __future__ import annotations

import pytest

# (kind, override, what the line says)
BAD_OVERRIDES = [
    ("composition", "hardware=gpu3",
     "Could not find 'hardware/gpu3'; valid options: colab, cpu, cpu_ddp2, gpu1, gpu2, gpu4"),
    ("conversion", "training.batch_size=abc",
     "training.batch_size=abc: Value 'abc' of type 'str' could not be converted to Integer"),
    ("validation", "training.batch_size=0",
     "training.batch_size=0 is invalid: it must be an integer >= 1"),
    ("validation", "training.batch_size=-4", "training.batch_size=-4 is invalid"),
    ("validation", "training.learning_rate=-1",
     "training.learning_rate=-1.0 is invalid: it must be > 0"),
    ("validation", "training.epochs=0", "training.epochs=0 is invalid"),
    ("validation", "training.prefetch_factor=0",
     "training.prefetch_factor=0 is invalid: it must be an"),
    ("validation", "hardware.devices=0", "hardware.devices=0 is invalid"),
    ("conversion", "hardware.strategy=foo", "Invalid value 'foo', expected one of [dp, ddp]"),
    ("composition", "training.bogus=1", "Key 'bogus' not in 'TrainingConfig'"),
    ("devices", "hardware=gpu2", "hardware=gpu2 needs 2 CUDA device(s) but 0 visible"),
    ("data", "data=thetis", "data.root is not set"),
    ("data", "data=thetis data.root=/nonexistent/frames", "/nonexistent/frames"),
]  # fmt: skip


def bad_override_params(slow_after_the_first: bool) -> list:
    """The table as pytest params; with `slow_after_the_first`, each kind's first case is in
    the fast suite and the others behind `slow`."""
    seen, params = set(), []
    for kind, override, expected in BAD_OVERRIDES:
        slow = slow_after_the_first and kind in seen
        seen.add(kind)
        marks = (pytest.mark.slow,) if slow else ()
        params.append(pytest.param(override, expected, marks=marks, id=override))
    return params
