"""A run's saved weights scored again in the test's own process, to check what the run logged."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from tennis_exp.config import Precision
from tennis_exp.data.frames import build_datasets
from tennis_exp.data.loaders import make_loader
from tennis_exp.engine.checkpoint import load_weights
from tennis_exp.engine.distributed import Dist
from tennis_exp.engine.evaluation import evaluate
from tennis_exp.models.cnn_lstm import build_model


def scores_on_test_split(cfg: DictConfig, weights: Path) -> dict[str, float]:
    """The metrics of the weights in `weights` over every window of cfg's test split: one
    process, the whole model from the frames, in fp32."""
    model = build_model(cfg.model, num_classes=len(cfg.data.events))
    load_weights(model, weights)
    test_set = build_datasets(cfg.data, cfg.seed)["test"]
    cpu = torch.device("cpu")
    training = OmegaConf.merge(cfg.training, {"num_workers": 0})  # this process reads alone
    loader = make_loader(test_set, 5, training, cpu, 0)
    result = evaluate(model, loader, cpu, Precision.fp32, list(cfg.data.events), None, Dist())
    assert result.confusion.sum() == len(test_set)
    return result.metrics
