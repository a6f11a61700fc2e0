"""Videos -> the frames layout the trainer reads (`data=thetis`): what `python -m
tennis_exp.prepare` does.

    <videos>/<action>/<video>.{avi,mp4,mov,mkv}
        -> <out>/{train,val,test}/<action>/<video>/frame_%04d.jpg

Beside the split folders, `<out>/manifest.csv` holds the split (video, action, player, split,
frames; see splits.py for the rule) and `<out>/.prepare.json` the settings that made the frames.
A rerun with the same settings continues where an interrupted one stopped: each video is decoded
into `<out>/.partial/` and renamed into place when complete, so a video's folder is either whole
or absent. Other settings, or another split, are refused: that is another dataset. A video that
cannot be read is named, skipped and listed at the end, and the command then fails; the other
videos are prepared.
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from omegaconf import DictConfig
from PIL import Image
from tqdm import tqdm

from tennis_exp.config import shows_progress_bar, usable_cpus
from tennis_exp.data import splits as splitting
from tennis_exp.data.splits import SPLITS, VideoRef
from tennis_exp.data.video import VideoReader, video_files
from tennis_exp.errors import UserError, first_line
from tennis_exp.files import locked, read_marker, write_marker

log = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
_MARKER = ".prepare.json"
_PARTIAL = ".partial"
_LOCK = ".prepare.lock"
# Part of the marker: bump it whenever the frames written for given settings change.
_FORMAT = 1
_LAYOUT = "<videos>/<action>/<video>.avi (.mp4, .mov, .mkv), as THETIS's VIDEO_RGB"


class Source(NamedTuple):
    path: Path
    ref: VideoRef


class Task(NamedTuple):
    """One video's work, as sent to a worker process."""

    source: Path
    partial: Path  # where its frames are written
    final: Path  # its folder in the split, once complete
    image_size: int
    quality: int
    fps: float | None
    threads: int = 0  # FFmpeg's decoding threads; run_tasks sets them


def prepare(cfg: DictConfig) -> None:
    """List, split, decode; raise UserError at the end if any video could not be prepared."""
    videos, out = Path(cfg.videos).expanduser(), Path(cfg.out).expanduser()
    sources = list_videos(videos, cfg.actions)
    refs = [source.ref for source in sources]
    assigned = split_videos(refs, cfg.split)
    settings = {
        "format": _FORMAT,
        "image_size": cfg.image_size,
        "quality": cfg.quality,
        "fps": cfg.fps,
        "split": splitting.digest(refs, assigned),
    }
    with claimed(out, settings):
        finals = [out / s / ref.action / ref.name for ref, s in zip(refs, assigned, strict=True)]
        # A video's folder exists only once complete: those are done.
        frames = {
            ref.key: count_frames(final)
            for ref, final in zip(refs, finals, strict=True)
            if final.is_dir()
        }
        splitting.write_manifest(out / MANIFEST, refs, assigned, frames)
        log.info("%s", split_table(refs, assigned))
        todo = [
            Task(source.path, out / _PARTIAL / final.relative_to(out), final, cfg.image_size,
                 cfg.quality, cfg.fps)
            for source, final in zip(sources, finals, strict=True)
            if source.ref.key not in frames
        ]  # fmt: skip
        log.info("%d video(s) to prepare into %s, %d already prepared", len(todo), out, len(frames))
        started = time.perf_counter()
        written, failures = run_tasks(
            todo, cfg.workers or usable_cpus(), shows_progress_bar(cfg.progress_bar)
        )
        seconds = time.perf_counter() - started
        frames.update(
            (ref.key, written[final])
            for ref, final in zip(refs, finals, strict=True)
            if final in written
        )
        splitting.write_manifest(out / MANIFEST, refs, assigned, frames)
        shutil.rmtree(out / _PARTIAL, ignore_errors=True)
    log.info("%s", summary(written, seconds, frames, refs, assigned, out))
    if failures:
        for path, reason in failures:
            log.error("not prepared: %s (%s)", path, reason)
        raise UserError(
            f"{len(failures)} video(s) could not be prepared and were skipped (listed above); "
            f"the first: {failures[0][1]}"
        )


# ---------------------------------------------------------------------------------------------
# Listing and splitting.


