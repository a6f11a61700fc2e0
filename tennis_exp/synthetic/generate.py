"""The twin written as frame folders, `<out>/{train,val,test}/<action>/<video>/frame_%04d.jpg`:
every planned video rendered and saved, over processes when there are many frames."""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

from tennis_exp.config import IDLE_ACTION, usable_cpus
from tennis_exp.synthetic.clip import render_clip, render_idle
from tennis_exp.synthetic.plan import plan

# Below this many frames a process pool costs more than it saves.
POOL_MIN_FRAMES = 4000


def generate(
    out: Path,
    preset: str,
    seed: int,
    image_size: int,
    sport: str,
    background: bool = False,
    idle_only: bool = False,
) -> None:
    """Render every video of the preset's plan (with idle clips: `background`) into `out`; with
    `idle_only`, the idle clips alone (the same bytes: each keeps its place in the plan)."""
    tasks = []
    for split_index, (split, videos) in enumerate(plan(preset, sport, background).items()):
        for index, video in enumerate(videos):
            if idle_only and video.action != IDLE_ACTION:
                continue
            (out / split / video.action).mkdir(parents=True, exist_ok=True)
            tasks.append((out / split, split_index, index, video, seed, image_size, sport))
    # Longest first balances the pool; each video has its own RNG, so order does not matter.
    tasks.sort(key=lambda task: -task[3].length)
    # Frames are small files: beyond a few processes the disk, not the CPU, is the limit.
    workers = min(usable_cpus(), 8)
    if workers > 1 and sum(task[3].length for task in tasks) >= POOL_MIN_FRAMES:
        # fork on Linux: workers only run numpy and PIL, and unlike spawn it does not re-run the
        # caller's main script, which breaks scripts without an `if __name__ == "__main__"`.
        context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            list(pool.map(write_video, tasks, chunksize=4))
    else:
        for task in tasks:
            write_video(task)


def write_video(task: tuple) -> None:
    """One task of `generate`: (split folder, split index, index in the split, Video, seed,
    image size, sport)."""
    split_dir, split_index, index, video, seed, image_size, sport = task
    render = render_idle if video.action == IDLE_ACTION else render_clip
    frames = render(video, split_index, index, seed, image_size, sport)
    folder = split_dir / video.action / video.name
    folder.mkdir()
    for t, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(folder / f"frame_{t:04d}.jpg", quality=90)
