"""`predict.render=true`: a copy of the video with the event of the moment written on every
frame (its segment's event and confidence, in the timeline's colour), for a person who would
rather watch than read. A second pass over the video, at its own size and frame rate; H.264 in
MP4, which browsers and the MLflow UI play. Videos under 256 pixels high are enlarged (each
pixel repeated) so that the label can be read."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tennis_exp.data.segments import Segment
from tennis_exp.data.video import VideoReader, VideoWriter
from tennis_exp.inference.timeline import colour

_MIN_HEIGHT = 256


def render(source: Path, out: Path, segments: list[Segment], events: list[str]) -> Path:
    """Write `out` (.mp4): `source` with the segments' labels; frames outside every segment
    say "no event"."""
    with VideoReader(source) as video:
        # 4:2:0 colour needs even sizes: an odd last row or column is cut.
        width, height = video.info.width // 2 * 2, video.info.height // 2 * 2
        scale = math.ceil(_MIN_HEIGHT / height)
        font = ImageFont.load_default(size=max(10, scale * height // 16))
        ordered = sorted(segments, key=lambda s: s.start)
        with VideoWriter(out, video.info.fps, scale * width, scale * height, "libx264") as writer:
            current = 0
            for frame in video:
                while current < len(ordered) and ordered[current].end <= frame.time:
                    current += 1
                now = ordered[current] if current < len(ordered) else None
                if now is not None and now.start > frame.time:
                    now = None
                image = frame.image[:height, :width].repeat(scale, 0).repeat(scale, 1)
                writer.write(_label(image, now, events, font))
    return out


def _label(image: np.ndarray, segment: Segment | None, events: list[str], font) -> np.ndarray:
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    if segment is None:
        text, fill = "no event", (90, 90, 90)
    else:
        text, fill = f"{segment.event} {segment.confidence:.2f}", colour(events, segment.event)
    margin = max(2, image.shape[0] // 60)
    box = draw.textbbox((2 * margin, 2 * margin), text, font=font)
    draw.rectangle((box[0] - margin, box[1] - margin, box[2] + margin, box[3] + margin), fill)
    draw.text((2 * margin, 2 * margin), text, font=font, fill=(255, 255, 255))
    return np.asarray(picture)