def list_videos(folder: Path, actions: Sequence[str]) -> list[Source]:
    """The videos of the known action folders, sorted by action and name; other folders are
    warned about and counted, as the trainer does."""
    if not folder.is_dir():
        state = "does not exist" if not folder.exists() else "is not a directory"
        raise UserError(f"videos={folder} {state}; expected {_LAYOUT}")
    known = set(actions)
    sources: list[Source] = []
    skipped: dict[str, int] = {}
    for action_dir in sorted(d for d in folder.iterdir() if d.is_dir()):
        files = video_files(action_dir)
        if files and action_dir.name not in known:
            skipped[action_dir.name] = len(files)
            continue
        seen: dict[str, Path] = {}
        for file in files:
            if file.stem in seen:
                raise UserError(
                    f"videos {seen[file.stem]} and {file.name} would both be written to "
                    f"{action_dir.name}/{file.stem}/; rename one"
                )
            seen[file.stem] = file
            ref = VideoRef(file.stem, action_dir.name, splitting.player_of(file.stem))
            sources.append(Source(file, ref))
    if skipped:
        listed = ", ".join(f"{action} ({n})" for action, n in skipped.items())
        log.warning(
            "skipped %d video(s) in action folder(s) not in `actions`: %s",
            sum(skipped.values()),
            listed,
        )
    if not sources:
        if skipped:
            unknown = ", ".join(skipped)
            found = f"no video to prepare (only in action folders not in `actions`: {unknown})"
        elif video_files(folder):  # videos= named one action's folder
            found = "videos but no action folder: point videos= at the folder of action folders"
        else:
            found = "no video to prepare"
        raise UserError(f"videos={folder} holds {found}; expected {_LAYOUT}")
    return sources


def split_videos(refs: list[VideoRef], split_cfg: DictConfig) -> list[str]:
    """Each video's split: from split.manifest if given, else by the rule of splits.py."""
    if split_cfg.manifest:
        assigned, extra = splitting.from_manifest(refs, Path(split_cfg.manifest).expanduser())
        if extra:
            log.warning(
                "split.manifest=%s lists %d video(s) not in the videos folder",
                split_cfg.manifest,
                extra,
            )
        return assigned
    ratios = [split_cfg.train, split_cfg.val, split_cfg.test]
    assigned = splitting.assign(refs, ratios, split_cfg.seed, split_cfg.by_player)
    empty = [s for s, r in zip(SPLITS, ratios, strict=True) if r > 0 and s not in assigned]
    if empty:
        ratio_text = "/".join(f"{r:g}" for r in ratios)
        if split_cfg.by_player:
            players = len({ref.player for ref in refs if ref.player})
            groups = (
                f"{players} player(s) and {sum(not r.player for r in refs)} video(s) without one"
            )
            advice = "; split by video with split.by_player=false"
        else:
            groups, advice = f"{len(refs)} video(s)", ""
        raise UserError(
            f"split {', '.join(empty)} would hold no video: {groups} are too few to split "
            f"{ratio_text}{advice}"
        )
    return assigned


def split_table(refs: Sequence[VideoRef], assigned: Sequence[str]) -> str:
    """Videos per action and split (and players per split), as printed before the work."""
    actions = sorted({ref.action for ref in refs})
    counts = {(ref.action, split): 0 for ref in refs for split in SPLITS}
    players: dict[str, set[str]] = {split: set() for split in SPLITS}
    for ref, split in zip(refs, assigned, strict=True):
        counts[ref.action, split] += 1
        if ref.player:
            players[split].add(ref.player)
    width = max(len(a) for a in [*actions, "players"])
    lines = [f"videos per split and action:\n  {'action':<{width}} " + _row(SPLITS)]
    lines += [f"  {a:<{width}} " + _row(counts[a, s] for s in SPLITS) for a in actions]
    lines.append(f"  {'all':<{width}} " + _row(assigned.count(s) for s in SPLITS))
    if any(players.values()):
        lines.append(f"  {'players':<{width}} " + _row(len(players[s]) for s in SPLITS))
    return "\n".join(lines)


def _row(cells) -> str:
    return "".join(f"{cell:>7}" for cell in cells)


# ---------------------------------------------------------------------------------------------
# The out folder.


