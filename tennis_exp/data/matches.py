"""Labelled whole matches -> the frames layout the trainer reads: `python -m tennis_exp.prepare
videos=<matches> out=<folder> matches=true`.

    <matches>/<match>.{avi,mp4,mov,mkv} with <matches>/<match>.segments.csv (or .json)
        -> <out>/{train,val,test}/<event folder>/<match>_<NNN>/frame_%04d.jpg

The truth is the segments format `predict` writes and its `truth=` reads (start, end, event in
seconds). Every stretch of a match becomes one clip folder, numbered in time order: a segment in
its event's folder (smash, net_play, rally, serve: conf/data/matches.yaml maps them), the time
outside every segment in `idle`, the background class of data.background. The trainer cuts its
windows from those clips. A match is in one split only (the split rule of splits.py, each match
a group of its own), so no window of a test match was seen in training.

Every truth file is checked before anything is written: a video without one, an unknown event,
overlapping segments or a segment past the video's end is refused in one line. A match is
decoded into `<out>/.partial/`, then its clips are moved into place; the manifest lists the
matches, their split and their frames (blank until done), so a rerun with the same settings
continues, redoing a match that was not done.
"""

from __future__ import annotations

import bisect
import csv
import logging
import os
import shutil
from pathlib import Path

from omegaconf import DictConfig
from PIL import Image

from tennis_exp.config import EVENTS, IDLE_ACTION, metric_name
from tennis_exp.data import splits as splitting
from tennis_exp.data.prepare import MANIFEST, claimed, split_table, split_videos
from tennis_exp.data.segments import (
    TRUTH_SUFFIXES,
    Segment,
    check_truth,
    read_segments,
    truth_file,
)
from tennis_exp.data.splits import VideoRef
from tennis_exp.data.video import VIDEO_SUFFIXES, VideoReader, video_files
from tennis_exp.errors import UserError

log = logging.getLogger(__name__)

_ACTION = "match"  # every match's action in the manifest: the split has nothing to stratify
# Part of the marker: bump it whenever the frames written for given settings change.
_FORMAT = 1


def event_folder(event: str) -> str:
    """The action folder of an event's clips: 'Net Play' -> 'net_play'."""
    return metric_name(event)


def prepare_matches(cfg: DictConfig) -> None:
    """Check every truth, split by match, cut each match into its clip folders."""
    folder, out = Path(cfg.videos).expanduser(), Path(cfg.out).expanduser()
    matches = checked_matches(folder, cfg.fps)
    refs = [VideoRef(video.stem, _ACTION, "") for video in matches]
    assigned = split_videos(refs, cfg.split)
    settings = {
        "format": _FORMAT,
        "matches": True,
        "image_size": cfg.image_size,
        "quality": cfg.quality,
        "fps": cfg.fps,
        "split": splitting.digest(refs, assigned),
    }
    with claimed(out, settings):
        frames = _done(out / MANIFEST)
        splitting.write_manifest(out / MANIFEST, refs, assigned, frames)
        log.info("%s", split_table(refs, assigned))
        for (video, truth), ref, split in zip(matches.items(), refs, assigned, strict=True):
            if ref.key in frames:
                continue
            frames[ref.key] = cut_match(video, truth, out, split, cfg)
            splitting.write_manifest(out / MANIFEST, refs, assigned, frames)
            log.info("%s: %d frames into %s", video.name, frames[ref.key], out / split)
    clips = {split: _clips(out / split) for split in splitting.SPLITS}
    log.info(
        "%s holds clips: %s; the split is in %s",
        out,
        ", ".join(f"{split} {n}" for split, n in clips.items()),
        out / MANIFEST,
    )


def checked_matches(folder: Path, fps: float | None) -> dict[Path, list[Segment]]:
    """Each match video with its truth, every file checked before anything is written."""
    if not folder.is_dir():
        raise UserError(f"videos={folder} is not a folder; expected <match>.avi with "
                        f"<match>{TRUTH_SUFFIXES[0]} beside each")  # fmt: skip
    videos = video_files(folder)
    if not videos:
        raise UserError(f"videos={folder} holds no match video ({', '.join(VIDEO_SUFFIXES)})")
    matches = {}
    for video in videos:
        truth = truth_file(folder, video)
        if truth is None:
            raise UserError(
                f"match {video.name} has no truth: label it in "
                f"{folder / (video.stem + TRUTH_SUFFIXES[0])} (start,end,event in "
                "seconds; docs/predict.md), or move the video out of videos="
            )
        with VideoReader(video, 16, fps) as reader:
            info = reader.info
        duration = info.duration or (info.frame_count / info.fps if info.frame_count else None)
        segments = read_segments(truth, EVENTS)
        check_truth(segments, duration, 1 / info.fps, f"truth {truth}")
        matches[video] = segments
    return matches


def stretches(truth: list[Segment]) -> list[tuple[float, str]]:
    """(start, folder) of every stretch of a match in time order: the segments and the idle
    time around them; each lasts until the next one starts (the last to the video's end)."""
    found: list[tuple[float, str]] = []
    now = 0.0
    for segment in truth:
        if segment.start > now:
            found.append((now, IDLE_ACTION))
        found.append((segment.start, event_folder(segment.event)))
        now = segment.end
    found.append((now, IDLE_ACTION))
    return found


def cut_match(video: Path, truth: list[Segment], out: Path, split: str, cfg: DictConfig) -> int:
    """Decode one match into its clip folders under out/split; return its frame count."""
    parts = stretches(truth)
    starts = [start for start, _ in parts]
    partial = out / ".partial" / video.stem
    shutil.rmtree(partial, ignore_errors=True)
    # An interrupted run may have moved some of this match's clips already.
    for k, (_, folder) in enumerate(parts):
        for stale in out.glob(f"*/{folder}/{video.stem}_{k:03d}"):
            shutil.rmtree(stale)
    counts = [0] * len(parts)
    with VideoReader(video, cfg.image_size, cfg.fps) as reader:
        for frame in reader:
            k = bisect.bisect_right(starts, frame.time + 1e-9) - 1
            clip = partial / parts[k][1] / f"{video.stem}_{k:03d}"
            if counts[k] == 0:
                clip.mkdir(parents=True)
            counts[k] += 1
            Image.fromarray(frame.image).save(clip / f"frame_{counts[k]:04d}.jpg",
                                              quality=cfg.quality)  # fmt: skip
    for action in sorted(os.listdir(partial)) if partial.is_dir() else []:
        (out / split / action).mkdir(parents=True, exist_ok=True)
        for clip in sorted(os.listdir(partial / action)):
            os.replace(partial / action / clip, out / split / action / clip)
    shutil.rmtree(partial, ignore_errors=True)
    return sum(counts)


def _done(manifest: Path) -> dict[tuple[str, str], int]:
    """The matches an earlier run of these settings finished (frames in its manifest)."""
    if not manifest.is_file():
        return {}
    with open(manifest, newline="") as f:
        return {
            (row["action"], row["video"]): int(row["frames"])
            for row in csv.DictReader(f)
            if row["frames"]
        }


def _clips(split_dir: Path) -> int:
    if not split_dir.is_dir():
        return 0
    return sum(len(os.listdir(action)) for action in split_dir.iterdir() if action.is_dir())
