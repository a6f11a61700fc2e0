"""Frame folders -> sliding windows -> uint8 clips.

Layout: ``<root>/{train,val,test}/<action>/<video>/frame_%04d.jpg``. Each action folder
maps to an event through ``data.actions``; every video yields windows of ``data.window``
frames every ``data.train_stride`` (train) or ``data.eval_stride`` (val/test) frames.

With ``data.frame_cache`` every frame of a split is decoded once into a uint8 ``.npy``
[num_frames, 3, S, S] under ``data.cache_dir``, named by a hash of the sources, and read
through a memmap, so epochs cost a memory copy per window instead of 16 JPEG decodes.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from tennis_exp.errors import UserError
from tennis_exp.files import atomic_write

log = logging.getLogger(__name__)

_SPLITS = ("train", "val", "test")
_FRAME_SUFFIXES = (".jpg", ".jpeg")
_LAYOUT = "<split>/<action>/<video>/frame_%04d.jpg"
# Part of the cache key: bump it whenever decoding, resizing or the file layout changes.
_CACHE_VERSION = 2


class VideoFrames(Sequence[Path]):
    """One video's frame files in frame order: its folder and the files' names.

    Paths are made on access: making one per frame was most of a warm scan's time.
    """

    def __init__(self, folder: str, names: list[str]) -> None:
        self.folder = folder
        self.names = names

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int | slice) -> Path | list[Path]:
        if isinstance(i, slice):
            return [Path(self.folder, name) for name in self.names[i]]
        return Path(self.folder, self.names[i])


# eq=False: the generated __eq__ would compare numpy arrays, which has no single truth value.
@dataclass(frozen=True, eq=False)
class SplitIndex:
    """What scanning one split found."""

    split: str
    videos: list[VideoFrames]  # frame files per usable video
    video_labels: list[int]  # event index (position in data.events) per video
    windows: np.ndarray  # int64 [N, 2]: (video index, start frame)
    labels: np.ndarray  # int64 [N]: event index per window
    skipped_short: int  # videos shorter than a window
    skipped_actions: dict[str, int]  # action folders neither mapped nor excluded -> videos

    def class_counts(self, events) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(events))
        return {event: int(n) for event, n in zip(events, counts, strict=True)}


def _subdirs(folder: str) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir())


_DIGIT_RUNS = re.compile(r"(\d+)")
_ASCII_DIGITS_TO_0 = bytes.maketrans(b"123456789", b"0" * 9)


def _natural_key(name: str) -> list:
    # frame_9999 sorts before frame_10000, should a video outgrow the %04d padding.
    return [int(part) if part.isdigit() else part for part in _DIGIT_RUNS.split(name)]


def _natural_sorted(names: list[str]) -> list[str]:
    names.sort()
    # Names that differ only in ASCII digits at the same places (frame_%04d.jpg) have aligned,
    # equally long digit runs, which sort the same lexically as by number: the common case
    # needs no per-name key. Bytes, as str.translate is 5x slower; surrogatepass never fails.
    skeletons = {
        name.encode("utf-8", "surrogatepass").translate(_ASCII_DIGITS_TO_0) for name in names
    }
    if len(skeletons) > 1:
        names.sort(key=_natural_key)
    return names


def _list_frames(video_dir: str) -> VideoFrames:
    with os.scandir(video_dir) as entries:
        names = [
            e.name for e in entries if e.name.lower().endswith(_FRAME_SUFFIXES) and e.is_file()
        ]
    return VideoFrames(video_dir, _natural_sorted(names))


def scan_split(root: Path, split: str, data_cfg) -> SplitIndex:
    """Index the usable videos of ``root/split`` and their sliding windows."""
    stride = data_cfg.train_stride if split == "train" else data_cfg.eval_stride
    return scan_folder(Path(root) / split, split, stride, data_cfg)


def scan_folder(split_dir: Path, split: str, stride: int, data_cfg) -> SplitIndex:
    """Index the videos of a folder in the layout of one split, `split` naming it."""
    if not split_dir.is_dir():
        raise UserError(f"split folder {split_dir} is missing; expected {_LAYOUT}")
    window = data_cfg.window
    event_index = {event: i for i, event in enumerate(data_cfg.events)}
    excluded = set(data_cfg.excluded)

    videos: list[VideoFrames] = []
    video_labels: list[int] = []
    windows: list[tuple[int, int]] = []
    labels: list[int] = []
    skipped_short = skipped_excluded = 0
    skipped_actions: dict[str, int] = {}
    # Names and str paths, not Paths (see VideoFrames).
    for action in _subdirs(str(split_dir)):
        action_dir = os.path.join(split_dir, action)
        video_dirs = _subdirs(action_dir)
        # Excluded wins over a mapping, so a user can drop an action without editing the map.
        if action in excluded:
            skipped_excluded += len(video_dirs)
            continue
        if action not in data_cfg.actions:
            skipped_actions[action] = len(video_dirs)
            continue
        event = data_cfg.actions[action]
        if event not in event_index:
            raise UserError(
                f"data.actions maps {action!r} to unknown event {event!r}; "
                f"valid events: {list(data_cfg.events)}"
            )
        label = event_index[event]
        for video in video_dirs[: data_cfg.max_videos_per_action]:
            frames = _list_frames(os.path.join(action_dir, video))
            starts = range(0, len(frames) - window + 1, stride)
            if not starts:
                skipped_short += 1
                continue
            windows.extend((len(videos), start) for start in starts)
            labels.extend([label] * len(starts))
            videos.append(frames)
            video_labels.append(label)

    if skipped_actions:
        listed = ", ".join(f"{action} ({n})" for action, n in skipped_actions.items())
        log.warning(
            "%s: skipped %d video(s) in action folder(s) neither in data.actions nor in "
            "data.excluded: %s",
            split,
            sum(skipped_actions.values()),
            listed,
        )
    if not videos:
        raise UserError(
            f"no usable video in {split_dir}: {skipped_short} video(s) with fewer than "
            f"data.window={window} frames, {skipped_excluded} in data.excluded actions, "
            f"{sum(skipped_actions.values())} in action folders not in data.actions; "
            f"expected {_LAYOUT}"
        )
    return SplitIndex(
        split=split,
        videos=videos,
        video_labels=video_labels,
        windows=np.array(windows, dtype=np.int64).reshape(-1, 2),
        labels=np.array(labels, dtype=np.int64),
        skipped_short=skipped_short,
        skipped_actions=skipped_actions,
    )


def _load_frame(path: Path, image_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
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


def _check_size(path: Path, size: tuple[int, int], expected: tuple[int, int]) -> None:
    if size != expected:
        raise UserError(
            f"video {path.parent} mixes frame sizes {expected[1]}x{expected[0]} and "
            f"{size[1]}x{size[0]} (at {path.name}); re-extract its frames at one size"
        )


def _frame_offsets(index: SplitIndex) -> np.ndarray:
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
        image, size = _load_frame(path, image_size)
        expected = expected or size
        _check_size(path, size, expected)
        out[i] = image.numpy()


def _build_cache(index: SplitIndex, image_size: int, path: Path) -> None:
    offsets = _frame_offsets(index)
    with atomic_write(path) as tmp:
        out = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(int(offsets[-1]), 3, image_size, image_size)
        )
        # Pillow releases the GIL while decoding and resizing, so threads scale with cores.
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
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


def _ensure_cache(index: SplitIndex, image_size: int, cache_dir: Path) -> Path:
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
        self._offsets = _frame_offsets(index)
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
            image, size = _load_frame(path, self._image_size)
            expected = expected or size
            _check_size(path, size, expected)
            images.append(image)
        return torch.stack(images)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_frames"] = state["_frames_pid"] = None
        return state


def _check_root(root: Path) -> None:
    if not root.exists():
        raise UserError(
            f"data.root={root} does not exist; point it at a folder holding {_LAYOUT} "
            f"or use data=synthetic to generate one"
        )
    if not root.is_dir():
        raise UserError(f"data.root={root} is not a directory; expected a folder holding {_LAYOUT}")
    if not any(root.iterdir()):
        raise UserError(f"data.root={root} is empty; expected {_LAYOUT}")
    missing = [split for split in _SPLITS if not (root / split).is_dir()]
    if missing:
        raise UserError(
            f"data.root={root} lacks split folder(s) {', '.join(missing)}; "
            f"expected {'/'.join(_SPLITS)}"
        )


def build_datasets(data_cfg, seed: int) -> dict[str, WindowDataset]:
    """Scan (and cache) every split; returns {"train", "val", "test"} -> WindowDataset."""
    root = _dataset_root(data_cfg)
    # Every split is scanned before any cache is built, so layout errors come first.
    indexes = [scan_split(root, split, data_cfg) for split in _SPLITS]
    if data_cfg.train_fraction < 1:
        indexes[0] = fraction_of(indexes[0], data_cfg.train_fraction, seed)
    return {index.split: _windows(index, data_cfg, seed) for index in indexes}


def fraction_of(index: SplitIndex, fraction: float, seed: int) -> SplitIndex:
    """A share of the split's videos, drawn within each event (at least one video of every
    event it has), in an order fixed by the seed and the videos' names: any machine draws the
    same videos, and a larger fraction holds a smaller one's."""

    def rank(video: int) -> str:
        key = f"{seed}\0{os.path.basename(index.videos[video].folder)}"
        return hashlib.sha256(key.encode()).hexdigest()

    kept: list[int] = []
    for label in sorted(set(index.video_labels)):
        videos = sorted((v for v, lab in enumerate(index.video_labels) if lab == label), key=rank)
        kept += videos[: max(1, math.ceil(fraction * len(videos)))]
    kept.sort()
    new_id = {old: new for new, old in enumerate(kept)}
    mask = np.isin(index.windows[:, 0], kept)
    windows = index.windows[mask].copy()
    windows[:, 0] = [new_id[v] for v in windows[:, 0]]
    log.info(
        "%s: data.train_fraction=%g keeps %d of %d videos", index.split, fraction, len(kept),
        len(index.videos),
    )  # fmt: skip
    return replace(
        index,
        videos=[index.videos[v] for v in kept],
        video_labels=[index.video_labels[v] for v in kept],
        windows=windows,
        labels=index.labels[mask],
    )


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
        )
    _check_root(root)
    return root


def _windows(index: SplitIndex, data_cfg, seed: int) -> WindowDataset:
    """The index's windows, read from its frame cache (built on first use) if enabled."""
    cache_dir = Path(data_cfg.cache_dir).expanduser().absolute()
    cache_file = (
        _ensure_cache(index, data_cfg.image_size, cache_dir) if data_cfg.frame_cache else None
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


def make_loader(dataset, batch_size: int, training, device: torch.device, seed: int, sampler=None):
    """`training`: the run's training config (its num_workers and prefetch_factor)."""
    workers = training.num_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=training.prefetch_factor if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
    )
