"""`python -m tennis_exp ARGS` as a user runs it, with a stopwatch on the first training step.

Run as `python bench/probe.py ARGS`: writes the wall-clock times (`time.time()`) at which the
first training step starts (the first forward pass with gradients, in train mode; a frozen
backbone's feature caching runs without) and ends (the first optimizer step) to
$BENCH_FIRST_STEP_FILE as JSON, and lets the run go on. torch is imported here, before Hydra
composes the config, to register the hooks; the run imports it anyway, so this moves that time
earlier without adding to the total.
"""

import json
import os
import runpy
import sys
import time
from pathlib import Path

import torch
from torch.nn.modules.module import register_module_forward_pre_hook
from torch.optim.optimizer import register_optimizer_step_post_hook

_times = {}


def _first_forward(module, args) -> None:
    if module.training and torch.is_grad_enabled():
        _times["start"] = time.time()
        _forward_hook.remove()


def _first_step(optimizer, args, kwargs) -> None:
    _times["end"] = time.time()
    Path(os.environ["BENCH_FIRST_STEP_FILE"]).write_text(json.dumps(_times))
    _step_hook.remove()


_forward_hook = register_module_forward_pre_hook(_first_forward)
_step_hook = register_optimizer_step_post_hook(_first_step)
sys.argv[0] = "tennis_exp"
runpy.run_module("tennis_exp", run_name="__main__", alter_sys=True)
