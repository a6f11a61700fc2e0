"""`python -m tennis_exp.prepare videos=<folder> out=<folder> [key=value ...]`: decode a folder
of videos (THETIS's VIDEO_RGB) into the frames layout `data=thetis` reads, split by player.
`--help` lists the keys; tennis_exp/data/prepare.py does the work."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from tennis_exp.cli import is_user_error, one_line, run_command, traceback_wanted
from tennis_exp.config import register_configs, validate_prepare
from tennis_exp.errors import record_failure

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="prepare")
def run(cfg: DictConfig) -> None:
    try:
        validate_prepare(cfg)
        # PyAV loads once the config is good.
        if cfg.matches:
            from tennis_exp.data.matches import prepare_matches

            prepare_matches(cfg)
        else:
            from tennis_exp.data.prepare import prepare

            prepare(cfg)
    except Exception as err:
        # Raised, it would also print Hydra's "Error executing job" line: the command reports
        # it in one line instead.
        if traceback_wanted() or not is_user_error(err):
            raise
        record_failure("prepare", one_line(err))


def main() -> None:
    run_command(run)


if __name__ == "__main__":
    main()
