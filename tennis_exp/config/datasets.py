"""The datasets' action maps, read from their data group files (conf/data/<name>.yaml), where
they are written once: the trainer is given them by composition, the synthetic twins and
prepare read the same files here."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from tennis_exp.config.schema import BACKGROUND

# The config folder every command's `@hydra.main(config_path="../conf")` reads.
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def _data_group(name: str) -> tuple[dict[str, str], list[str]]:
    """`conf/data/<name>.yaml`'s action folder -> event map and its excluded folders."""
    group = OmegaConf.load(CONF_DIR / "data" / f"{name}.yaml")
    return OmegaConf.to_container(group.actions), list(group.get("excluded", []))


# THETIS action folders and the event each one belongs to (the users' mapping), and the folders
# it leaves out.
THETIS_ACTIONS, THETIS_EXCLUDED = _data_group("thetis")
# The users' badminton stroke folders (ShuttleSet) and their events.
BADMINTON_ACTIONS, _ = _data_group("badminton")


def metric_name(class_name: str) -> str:
    """An event's name in metric keys and folders: 'Net Play' -> 'net_play'."""
    return class_name.lower().replace(" ", "_")


# The action folder of idle play, mapped to the background class when data.background is on.
IDLE_ACTION = "idle"


def with_background(data: DictConfig) -> None:
    """data.background on: the background class after the events, the idle folder mapped to it
    (once: a checkpoint's config already holds them)."""
    if not data.background:
        return
    if BACKGROUND not in data.events:
        data.events = [*data.events, BACKGROUND]
    data.actions = {**data.actions, IDLE_ACTION: BACKGROUND}
