"""A video's frames as a stream of sliding windows, in bounded memory.

Frames arrive in chunks (a batch for the backbone); the ring keeps only the last frames (or
their features) that a window still to come needs, at most `window - 1`, so it never holds more
than `window - 1 + chunk` of them, however long the video.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

from tennis_exp.data.video import Frame


class Ring:
    """Windows of `window` consecutive items, the first at item 0 and every `stride`-th after,
    cut from aligned tensors (features, times ...) pushed a chunk at a time."""

    def __init__(self, window: int, stride: int) -> None:
        self.window, self.stride = window, stride
        self.held: tuple[torch.Tensor, ...] = ()
        self.offset = 0  # the stream position of held[.][0]
        self.next_start = 0  # the stream position of the next window's first item
        self.peak = 0  # the most items ever held at once

    def push(self, *chunk: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Add aligned chunks ([n, ...] each); return every window now complete, per tensor
        [k, window, ...] (k may be 0), in stream order."""
        if self.held:
            held = tuple(torch.cat([h, c]) for h, c in zip(self.held, chunk, strict=True))
        else:
            held = chunk
        size = len(held[0])
        self.peak = max(self.peak, size)
        first = self.next_start - self.offset
        starts = range(first, size - self.window + 1, self.stride)
        windows = tuple(
            torch.stack([t[s : s + self.window] for s in starts])
            if starts
            else t.new_empty((0, self.window, *t.shape[1:]))
            for t in held
        )
        self.next_start += len(starts) * self.stride
        keep = min(self.next_start - self.offset, size)
        self.held = tuple(t[keep:] for t in held)
        self.offset += keep
        return windows


def chunks(frames: Iterable[Frame], size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(images uint8 [n, H, W, 3], times [n]) of up to `size` frames at a time."""
    images: list[np.ndarray] = []
    times: list[float] = []
    for frame in frames:
        images.append(frame.image)
        times.append(frame.time)
        if len(images) == size:
            yield np.stack(images), np.array(times)
            images, times = [], []
    if images:
        yield np.stack(images), np.array(times)
