"""Issue 12's benchmark: `python -m bench.prepare` (make bench-prepare).

Frames per second of `prepare` (decode, resize to 224 px, JPEG quality 90, one folder per video
renamed into place, the manifest) against a bare PyAV loop that decodes every frame of the same
videos to an RGB array and keeps nothing, each with one process and with one per usable core.
Medians over interleaved repeats; prepare runs in this process through the function the command
calls, into a new folder each time, so the interpreter's start (about a second) is not counted.

The videos are THETIS-like: synthetic clips (tennis_exp/synthetic/videos.py) at 640x480,
30 fps, MPEG-4 Part 2 in AVI, as THETIS's RGB videos, of the `full` preset's lengths (56-120
frames). They are kept in --data-dir between runs. Prints a markdown table (machine, software,
load) and writes it to bench/results/<timestamp>-prepare.md.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import av
import numpy as np
from hydra import compose, initialize_config_dir
from PIL import Image

from bench.results import add_dirs, load, machine, publish
from tennis_exp.config import register_configs, usable_cpus
from tennis_exp.data.prepare import prepare
from tennis_exp.synthetic.clip import render_clip
from tennis_exp.synthetic.videos import raw_videos, write_video

HERE = Path(__file__).resolve().parent
CONF = HERE.parent / "conf"
WIDTH, HEIGHT, FPS = 640, 480, 30  # THETIS's RGB videos


def ensure_videos(folder: Path, count: int) -> list[Path]:
    """The first `count` videos of the full preset, rendered at 160 px and scaled to 640x480
    (rendering at full size would take longer than the benchmark)."""
    raws = list(raw_videos("full", players=10))[:count]
    paths = []
    for raw in raws:
        path = folder / raw.video.action / f"{raw.name}.avi"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            small = render_clip(raw.video, raw.split_index, raw.index, seed=0, image_size=160)
            frames = np.stack(
                [
                    np.asarray(Image.fromarray(f).resize((WIDTH, HEIGHT), Image.BILINEAR))
                    for f in small
                ]
            )
            write_video(path, frames, fps=FPS)
        paths.append(path)
    return paths


def bare_decode(path: Path) -> int:
    """What a bare loop does: every frame decoded to an RGB array, nothing kept."""
    frames = 0
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frame.to_ndarray(format="rgb24")
            frames += 1
    return frames


def bare(paths: list[Path], workers: int) -> float:
    """frames/s of the bare loop over all videos."""
    started = time.perf_counter()
    if workers == 1:
        frames = sum(map(bare_decode, paths))
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            frames = sum(pool.imap_unordered(bare_decode, sorted(paths, key=_largest_first)))
    return frames / (time.perf_counter() - started)


def _largest_first(path: Path) -> int:
    return -path.stat().st_size


def prepared(videos: Path, work: Path, workers: int) -> float:
    """frames/s of prepare into a new folder: listing, split, decoding, manifest."""
    out = work / f"out-{time.monotonic_ns()}"
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(
            "prepare",
            # All in train: a few videos are too few players to split, and speed is the same.
            [
                f"videos={videos}",
                f"out={out}",
                f"workers={workers}",
                "progress_bar=false",
                "split.train=1",
                "split.val=0",
                "split.test=0",
            ],
        )
    started = time.perf_counter()
    prepare(cfg)
    seconds = time.perf_counter() - started
    frames = sum(1 for _ in out.glob("*/*/*/frame_*.jpg"))
    shutil.rmtree(out)
    return frames / seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 videos, one repeat")
    add_dirs(parser, "bench-prepare", "the videos")
    args = parser.parse_args(argv)
    count, repeats = (8, 1) if args.quick else (24, 3)
    cores = usable_cpus()
    register_configs()
    videos = args.data_dir.resolve() / "VIDEO_RGB"
    print(f"[bench] {count} videos into {videos}", flush=True)
    paths = ensure_videos(videos, count)
    frames = sum(map(bare_decode, paths))  # also brings the files into the page cache

    started_at, load_before, clock = datetime.now().astimezone(), load(), time.perf_counter()
    cases = {
        "bare PyAV decode loop, 1 process": lambda: bare(paths, 1),
        f"bare PyAV decode loop, {cores} processes": lambda: bare(paths, cores),
        "prepare, 1 process (`workers=1`)": lambda: prepared(videos, work, 1),
        f"prepare, {cores} processes (the default)": lambda: prepared(videos, work, cores),
    }
    rates: dict[str, list[float]] = {label: [] for label in cases}
    with tempfile.TemporaryDirectory(prefix="tennis-bench-prepare-") as tmp:
        work = Path(tmp)
        for repeat in range(repeats):
            for label, case in cases.items():
                print(f"[bench] repeat {repeat + 1}/{repeats}: {label}", flush=True)
                rates[label].append(case())
    rate = {label: statistics.median(values) for label, values in rates.items()}
    bare_1, bare_n, prep_1, prep_n = rate.values()
    rows = [(label, f"{value:.0f}", "frames/s") for label, value in rate.items()] + [
        ("prepare / bare loop, 1 process", f"{prep_1 / bare_1:.2f}", ""),
        (f"prepare / bare loop, {cores} processes", f"{prep_n / bare_n:.2f}", ""),
        (f"{cores} processes / 1, bare loop", f"{bare_n / bare_1:.2f}", ""),
        (f"{cores} processes / 1, prepare", f"{prep_n / prep_1:.2f}", ""),
    ]
    lines = [
        f"## prepare: videos to frames, {started_at:%Y-%m-%d %H:%M %Z}",
        "",
        *machine(),
        f"- videos: {count} synthetic THETIS-like clips, {WIDTH}x{HEIGHT} at {FPS} fps, MPEG-4 "
        f"in AVI, {frames} frames; prepare at its defaults (224 px, JPEG quality 90); median "
        f"of {repeats} interleaved repeat(s)",
        f"- load average (1 min): {load_before} at start, {load()} at end; "
        f"took {time.perf_counter() - clock:.0f} s",
        "",
        "| measurement | value | unit |",
        "|---|---:|---|",
        *(f"| {label} | {value} | {unit} |" for label, value, unit in rows),
    ]
    publish("\n".join(lines) + "\n", args.results_dir, f"{started_at:%Y%m%d-%H%M%S}-prepare.md")


if __name__ == "__main__":
    main()
