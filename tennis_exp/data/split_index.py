"""Scanning frame folders: the usable videos of a split and their sliding windows.

Layout: ``<root>/{train,val,test}/<action>/<video>/frame_%04d.jpg``. Each action folder
maps to an event through ``data.actions``; every video yields windows of ``data.window``
frames every ``data.train_stride`` (train) or ``data.eval_stride`` (val/test) frames.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tennis_exp.config import IDLE_ACTION
from tennis_exp.data.splits import SPLITS
from tennis_exp.errors import UserError

log = logging.getLogger(__name__)

_FRAME_SUFFIXES = (".jpg", ".jpeg")
LAYOUT = "<split>/<action>/<video>/frame_%04d.jpg"


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
        raise UserError(f"split folder {split_dir} is missing; expected {LAYOUT}")
    window = data_cfg.window
    # Names and str paths, not Paths (see VideoFrames).
    labelled, skipped_excluded, skipped_actions = _labelled_videos(str(split_dir), data_cfg)
    videos: list[VideoFrames] = []
    video_labels: list[int] = []
    windows: list[tuple[int, int]] = []
    labels: list[int] = []
    skipped_short = 0
    for video_dir, label in labelled:
        frames = _list_frames(video_dir)
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
            f"expected {LAYOUT}"
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


def _labelled_videos(split_dir: str, data_cfg) -> tuple[list[tuple[str, int]], int, dict]:
    """The video folders of the mapped actions (data.max_videos_per_action of each at most)
    with their event index; the number of videos in excluded actions, and per action folder
    neither mapped nor excluded."""
    event_index = {event: i for i, event in enumerate(data_cfg.events)}
    excluded = set(data_cfg.excluded)
    if not data_cfg.background:
        # The background class's clips (the twin's, prepare's): out of a run without the class.
        excluded.add(IDLE_ACTION)
    labelled: list[tuple[str, int]] = []
    skipped_excluded = 0
    skipped_actions: dict[str, int] = {}
    for action in _subdirs(split_dir):
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
        labelled += [
            (os.path.join(action_dir, video), event_index[event])
            for video in video_dirs[: data_cfg.max_videos_per_action]
        ]
    return labelled, skipped_excluded, skipped_actions


def check_root(root: Path) -> None:
    if not root.exists():
        raise UserError(
            f"data.root={root} does not exist; point it at a folder holding {LAYOUT} "
            f"or use data=synthetic to generate one"
        )
    if not root.is_dir():
        raise UserError(f"data.root={root} is not a directory; expected a folder holding {LAYOUT}")
    if not any(root.iterdir()):
        raise UserError(f"data.root={root} is empty; expected {LAYOUT}")
    missing = [split for split in SPLITS if not (root / split).is_dir()]
    if missing:
        raise UserError(
            f"data.root={root} lacks split folder(s) {', '.join(missing)}; "
            f"expected {'/'.join(SPLITS)}"
        )


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
