"""Tiny trees of JPEG frames in the frames layout, <root>/<split>/<action>/<video>/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32
# Every event present in every split; lengths chosen around the 16-frame window.
LAYOUT = {
    split: {
        "smash": [20, 24],
        "forehand_volley": [16],
        "backhand": [30, 10],  # the 10-frame video is too short
        "flat_service": [40],
    }
    for split in ("train", "val", "test")
}


def write_video(video_dir: Path, length: int, size=(SIZE, SIZE), tag: int = 0) -> None:
    """Write `length` JPEG frames whose colours differ per frame and per `tag`."""
    video_dir.mkdir(parents=True, exist_ok=True)
    width, height = size
    ramp = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, axis=0)
    for i in range(length):
        pixels = np.stack([ramp, np.full_like(ramp, i * 13 % 256), np.full_like(ramp, tag)], -1)
        Image.fromarray(pixels).save(video_dir / f"frame_{i:04d}.jpg", quality=95)


def make_tree(root: Path, layout: dict[str, dict[str, list[int]]] = LAYOUT) -> Path:
    """<root>/<split>/<action>/v<k>/frame_%04d.jpg, one video per listed length."""
    for split, actions in layout.items():
        for a, (action, lengths) in enumerate(actions.items()):
            for k, length in enumerate(lengths):
                write_video(root / split / action / f"v{k:03d}", length, tag=a * 40 + k)
    return root
