"""Frames decoded to uint8 [3, S, S], and a split's frame cache.

With ``data.frame_cache`` every frame of a split is decoded once into a uint8 ``.npy``
[num_frames, 3, S, S] under ``data.cache_dir``, named by a hash of the sources, and read
through a memmap, so epochs cost a memory copy per window instead of 16 JPEG decodes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tennis_exp.config import usable_cpus
from tennis_exp.data.split_index import SplitIndex, VideoFrames
from tennis_exp.errors import UserError
from tennis_exp.files import atomic_write

log = logging.getLogger(__name__)

# Part of the cache key: bump it whenever decoding, resizing or the file layout changes.
_CACHE_VERSION = 2


def load_frame(path: Path, image_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Decode one frame to uint8 [3, S, S]; also return its source (height, width).

    Pillow, not torchvision.io, whose image decoding is deprecated since torchvision 0.29.
    """
    try:
        with Image.open(path) as image:
            size = (image.height, image.width)
            image.draft("RGB", (image_size, image_size))  # JPEG DCT scaling: a cheaper decode
            image = image.convert("RGB")
    except FileNotFoundError:
        raise UserError(f"frame {path} cannot be read (it vanished)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise UserError(
            f"frame {path} is not a readable JPEG ({err}); re-extract it or remove its video"
        ) from None
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy()), size


def check_size(path: Path, size: tuple[int, int], expected: tuple[int, int]) -> None:
    if size != expected:
        raise UserError(
            f"video {path.parent} mixes frame sizes {expected[1]}x{expected[0]} and "
            f"{size[1]}x{size[0]} (at {path.name}); re-extract its frames at one size"
        )


def frame_offsets(index: SplitIndex) -> np.ndarray:
    """Start of every video in the split's flat frame array (plus the total at the end)."""
    lengths = [len(frames) for frames in index.videos]
    return np.concatenate(([0], np.cumsum(lengths, dtype=np.int64)))


def _cache_key(index: SplitIndex, image_size: int) -> str:
    # Every frame's own size and mtime: rewriting a frame in place leaves its folder's mtime as
    # it was. These stat calls are most of a warm start; str paths and one hash update per
    # video keep the rest small.
    digest = hashlib.sha256(f"v{_CACHE_VERSION}\0{image_size}\n".encode())
    for frames in index.videos:
        folder = os.path.join(frames.folder, "")
        lines = []
        for name in frames.names:
            stat = os.stat(folder + name)
            lines.append(f"{folder}{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n")
        digest.update("".join(lines).encode())
    return digest.hexdigest()[:24]


def _fill_video(out: np.ndarray, paths: VideoFrames, image_size: int) -> None:
    expected = None
    for i, path in enumerate(paths):
        image, size = load_frame(path, image_size)
        expected = expected or size
        check_size(path, size, expected)
        out[i] = image.numpy()


def _build_cache(index: SplitIndex, image_size: int, path: Path) -> None:
    offsets = frame_offsets(index)
    with atomic_write(path) as tmp:
        out = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(int(offsets[-1]), 3, image_size, image_size)
        )
        # Pillow releases the GIL while decoding and resizing, so threads scale with cores.
        with ThreadPoolExecutor(min(8, usable_cpus())) as pool:
            futures = [
                pool.submit(_fill_video, out[offsets[v] : offsets[v + 1]], paths, image_size)
                for v, paths in enumerate(index.videos)
            ]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
        out.flush()
        del out


def ensure_cache(index: SplitIndex, image_size: int, cache_dir: Path) -> Path:
    """The split's cache file, built on first use."""
    path = cache_dir / f"{index.split}-{image_size}px-{_cache_key(index, image_size)}.npy"
    if path.exists():
        log.info("%s: reusing frame cache %s", index.split, path)
        return path
    started = time.perf_counter()
    _build_cache(index, image_size, path)
    log.info(
        "%s: cached %d frames in %.1fs -> %s",
        index.split,
        sum(len(frames) for frames in index.videos),
        time.perf_counter() - started,
        path,
    )
    return path
