"""`python -m tennis_exp.predict checkpoint=<file> video=<file or folder> [truth=<segments>]`:
when each event happens in whole videos (a match), streamed through a trained model in sliding
windows: segments, per-window probabilities, a timeline plot, scores against a ground truth,
optionally a copy of the video with the events written on it; one MLflow run, nested under the
run that trained the model. tennis_exp/inference/ does the work."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from tennis_exp.cli import reported, run_command
from tennis_exp.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
@reported
def run(cfg: DictConfig) -> float:
    """mAP@1s against the truth (NaN without one)."""
    from tennis_exp.inference.pipeline import predict_videos  # torch loads once the config is good

    metrics = predict_videos(cfg, Path(HydraConfig.get().runtime.output_dir))
    return metrics.get("map_1s", float("nan"))


def main() -> None:
    run_command(run)


if __name__ == "__main__":
    main()
