"""The synthetic twin as raw videos, named as THETIS's: what `prepare` starts from, without THETIS.

    python -m tennis_exp.synthetic.videos data/synthetic_videos/VIDEO_RGB --preset tiny

writes `<root>/<action>/p<player>_<action>_s<take>.avi` (MPEG-4 Part 2 in AVI, as THETIS's
files): every video of the synthetic preset's plan, its three splits pooled, each rendered as in
the frame twin (tennis_exp/synthetic/). The videos are dealt to `players` players in
turn, so a player holds videos of most actions, and splitting by player means what it does on
THETIS.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tennis_exp.data.video import VideoWriter
from tennis_exp.synthetic.clip import Video, render_clip
from tennis_exp.synthetic.plan import plan


class RawVideo(NamedTuple):
    """A planned video as a THETIS file: its name, and what renders its frames."""

    name: str  # p<player>_<action>_s<take>
    video: Video
    split_index: int  # with `index`, the video's place in the plan: render_clip's arguments
    index: int


def raw_videos(preset: str, players: int) -> Iterator[RawVideo]:
    """The preset's videos in plan order, named for THETIS."""
    takes: dict[tuple[int, str], int] = {}
    number = 0
    for split_index, videos in enumerate(plan(preset).values()):
        for index, video in enumerate(videos):
            player = number % players + 1
            number += 1
            take = takes[player, video.action] = takes.get((player, video.action), 0) + 1
            yield RawVideo(f"p{player}_{video.action}_s{take}", video, split_index, index)


def bit_rate(width: int, height: int, fps: int) -> int:
    """Half a bit per pixel: well above what MPEG-4 needs to keep the small ball and racket."""
    return max(200_000, width * height * fps // 2)


def write_video(path: Path, frames: np.ndarray, fps: int = 25) -> None:
    """uint8 (T, H, W, 3) RGB frames (H and W even) as an MPEG-4 AVI, written whole or not at
    all."""
    height, width = frames.shape[1:3]
    with VideoWriter(path, fps, width, height, "mpeg4", bit_rate(width, height, fps), "avi") as out:
        for frame in frames:
            out.write(frame)


def write_videos(
    root: Path, preset: str = "tiny", seed: int = 0, image_size: int = 64, players: int = 10
) -> list[Path]:
    """Render and write every video of the preset into `root`; returns the files written."""
    written = []
    for raw in raw_videos(preset, players):
        folder = Path(root) / raw.video.action
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{raw.name}.avi"
        write_video(path, render_clip(raw.video, raw.split_index, raw.index, seed, image_size))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tennis_exp.synthetic.videos",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("root", type=Path, help="the folder to write, as THETIS's VIDEO_RGB")
    parser.add_argument("--preset", default="tiny", choices=["tiny", "small", "full"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=64, help="frame width and height")
    parser.add_argument("--players", type=int, default=10)
    args = parser.parse_args(argv)
    if args.image_size < 16 or args.image_size % 2:
        parser.error("--image-size must be even and >= 16 (MPEG-4 stores 4:2:0 colour)")
    written = write_videos(args.root, args.preset, args.seed, args.image_size, args.players)
    print(f"wrote {len(written)} videos into {args.root}")


if __name__ == "__main__":
    main()
