"""Frame folders -> sliding windows -> uint8 clips: a split's windows as a dataset, read from
its frame cache (frame_cache.py) or decoded on the fly, over the index of its videos
(split_index.py)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tennis_exp.data.frame_cache import check_size, ensure_cache, frame_offsets, load_frame
from tennis_exp.data.split_index import SplitIndex, check_root, fraction_of, scan_folder, scan_split
from tennis_exp.data.splits import SPLITS

log = logging.getLogger(__name__)


class WindowDataset(Dataset):
    """The windows of one split as (uint8 [T, 3, S, S] clip, event index).

    uint8 on purpose: the model normalises on the device, and it is 4x less to copy.
    """

    def __init__(
        self,
        index: SplitIndex,
        window: int,
        image_size: int,
        cache_file: Path | None = None,
        shuffle_seed: int | None = None,
    ):
        self.index = index
        self._window = window
        self._image_size = image_size
        self._cache_file = cache_file
        self._shuffle_seed = shuffle_seed
        self._offsets = frame_offsets(index)
        self._frames: np.ndarray | None = None  # the cache memmap, opened per process
        self._frames_pid: int | None = None

    @property
    def cache_file(self) -> Path | None:
        return self._cache_file

    def reading(self, per_frame: Path) -> WindowDataset:
        """The same windows read from another array with one row per frame of the split
        (a frozen backbone's features)."""
        return WindowDataset(
            self.index, self._window, self._image_size, per_frame, self._shuffle_seed
        )

    def __len__(self) -> int:
        return len(self.index.windows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        video, positions = self._positions(i)
        if self._cache_file is None:
            clip = self._decode(video, positions)
        else:
            # Stored channels-first, so a window is one contiguous copy out of the memmap.
            frames = self._cached_frames()[self._offsets[video] :][positions]
            clip = torch.from_numpy(np.array(frames))
        return clip, int(self.index.labels[i])

    def frame_rows(self, i: int) -> np.ndarray:
        """The rows of the split's per-frame array (the cache file) that window i reads."""
        video, positions = self._positions(i)
        if isinstance(positions, slice):
            positions = np.arange(positions.start, positions.stop)
        return self._offsets[video] + positions

    def _positions(self, i: int) -> tuple[int, slice | np.ndarray]:
        """Window i's video, and its frames' positions in that video."""
        video, start = (int(x) for x in self.index.windows[i])
        if self._shuffle_seed is None:
            return video, slice(start, start + self._window)
        # Seeded by (seed, window) so a run is reproducible whatever the worker or epoch.
        rng = np.random.default_rng((self._shuffle_seed, i))
        return video, start + rng.permutation(self._window)

    def _cached_frames(self) -> np.ndarray:
        # Opened on first use in each process: a memmap inherited through fork or pickled
        # to a worker would be shared state or a full copy of the array.
        if self._frames is None or self._frames_pid != os.getpid():
            self._frames = np.load(self._cache_file, mmap_mode="r")
            self._frames_pid = os.getpid()
        return self._frames

    def _decode(self, video: int, positions: slice | np.ndarray) -> torch.Tensor:
        # Without a cache, frame sizes can only be checked within the window being decoded.
        frames = self.index.videos[video]
        images, expected = [], None
        for i in np.arange(len(frames))[positions]:
            path = frames[i]
            image, size = load_frame(path, self._image_size)
            expected = expected or size
            check_size(path, size, expected)
            images.append(image)
        return torch.stack(images)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_frames"] = state["_frames_pid"] = None
        return state


def build_datasets(data_cfg, seed: int) -> dict[str, WindowDataset]:
    """Scan (and cache) every split; returns {"train", "val", "test"} -> WindowDataset."""
    root = _dataset_root(data_cfg)
    # Every split is scanned before any cache is built, so layout errors come first.
    indexes = [scan_split(root, split, data_cfg) for split in SPLITS]
    if data_cfg.train_fraction < 1:
        indexes[0] = fraction_of(indexes[0], data_cfg.train_fraction, seed)
    return {index.split: _windows(index, data_cfg, seed) for index in indexes}


def build_split(data_cfg, seed: int, split: str, folder: str | None = None) -> WindowDataset:
    """One split of the configured data, or instead a folder in the layout of one split
    (its windows at the evaluation stride)."""
    if folder is not None:
        path = Path(folder).expanduser().absolute()
        return _windows(
            scan_folder(path, path.name, data_cfg.eval_stride, data_cfg), data_cfg, seed
        )
    return _windows(scan_split(_dataset_root(data_cfg), split, data_cfg), data_cfg, seed)


def _dataset_root(data_cfg) -> Path:
    """data.root, generated first when it is the synthetic twin, checked to hold the splits."""
    root = Path(data_cfg.root).expanduser().absolute()
    if data_cfg.synthetic.generate:
        from tennis_exp.data.synthetic import ensure_synthetic

        synthetic = data_cfg.synthetic
        ensure_synthetic(
            root,
            preset=str(synthetic.preset),
            seed=synthetic.seed,
            image_size=data_cfg.image_size,
            sport=str(synthetic.sport),
            background=data_cfg.background,
        )
    check_root(root)
    return root


def _windows(index: SplitIndex, data_cfg, seed: int) -> WindowDataset:
    """The index's windows, read from its frame cache (built on first use) if enabled."""
    cache_dir = Path(data_cfg.cache_dir).expanduser().absolute()
    cache_file = (
        ensure_cache(index, data_cfg.image_size, cache_dir) if data_cfg.frame_cache else None
    )
    counts = ", ".join(f"{e} {n}" for e, n in index.class_counts(data_cfg.events).items())
    log.info(
        "%s: %d windows from %d videos (%s); %d video(s) shorter than %d frames skipped",
        index.split,
        len(index.windows),
        len(index.videos),
        counts,
        index.skipped_short,
        data_cfg.window,
    )
    return WindowDataset(
        index,
        window=data_cfg.window,
        image_size=data_cfg.image_size,
        cache_file=cache_file,
        shuffle_seed=seed if data_cfg.shuffle_frames else None,
    )
