"""Issue 15's benchmark: `python -m bench.predict` (make bench-predict).

The real-time factor of `predict` (seconds of video per wall-clock second) and its frames per
second, against a bare loop that only decodes the same video to the model's frame size through
the same reader: what is left to the model is the difference. Predict runs in this process
through the function the command calls, with the default `predict.*` keys, on a checkpoint of
the model with untrained weights (speed does not depend on them) and the config of the
default training run: the small CNN on 64 px frames, on the CPU (`--background`: with the
no-event class of data.background). `--gpu`: the users' baseline,
ResNet-50 and a 3-layer BiLSTM 512 on 224 px frames, `hardware=gpu1` (bf16 where supported).

The video is a THETIS-like synthetic match (tennis_exp/synthetic/match.py): 640x480, 30 fps,
MPEG-4 Part 2 in AVI, as THETIS's RGB videos, rendered at 160 px and enlarged. It is kept in
--data-dir between runs. The real-time factor counts decoding and inference (the progress
bar's); the command's whole time (model loading, MLflow run, timeline, files) is a row of its
own. On the CPU both are measured with torch's default threads and with one. Medians over
interleaved repeats. Prints a markdown table (machine, software, load) and writes it to
bench/results/<timestamp>-predict.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from bench.results import add_dirs, load, machine, publish
from tennis_exp.config import register_configs, with_background
from tennis_exp.data.video import VideoReader, VideoWriter
from tennis_exp.engine import checkpoint
from tennis_exp.inference.pipeline import predict_videos
from tennis_exp.models.cnn_lstm import build_model
from tennis_exp.synthetic.match import match_parts, render_parts

HERE = Path(__file__).resolve().parent
CONF = HERE.parent / "conf"
WIDTH, HEIGHT, FPS = 640, 480, 30  # THETIS's RGB videos
MODELS = {  # the training config's overrides, the profile predict runs on
    "cpu": (["model=small_cnn"], "hardware=cpu"),
    "gpu": (["model=resnet50", "model.pretrained=false", "data.image_size=224"], "hardware=gpu1"),
}


def ensure_video(path: Path, seconds: float) -> Path:
    """A synthetic match, rendered at 160 px and enlarged to 640x480 (THETIS's size)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = match_parts(seconds, np.random.default_rng(0), FPS)
    with VideoWriter(path, FPS, WIDTH, HEIGHT, "mpeg4", WIDTH * HEIGHT * FPS // 2) as out:
        for frames in render_parts(parts, match=0, seed=0, image_size=160):
            for frame in frames:
                out.write(np.asarray(Image.fromarray(frame).resize((WIDTH, HEIGHT))))
    return path


def untrained_checkpoint(path: Path, overrides: list[str]) -> Path:
    """A checkpoint of the configured model with its initial weights and its config."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides)
    with_background(cfg.data)  # as training's validate does
    model = build_model(cfg.model, len(cfg.data.events))
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    checkpoint.save(path, checkpoint.Checkpoint(model.state_dict(), config))
    return path


def bare_decode(video: Path, size: int) -> float:
    """frames/s of the reader alone, at the model's frame size and predict's default fps cap."""
    started = time.perf_counter()
    with VideoReader(video, size, fps_cap=30) as reader:
        frames = sum(1 for _ in reader)
    return frames / (time.perf_counter() - started)


def predicted(
    video: Path, ckpt: Path, hardware: str, work: Path, threads: int
) -> tuple[float, float, float]:
    """(real-time factor, frames/s, the command's seconds) of predict at its defaults, with
    `threads` CPU threads for torch."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(
            "predict",
            [f"checkpoint={ckpt}", f"video={video}", hardware, "progress_bar=false",
             f"tracking.uri=sqlite:///{work / 'mlflow.db'}"],
        )  # fmt: skip
    default = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        started = time.perf_counter()
        metrics = predict_videos(cfg, work / f"out-{time.monotonic_ns()}")
        seconds = time.perf_counter() - started
    finally:
        torch.set_num_threads(default)
    return metrics["speed/realtime_factor"], metrics["speed/frames_per_sec"], seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 20 s video, one repeat")
    parser.add_argument("--gpu", action="store_true", help="ResNet-50 at 224 px on GPU 0")
    parser.add_argument(
        "--background", action="store_true", help="a model with the no-event class (issue 25)"
    )
    add_dirs(parser, "bench-predict", "the video")
    args = parser.parse_args(argv)
    seconds, repeats = (20, 1) if args.quick else (120, 3)
    register_configs()
    overrides, hardware = MODELS["gpu" if args.gpu else "cpu"]
    overrides = [*overrides, *(["data.background=true"] if args.background else [])]
    size = 224 if args.gpu else 64
    video = ensure_video(args.data_dir.resolve() / f"match-{seconds}s.avi", seconds)
    with VideoReader(video) as reader:
        duration = reader.info.duration
    bare_decode(video, size)  # brings the file into the page cache

    started_at, load_before, clock = datetime.now().astimezone(), load(), time.perf_counter()
    threads = torch.get_num_threads()
    # On the CPU, also with one torch thread: on a shared machine, a second thread that waits
    # for a busy core can cost more than it brings.
    cases = {threads: []} if args.gpu else {threads: [], 1: []}
    decode = []
    with tempfile.TemporaryDirectory(prefix="tennis-bench-predict-") as tmp:
        work = Path(tmp)
        ckpt = untrained_checkpoint(work / "model.pth", overrides)
        for repeat in range(repeats):
            print(f"[bench] repeat {repeat + 1}/{repeats}", flush=True)
            decode.append(bare_decode(video, size))
            for count, runs in cases.items():
                runs.append(predicted(video, ckpt, hardware, work, count))
    bare = statistics.median(decode)
    device = torch.cuda.get_device_name(0) if args.gpu else "CPU"
    model = (
        "ResNet-50 + BiLSTM 512 x 3, 224 px" if args.gpu else "small CNN + BiLSTM 128 x 2, 64 px"
    ) + (", with the no-event class" if args.background else "")
    lines = [
        f"## predict: real-time factor, {started_at:%Y-%m-%d %H:%M %Z}",
        "",
        *machine(),
        f"- model: {model}; {hardware}, on {device}; torch threads: {threads} by default",
        f"- video: a synthetic match, {WIDTH}x{HEIGHT} at {FPS} fps, MPEG-4 in AVI, "
        f"{duration:.0f} s; predict at its defaults (fps cap 30, stride 8, batch 64); median "
        f"of {repeats} interleaved repeat(s)",
        f"- load average (1 min): {load_before} at start, {load()} at end; "
        f"took {time.perf_counter() - clock:.0f} s",
        "",
        "| measurement | frames/s | real-time factor |",
        "|---|---:|---:|",
        f"| bare decode loop to {size} px | {bare:.0f} | {bare / FPS:.1f}x |",
    ]
    for count, runs in cases.items():
        realtime, fps, command = (statistics.median(column) for column in zip(*runs, strict=True))
        lines += [
            f"| predict (decode, model, windows), {count} torch thread(s) | {fps:.0f} | "
            f"{realtime:.1f}x |",
            f"| the command's whole time ({duration:.0f} s of video), {count} thread(s) | | "
            f"{duration / command:.1f}x ({command:.1f} s) |",
        ]
    name = f"{started_at:%Y%m%d-%H%M%S}-predict{'-gpu' if args.gpu else ''}.md"
    publish("\n".join(lines) + "\n", args.results_dir, name)


if __name__ == "__main__":
    main()
