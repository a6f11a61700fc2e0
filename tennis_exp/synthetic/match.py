"""Synthetic matches: clips of the four events strung into long videos with idle play between
them, each with its ground-truth segments: a test set for `predict`, from video to scores.

    python -m tennis_exp.synthetic.match data/matches --matches 2 --seconds 120

writes `<root>/match_000.avi` (MPEG-4 in AVI, as THETIS's files) and `match_000.segments.csv`
(start, end, event, confidence: the format `predict` writes and `truth=` reads). Each event
segment is one clip of the synthetic twin (tennis_exp/synthetic/clip.py's `render_clip`) of a
THETIS action of that event, 2-5 s long, rendered from its own random stream, distinct from
every clip of the training data. The events come in shuffled rounds of all four, so each is
about as frequent, and never twice in a row. Idle play (no event) 1-3 s long comes before the
first, after the last and between 70% of the pairs: the next clip's first frame, held while the
camera pans slowly across it, with the clips' pixel noise and flicker (clip.py's idle_frames,
which the twin's idle clips of data.background also show): the scene without a stroke.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tennis_exp.config import EVENTS, THETIS_ACTIONS
from tennis_exp.data.segments import Segment, write_segments_csv
from tennis_exp.data.video import VideoWriter
from tennis_exp.synthetic.clip import Video, idle_frames, render_clip
from tennis_exp.synthetic.videos import bit_rate

FPS = 25
# render_clip's `split_index` for matches: far from the twin's splits (0-2), so no clip of a
# match is a clip of the training data, whatever the seeds.
_MATCH_STREAM = 1000
_EVENT_SECONDS = (2.0, 5.0)
_IDLE_SECONDS = (1.0, 3.0)
_NO_IDLE = 0.3  # share of event pairs with no idle play between them


class Part(NamedTuple):
    """A stretch of a match: an event clip, or idle play (event None) before `action`'s clip."""

    event: str | None
    action: str
    frames: int


def match_parts(seconds: float, rng: np.random.Generator, fps: int = FPS) -> list[Part]:
    """Idle play and event clips alternating, about `seconds` long in all, idle at both ends."""
    parts: list[Part] = []
    elapsed = 0.0
    events: list[str] = []
    while elapsed < seconds or not parts:
        while not events or (parts and events[-1] == parts[-1].event):
            # Rounds of all four; never one event twice in a row, which would read as one.
            events = [str(e) for e in rng.permutation(EVENTS)]
        event = events.pop()
        action = str(rng.choice([a for a, e in THETIS_ACTIONS.items() if e == event]))
        if not parts or rng.random() >= _NO_IDLE:
            parts.append(Part(None, action, _frames(_IDLE_SECONDS, rng, fps)))
        parts.append(Part(event, action, _frames(_EVENT_SECONDS, rng, fps)))
        elapsed = sum(p.frames for p in parts) / fps
    parts.append(Part(None, parts[-1].action, _frames(_IDLE_SECONDS, rng, fps)))
    return parts


def _frames(seconds: tuple[float, float], rng: np.random.Generator, fps: int) -> int:
    return int(round(rng.uniform(*seconds) * fps))


def truth(parts: list[Part], fps: int = FPS) -> list[Segment]:
    """The event parts as segments, in seconds from the first frame."""
    segments, frame = [], 0
    for part in parts:
        if part.event is not None:
            segments.append(Segment(frame / fps, (frame + part.frames) / fps, part.event))
        frame += part.frames
    return segments


def render_parts(parts: list[Part], match: int, seed: int, image_size: int) -> Iterator[np.ndarray]:
    """The frames (T, S, S, 3) uint8 of each part in turn: only one clip is held at a time."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _MATCH_STREAM, match]))
    clips = {}
    for index, part in enumerate(parts):
        clip_index = index + (part.event is None)  # idle play shows the clip that follows
        if clip_index not in clips:
            clips = {clip_index: _clip(parts, clip_index, match, seed, image_size)}
        if part.event is None:
            yield idle_frames(clips[clip_index][0], part.frames, rng)
        else:
            yield clips[clip_index]


def _clip(parts: list[Part], index: int, match: int, seed: int, size: int) -> np.ndarray:
    # The final idle stretch has no clip after it: it shows the last one.
    index = min(index, len(parts) - 1)
    if parts[index].event is None:
        index -= 1
    part = parts[index]
    video = Video(f"match{match:03d}_{index:04d}_{part.action}", part.action, part.frames)
    return render_clip(video, _MATCH_STREAM + match, index, seed, size)


def write_match(
    root: Path, match: int, seconds: float, seed: int = 0, image_size: int = 64, fps: int = FPS
) -> tuple[Path, Path]:
    """Render match number `match` into root/match_<NNN>.avi and its segments .csv."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _MATCH_STREAM, match, 1]))
    parts = match_parts(seconds, rng, fps)
    video = root / f"match_{match:03d}.avi"
    rate = bit_rate(image_size, image_size, fps)
    with VideoWriter(video, fps, image_size, image_size, "mpeg4", rate) as out:
        for frames in render_parts(parts, match, seed, image_size):
            for frame in frames:
                out.write(frame)
    segments = root / f"match_{match:03d}.segments.csv"
    write_segments_csv(segments, truth(parts, fps))
    return video, segments


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tennis_exp.synthetic.match", description=__doc__.splitlines()[0]
    )
    parser.add_argument("root", type=Path, help="the folder to write the matches into")
    parser.add_argument("--matches", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=120.0, help="each match's length")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=64, help="frame width and height")
    parser.add_argument("--fps", type=int, default=FPS)
    args = parser.parse_args(argv)
    if args.image_size < 16 or args.image_size % 2:
        parser.error("--image-size must be even and >= 16 (MPEG-4 stores 4:2:0 colour)")
    for match in range(args.matches):
        video, segments = write_match(
            args.root, match, args.seconds, args.seed, args.image_size, args.fps
        )
        print(f"wrote {video} and {segments}")


if __name__ == "__main__":
    main()
