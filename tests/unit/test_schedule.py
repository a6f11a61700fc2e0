"""The LR of every step: the warmup lands on the scaling plan exactly, the plateau rule is
ReduceLROnPlateau's, and a resumed run continues the same curve."""

from __future__ import annotations

import random

import pytest
import torch

from tennis_exp.engine.hardware import plan_scaling
from tennis_exp.engine.schedule import LrSchedule, Plateau, plateau_step

from ..helpers.configs import compose_config

PROFILES = ["cpu", "gpu1", "gpu2", "gpu4", "colab", "cpu_ddp2"]
RULES = ["none", "linear", "sqrt"]
STEPS_PER_EPOCH = 7


def _schedule(profile: str, rule: str, warmup_epochs: int) -> LrSchedule:
    cfg = compose_config([f"hardware={profile}", f"hardware.lr_scaling={rule}"])
    hw, tr = cfg.hardware, cfg.training
    plan = plan_scaling(
        tr.batch_size, tr.learning_rate, hw.devices, hw.batch_scaling, hw.lr_scaling
    )
    return LrSchedule.for_run(plan.learning_rate, plan.lr_factor, warmup_epochs, STEPS_PER_EPOCH)


@pytest.mark.parametrize("warmup_epochs", [0, 1, 3])
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("profile", PROFILES)
def test_the_plan_is_reached_exactly_at_the_last_warmup_step(profile, rule, warmup_epochs):
    schedule = _schedule(profile, rule, warmup_epochs)
    scaled = schedule.lr_factor > 1
    assert schedule.warmup_steps == (warmup_epochs * STEPS_PER_EPOCH if scaled else 0)
    last_warmup = schedule.warmup_steps - 1
    lrs = [schedule.lr(step) for step in range(schedule.warmup_steps + 3 * STEPS_PER_EPOCH)]
    # From the last warmup step on, the plan itself: the number the banner prints and MLflow's
    # scaling.learning_rate holds.
    assert all(lr == schedule.planned for lr in lrs[max(last_warmup, 0) :])
    if schedule.warmup_steps > 1:
        ramp = lrs[: schedule.warmup_steps]
        assert ramp == sorted(ramp) and len(set(ramp)) == len(ramp)  # rising every step
        start = schedule.planned / schedule.lr_factor
        assert start < ramp[0] < schedule.planned
        steps = [b - a for a, b in zip(ramp, ramp[1:], strict=False)]
        assert steps == pytest.approx([steps[0]] * len(steps))  # linear


def test_the_guides_example_warms_up_from_1e4_to_2e4():
    schedule = _schedule("gpu2", "linear", 1)
    assert schedule.planned == 2e-4 and schedule.warmup_steps == STEPS_PER_EPOCH
    assert schedule.lr(0) == pytest.approx(1e-4 + 1e-4 / STEPS_PER_EPOCH)
    assert schedule.lr(STEPS_PER_EPOCH - 1) == 2e-4


@pytest.mark.parametrize("stopped_at", [0, 3, STEPS_PER_EPOCH - 1, STEPS_PER_EPOCH + 2])
def test_a_resumed_run_continues_the_same_curve(stopped_at):
    # The LR is a function of the step alone: a run resumed mid-warmup (a new schedule object,
    # as a new process builds it) takes the LRs a straight run would.
    straight = _schedule("gpu4", "linear", 2)
    resumed = _schedule("gpu4", "linear", 2)
    steps = range(stopped_at, 3 * STEPS_PER_EPOCH)
    assert [resumed.lr(s) for s in steps] == [straight.lr(s) for s in steps]


def test_after_the_warmup_the_plateau_scale_applies():
    schedule = _schedule("gpu2", "linear", 1)
    assert schedule.lr(STEPS_PER_EPOCH, plateau_scale=0.25) == 2e-4 * 0.25
    assert schedule.lr(0, plateau_scale=0.25) == schedule.lr(0)  # the ramp is the ramp


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("patience", "factor"), [(0, 0.5), (1, 0.5), (3, 0.1), (5, 0.5)])
def test_the_plateau_rule_is_reduce_lr_on_plateau(seed, patience, factor):
    rng = random.Random(seed)
    # F1-like metrics with long flat stretches, ties and tiny (below-threshold) gains.
    metrics = [round(rng.choice([0.0, 0.5, 0.5, 0.6, 0.6 + 1e-6, rng.random()]), 7)]
    for _ in range(40):
        metrics.append(metrics[-1] if rng.random() < 0.4 else round(rng.random(), 3))
    planned = 2e-4
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=planned)
    torch_rule = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=factor, patience=patience
    )
    ours = Plateau()
    for metric in metrics:
        torch_rule.step(metric)
        ours = plateau_step(ours, metric, patience, factor, planned)
        assert planned * ours.scale == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-12)
        assert ours.best == torch_rule.best and ours.bad_epochs == torch_rule.num_bad_epochs


def test_no_reduction_below_eps():
    tiny = Plateau(best=1.0, bad_epochs=0, scale=1e-5)
    assert plateau_step(tiny, 0.0, patience=0, factor=0.5, planned_lr=1e-3).scale == 1e-5
