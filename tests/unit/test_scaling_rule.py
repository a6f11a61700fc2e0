"""The guide's rule, proven: 2 DDP ranks with a per-device batch of b take the same step as
one process with a batch of 2b on the same 2b windows (effective batch = per-device batch x
devices). Real DDP: two gloo processes started by the framework's own launcher."""

from __future__ import annotations

import torch
import torch.distributed as torch_dist
import torch.nn.functional as F

from tennis_exp.config import BatchScaling, LrScaling, Precision, Strategy
from tennis_exp.engine import distributed
from tennis_exp.engine.hardware import DeviceSetup, RunPlan, plan_scaling, wrap_model
from tennis_exp.models.cnn_lstm import build_model

from ..helpers.configs import compose_config

PER_DEVICE, WORLD = 3, 2


def _model():
    model = build_model(compose_config(["debug=smoke"]).model, num_classes=4)
    # Eval mode: BatchNorm normalises with its running statistics (batch statistics of b and
    # of 2b windows differ, which is BatchNorm's business, not the rule's), and no dropout.
    return model.eval()


def _plan(world: int) -> RunPlan:
    scaling = plan_scaling(PER_DEVICE, 1e-4, world, BatchScaling.per_device, LrScaling.linear)
    strategy = Strategy.ddp if world > 1 else Strategy.dp
    return RunPlan("cpu", strategy, scaling, DeviceSetup(torch.device("cpu"), []), Precision.fp32)


def _gradients(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def ddp_rank_gradients(state, frames, labels) -> dict[str, torch.Tensor]:
    """One rank: its share of the windows through the DDP-wrapped model, then backward."""
    torch_dist.init_process_group("gloo")
    try:
        rank = torch_dist.get_rank()
        model = _model()
        model.load_state_dict(state)
        ddp = wrap_model(model, _plan(WORLD))
        mine = slice(rank * PER_DEVICE, (rank + 1) * PER_DEVICE)
        F.cross_entropy(ddp(frames[mine]), labels[mine]).backward()
        return _gradients(model)
    finally:
        torch_dist.destroy_process_group()


def test_two_ranks_of_b_take_the_step_of_one_process_of_2b(tmp_path):
    torch.manual_seed(0)
    model = _model()
    frames = torch.randint(0, 256, (PER_DEVICE * WORLD, 4, 3, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3, 2, 1])
    plan = _plan(WORLD)
    assert plan.scaling.effective_batch_size == len(frames)  # the rule the plan applies

    F.cross_entropy(model(frames), labels).backward()
    one_process = _gradients(model)
    ranks = distributed.launch(
        ddp_rank_gradients, (model.state_dict(), frames, labels), WORLD, tmp_path / "ranks"
    )
    assert one_process.keys() == ranks.keys() and len(one_process) > 10
    for name, grad in one_process.items():
        torch.testing.assert_close(ranks[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    # Not trivially equal: each rank alone sees a different gradient.
    half = _model()
    half.load_state_dict(model.state_dict())
    F.cross_entropy(half(frames[:PER_DEVICE]), labels[:PER_DEVICE]).backward()
    assert not torch.allclose(_gradients(half)["fc.3.weight"], one_process["fc.3.weight"])