@contextmanager
def claimed(out: Path, settings: dict) -> Iterator[None]:
    """`out` for these settings, locked against a second prepare: a new or empty folder, or one
    a prepare with the same settings wrote. Anything else is refused before a file is written."""
    if out.exists() and not out.is_dir():
        raise UserError(f"out={out} is a file; expected a new or empty folder")
    marker = read_marker(out / _MARKER)
    if marker is None and out.exists() and any(out.iterdir()):
        raise UserError(
            f"out={out} is not empty and was not written by prepare (no {_MARKER}); "
            "choose a new or empty folder"
        )
    _check_same(out, marker, settings)
    out.mkdir(parents=True, exist_ok=True)
    with locked(out / _LOCK, wait=False) as held:
        if not held:
            raise UserError(f"another prepare is writing to out={out}; let it end first")
        _check_same(out, read_marker(out / _MARKER), settings)  # another may have started it
        write_marker(out / _MARKER, settings)
        # Holding the lock, a partial video is a leftover of a prepare that was stopped.
        shutil.rmtree(out / _PARTIAL, ignore_errors=True)
        yield


def _check_same(out: Path, marker: dict | None, settings: dict) -> None:
    if marker is None or marker == settings:
        return
    changed = [
        "another split of the videos (other videos, split.* or split.manifest)"
        if key == "split"
        else f"{key}={marker.get(key)} there, {value} now"
        for key, value in settings.items()
        if marker.get(key) != value
    ]
    raise UserError(
        f"out={out} holds another dataset: {'; '.join(changed)}. Choose another out folder, "
        "or delete this one to prepare it again"
    )


def count_frames(folder: Path) -> int:
    with os.scandir(folder) as entries:
        return sum(1 for e in entries if e.name.endswith(".jpg"))


# ---------------------------------------------------------------------------------------------
# The work: one video per task, over processes.


def prepare_video(task: Task) -> tuple[int, str | None]:
    """Decode one video into its frame folder: (frames written, None), or (0, why not)."""
    shutil.rmtree(task.partial, ignore_errors=True)
    task.partial.mkdir(parents=True)
    try:
        count = 0
        with VideoReader(task.source, task.image_size, task.fps, task.threads) as video:
            for count, frame in enumerate(video, start=1):
                path = task.partial / f"frame_{count:04d}.jpg"
                Image.fromarray(frame.image).save(path, quality=task.quality)
    except UserError as err:
        shutil.rmtree(task.partial, ignore_errors=True)
        return 0, first_line(err)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(
                f"no space left to write {task.partial.parent}: {err.strerror}"
            ) from None
        raise
    task.final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(task.partial, task.final)
    return count, None


def run_tasks(
    tasks: list[Task], workers: int, show_progress: bool
) -> tuple[dict[Path, int], list[tuple[Path, str]]]:
    """Prepare every video: (frames written per final folder, [(video, why it failed)])."""
    workers = max(1, min(workers, len(tasks)))
    # One process per core decodes best single-threaded; alone, FFmpeg's threads help.
    tasks = [task._replace(threads=1 if workers > 1 else 0) for task in tasks]
    # The longest videos first (file size as the proxy) balance the processes.
    tasks.sort(key=lambda task: -task.source.stat().st_size)
    written: dict[Path, int] = {}
    failures: list[tuple[Path, str]] = []
    bar = tqdm(total=len(tasks), unit="video", disable=not show_progress, desc="prepare")
    with bar:
        for done, (task, (count, error)) in enumerate(_results(tasks, workers), start=1):
            if error:
                tqdm.write(f"skipped {task.source}: {error}", file=sys.stderr)
                failures.append((task.source, error))
            else:
                written[task.final] = count
            bar.update()
            # Without a bar (a log, a notebook), a line every tenth of the work.
            if not show_progress and done * 10 // len(tasks) > (done - 1) * 10 // len(tasks):
                log.info("%d/%d videos done", done, len(tasks))
    failures.sort()
    return written, failures


def _results(tasks: list[Task], workers: int) -> Iterator[tuple[Task, tuple[int, str | None]]]:
    if workers == 1:
        for task in tasks:
            yield task, prepare_video(task)
        return
    # fork on Linux: workers only run PyAV and Pillow, and unlike spawn it does not import the
    # caller's main module again.
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = {pool.submit(prepare_video, task): task for task in tasks}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise


def summary(written, seconds, frames, refs, assigned, out: Path) -> str:
    """What this run made, and what `out` now holds per split."""
    made = sum(written.values())
    rate = f", {made / seconds:.0f} frames/s" if made and seconds > 0 else ""
    per_split = {split: 0 for split in SPLITS}
    for ref, split in zip(refs, assigned, strict=True):
        per_split[split] += frames.get(ref.key, 0)
    held = ", ".join(f"{split} {n}" for split, n in per_split.items())
    return (
        f"prepared {len(written)} video(s), {made} frames in {seconds:.1f} s{rate}\n"
        f"{out} holds frames: {held}; the split is in {out / MANIFEST}"
    )
