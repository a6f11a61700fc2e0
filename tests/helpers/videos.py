"""Tiny video files with motion in them, written as the users' cameras would."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tennis_exp.synthetic.videos import write_video


def moving_square(length: int = 20, size: int = 32, shade: int = 0) -> np.ndarray:
    """(length, size, size, 3) uint8: a square crossing the image, one step per frame."""
    frames = np.full((length, size, size, 3), shade, np.uint8)
    for t in range(length):
        x = t * (size - 8) // max(length - 1, 1)
        frames[t, 12:20, x : x + 8] = 255
    return frames


def make_videos(root: Path, players: int = 8, actions=("smash", "backhand", "flat_service")):
    """THETIS-named tiny videos: one take per player and action."""
    for action in actions:
        (root / action).mkdir(parents=True, exist_ok=True)
        for player in range(1, players + 1):
            write_video(root / action / f"p{player}_{action}_s1.avi", moving_square(shade=player))
    return root


def moving_video(path: Path, length: int = 61, size: int = 40, fps: int = 25) -> Path:
    """A video of a bright square crossing a noisy image, written to `path`."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 60, (length, size, size, 3), dtype=np.uint8)
    for t in range(length):  # a bright square crossing the image: motion
        x = t * (size - 8) // length
        frames[t, 10:18, x : x + 8] = 250
    write_video(path, frames, fps=fps)
    return path
