"""The plan of a preset: which videos each split holds and how long they are, so that the
loader cuts exactly the preset's windows from them (independent of the seed)."""

from __future__ import annotations

import numpy as np

from tennis_exp.config import EVENTS, IDLE_ACTION
from tennis_exp.synthetic.clip import Video
from tennis_exp.synthetic.sports import SPORTS

SPLITS = ("train", "val", "test")
_WINDOW = 16
_STRIDES = {"train": 8, "val": 16, "test": 16}

# split -> event -> windows. `full` is the real split; val/test keep the train class proportions.
_TARGETS: dict[str, dict[str, dict[str, int]]] = {
    "full": {
        "train": {"Smash": 839, "Net Play": 1597, "Rally": 4344, "Serve": 995},
        "val": {"Smash": 95, "Net Play": 181, "Rally": 493, "Serve": 113},
        "test": {"Smash": 103, "Net Play": 196, "Rally": 532, "Serve": 121},
    },
    "small": {
        "train": {"Smash": 134, "Net Play": 256, "Rally": 695, "Serve": 159},
        "val": {"Smash": 24, "Net Play": 45, "Rally": 123, "Serve": 28},
        "test": {"Smash": 25, "Net Play": 47, "Rally": 128, "Serve": 29},
    },
    "tiny": {
        "train": {"Smash": 8, "Net Play": 15, "Rally": 40, "Serve": 9},
        "val": {"Smash": 3, "Net Play": 4, "Rally": 10, "Serve": 3},
        "test": {"Smash": 3, "Net Play": 5, "Rally": 12, "Serve": 4},
    },
}
# Video length range in frames. THETIS clips are 2-4 s. small spreads its windows over many short
# clips (1-2 train windows each, ~950 videos): from ~130 longer ones a small CNN learned each
# video's look rather than the motion. tiny is short to be fast.
_LENGTHS = {"full": (56, 120), "small": (16, 27), "tiny": (24, 40)}
# Per split: videos per excluded action, and videos shorter than a window (both yield no windows).
_EXTRAS = {"full": (2, 3), "small": (1, 2), "tiny": (1, 1)}
_PLAN_SEED = 20240611


def _windows(length: int, stride: int) -> int:
    """Windows the loader cuts from a video of `length` frames."""
    return (length - _WINDOW) // stride + 1 if length >= _WINDOW else 0


def _lengths(windows: int, stride: int, lengths: tuple[int, int], rng) -> list[int]:
    """Video lengths in the range that yield exactly `windows` windows in all."""
    found = []
    while windows > 0:
        length = int(rng.integers(lengths[0], lengths[1] + 1))
        if _windows(length, stride) >= windows:
            # The last video is cut so the total is exact.
            length = _WINDOW + (windows - 1) * stride + int(rng.integers(stride))
        windows -= _windows(length, stride)
        found.append(length)
    return found


def check_preset(preset: str) -> None:
    if preset not in _TARGETS:
        raise ValueError(f"unknown synthetic preset {preset!r}; valid: {sorted(_TARGETS)}")


def expected_windows(preset: str) -> dict[str, dict[str, int]]:
    """split -> event -> window count the preset is built to produce (window 16, strides 8/16)."""
    check_preset(preset)
    return {split: dict(counts) for split, counts in _TARGETS[preset].items()}


def plan(preset: str, sport: str = "tennis", background: bool = False) -> dict[str, list[Video]]:
    """split -> videos (name, action folder, frame count), including excluded and short ones;
    with `background`, idle clips after them (the event clips stay as they are without)."""
    check_preset(preset)
    rng = np.random.default_rng([_PLAN_SEED, sorted(_TARGETS).index(preset)])
    planned = {split: _split_plan(preset, split, SPORTS[sport], rng) for split in SPLITS}
    if background:
        for split, windows in idle_windows(preset).items():
            # A stream of its own: the event clips' plan does not change.
            idle_rng = np.random.default_rng([_PLAN_SEED, sorted(_TARGETS).index(preset), 1,
                                              SPLITS.index(split)])  # fmt: skip
            lengths = _lengths(windows, _STRIDES[split], _LENGTHS[preset], idle_rng)
            planned[split] += [
                Video(f"i{i:04d}_{IDLE_ACTION}", IDLE_ACTION, n) for i, n in enumerate(lengths)
            ]
    return planned


def idle_windows(preset: str) -> dict[str, int]:
    """split -> idle windows of the twin with background: as many as an average event has."""
    return {split: round(sum(c.values()) / len(c)) for split, c in _TARGETS[preset].items()}


def _split_plan(preset: str, split: str, sport, rng: np.random.Generator) -> list[Video]:
    excluded = [a for a in sport.looks_like if a not in sport.actions]
    low, high = _LENGTHS[preset]
    per_excluded, short = _EXTRAS[preset]
    stride = _STRIDES[split]
    videos: list[tuple[str, int]] = []
    for event in EVENTS:
        actions = [a for a, e in sport.actions.items() if e == event]
        offset = int(rng.integers(len(actions)))
        for length in _lengths(_TARGETS[preset][split][event], stride, (low, high), rng):
            videos.append((actions[(len(videos) + offset) % len(actions)], length))
    for action in excluded:
        videos += [(action, int(rng.integers(low, high + 1))) for _ in range(per_excluded)]
    regular = list(sport.actions)
    videos += [
        (regular[int(rng.integers(len(regular)))], int(rng.integers(6, _WINDOW)))
        for _ in range(short)
    ]
    order = rng.permutation(len(videos))
    return [
        Video(f"p{i:04d}_{videos[j][0]}", videos[j][0], videos[j][1]) for i, j in enumerate(order)
    ]
