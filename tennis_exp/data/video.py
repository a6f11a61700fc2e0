"""Video files <-> streams of uint8 RGB frames: read resized, written one frame at a time.

Decoding is PyAV's: its wheels on the package index bundle FFmpeg with its codecs (MPEG-4 Part 2
as in THETIS's .avi, H.264, HEVC, VP9, MJPEG ...), so `pip install` is all a machine needs,
Colab and Windows included. torchcodec, PyTorch's decoder, was the other candidate; it loads the
system's FFmpeg libraries at run time and fails without them (checked with torchcodec 0.17 on a
machine without FFmpeg), and it ties the install to the torch version.

    with VideoReader("p1_smash_s1.avi", size=224, fps_cap=10) as video:
        video.info.fps, video.info.frame_count, video.info.duration
        for frame in video:          # one pass, one decoded frame in memory at a time
            frame.time, frame.image  # seconds from the first frame, uint8 (224, 224, 3)
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from tennis_exp.errors import UserError, first_line

VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv")


def video_files(folder: Path) -> list[Path]:
    """The videos of a folder (not of its subfolders), sorted by name."""
    # Dot files are hidden: macOS's ._name.avi beside every copied video is no video.
    return sorted(
        f
        for f in folder.iterdir()
        if f.suffix.lower() in VIDEO_SUFFIXES and not f.name.startswith(".") and f.is_file()
    )


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about the video stream, before any decoding."""

    width: int
    height: int
    fps: float  # the source's average frame rate
    frame_count: int | None  # the container's count, else duration x fps; None if neither known
    duration: float | None  # seconds


class Frame(NamedTuple):
    time: float  # seconds from the video's first frame
    image: np.ndarray  # uint8 (height, width, 3) RGB


class VideoReader:
    """One video, decoded frame by frame.

    `size`: frames resized to size x size (the users' frames are square, whatever the video's
    aspect ratio); None keeps the source size. `fps_cap`: at most that many frames per second,
    the first frame at or after each 1/fps_cap tick kept, the others dropped (a source at or
    below the cap keeps every frame). `threads`: FFmpeg's decoding threads, 0 for its default
    (use 1 when one process per core decodes). A file that cannot be opened or decoded, or that
    holds no frame, raises a one-line UserError naming it.
    """

    def __init__(
        self,
        path: str | Path,
        size: int | None = None,
        fps_cap: float | None = None,
        threads: int = 0,
    ) -> None:
        self.path = Path(path)
        self.size = size
        self.fps_cap = fps_cap
        try:
            self._container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as err:
            raise self._unreadable(err) from None
        try:
            self._stream = self._container.streams.video[0]
        except IndexError:
            self._container.close()
            raise UserError(f"video {self.path} holds no video stream") from None
        self._stream.thread_count = threads
        self._stream.thread_type = "AUTO"  # frame threads as well as slice threads
        self.info = _info(self._container, self._stream)
        self._reformatter = VideoReformatter()

    @property
    def output_fps(self) -> float:
        """Frames per second of what the iterator yields."""
        return min(self.info.fps, self.fps_cap) if self.fps_cap else self.info.fps

    def __iter__(self) -> Iterator[Frame]:
        kept = 0
        last_tick = -1
        start: float | None = None
        try:
            for index, decoded in enumerate(self._container.decode(self._stream)):
                time = decoded.time if decoded.time is not None else index / self.info.fps
                start = time if start is None else start
                time -= start
                if self.fps_cap:
                    # The small epsilon keeps a frame at exactly k / fps_cap in tick k.
                    tick = math.floor(time * self.fps_cap + 1e-6)
                    if tick <= last_tick:
                        continue
                    last_tick = tick
                kept += 1
                yield Frame(time, self._rgb(decoded))
        except av.error.FFmpegError as err:
            raise self._unreadable(err) from None
        if not kept:
            raise UserError(f"video {self.path} holds no frame")

    def _rgb(self, decoded: av.VideoFrame) -> np.ndarray:
        # Area averaging: no aliasing when downscaling, and faster than bilinear on THETIS's
        # 640x480. One reformatter for the video keeps swscale's context: a frame's own would
        # set it up again for every frame, a third of the resize's cost.
        rgb = self._reformatter.reformat(
            decoded, width=self.size, height=self.size, format="rgb24", interpolation="AREA"
        )
        return rgb.to_ndarray()

    def _unreadable(self, err: BaseException) -> UserError:
        reason = getattr(err, "strerror", None) or first_line(err)
        return UserError(f"video {self.path} cannot be read: {reason}")

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _info(container, stream) -> VideoInfo:
    # 25 fps (PAL) only when the container states no rate at all: frame times then come from
    # the frames' own timestamps where they have them.
    fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    else:
        duration = None
    frame_count = stream.frames or (round(duration * fps) if duration else None)
    return VideoInfo(stream.width, stream.height, fps, frame_count, duration)


# Containers by suffix: the writer's temporary file has none of its own.
_FORMATS = {".avi": "avi", ".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}


class VideoWriter:
    """uint8 (H, W, 3) RGB frames, one at a time, into a video file that appears whole or not
    at all (written under a temporary name, renamed on a clean close). H and W must be even:
    the codecs store 4:2:0 colour. The container follows the file's suffix unless
    `container_format` names one.

        with VideoWriter("out.mp4", fps=25, width=640, height=480, codec="libx264") as out:
            out.write(image)
    """

    def __init__(
        self,
        path: str | Path,
        fps: float,
        width: int,
        height: int,
        codec: str = "mpeg4",
        bit_rate: int | None = None,
        container_format: str | None = None,
    ) -> None:
        self.path = Path(path)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        container_format = container_format or _FORMATS[self.path.suffix.lower()]
        self._container = av.open(str(self._tmp), "w", format=container_format)
        rate = Fraction(fps).limit_denominator(1001)  # 29.97 fps is 30000/1001
        self._stream = self._container.add_stream(codec, rate=rate)
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
        if bit_rate:
            self._stream.bit_rate = bit_rate

    def write(self, image: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        self._container.mux(self._stream.encode(frame))

    def close(self, keep: bool = True) -> None:
        """Flush and rename into place; `keep=False` discards the file."""
        try:
            if keep:
                self._container.mux(self._stream.encode())
        finally:
            self._container.close()
        if keep:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(keep=exc_type is None)
