"""`python -m tennis_exp.evaluate checkpoint=<file> [split=test | folder=<frames>] [data...]`:
score any checkpoint (ours, or the old script's best_model.pth) on a split of the configured
data or on a folder in the layout, with the users' classification report and more."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from tennis_exp.cli import reported, run_command
from tennis_exp.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
@reported
def run(cfg: DictConfig) -> float:
    """The scored split's macro-F1."""
    from tennis_exp.inference.split_report import evaluate_checkpoint

    result = evaluate_checkpoint(cfg, Path(HydraConfig.get().runtime.output_dir))
    return result.metrics["macro_f1"]


def main() -> None:
    run_command(run)


if __name__ == "__main__":
    main()
