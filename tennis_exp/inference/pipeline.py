"""`python -m tennis_exp.predict`'s work: a trained model over whole videos, streamed, to event
segments, with their files, scores against a ground truth, and an MLflow run. Everything a
mistake can stop (the checkpoint, the videos, the truth) is checked before the run starts."""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from tennis_exp.config import BACKGROUND, metric_name, validate_predict
from tennis_exp.data.segments import (
    TRUTH_SUFFIXES,
    Segment,
    read_segments,
    truth_file,
    write_segments_csv,
    write_segments_json,
)
from tennis_exp.data.video import VIDEO_SUFFIXES, VideoReader, video_files
from tennis_exp.errors import UserError
from tennis_exp.inference.detection_metrics import Scores
from tennis_exp.inference.render import render
from tennis_exp.inference.runner import Predictor, Progress, WindowProbabilities
from tennis_exp.inference.segments import (
    min_confidence,
    smooth,
    smoothing_width,
    speaking_bounds,
    to_segments,
    window_labels,
)
from tennis_exp.inference.timeline import plot_timeline
from tennis_exp.inference.trained_model import (
    checkpoint_run,
    one_process_plan,
    trained_config,
    trained_model,
)

log = logging.getLogger(__name__)


@dataclass
class VideoResult:
    name: str
    windows: WindowProbabilities
    segments: list[Segment]
    fps: float  # the decoded rate
    files: list[Path]


def predict_videos(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    """Predict every video of `cfg.video`; return the speed, and the scores with a truth."""
    model, ckpt = trained_model(cfg)
    _frames_as_trained(cfg, ckpt)
    validate_predict(cfg)
    videos, truths = checked_inputs(cfg)
    plan = one_process_plan(cfg)
    predictor = Predictor(model, plan, cfg.data.window, cfg.predict.stride, cfg.predict.batch)
    name = f"predict-{Path(cfg.video).stem if len(videos) == 1 else Path(cfg.video).name}"
    with checkpoint_run(cfg, ckpt, "prediction", name) as run:
        run.log_params(_params(cfg, plan))
        results = []
        for video in videos:
            truth = truths[video.stem] if truths is not None else None
            results.append(predict_video(predictor, video, cfg, output_dir / video.stem, truth))
            for path in results[-1].files:
                run.log_artifact(path, video.stem)
        metrics = _speed(results)
        if truths is not None:
            metrics.update(write_scores(output_dir / "scores.json", results, truths, cfg))
            run.log_artifact(output_dir / "scores.json")
        run.log_metrics({k: v for k, v in metrics.items() if not np.isnan(v)}, step=0)
    return metrics


def checked_inputs(cfg: DictConfig) -> tuple[list[Path], dict[str, list[Segment]] | None]:
    """The videos, each checked to be readable and at least a window long, and their truth."""
    videos = list_videos(Path(cfg.video).expanduser())
    truths = read_truths(cfg.truth, videos, scored_events(cfg)) if cfg.truth else None
    for video in videos:
        probe(video, cfg)
    return videos, truths


def scored_events(cfg: DictConfig) -> list[str]:
    """The model's events a segment can be: its classes but the background."""
    return [event for event in cfg.data.events if event != BACKGROUND]


def background_index(events: list[str]) -> int | None:
    """The model's no-event class, if it has one."""
    return events.index(BACKGROUND) if BACKGROUND in events else None


def _frames_as_trained(cfg: DictConfig, ckpt) -> None:
    """The frame size and window the model was trained on, when the checkpoint says (ours);
    the old script's files use the command's data.image_size and data.window."""
    trained = trained_config(ckpt)
    if trained is not None:
        cfg.data.image_size, cfg.data.window = trained.data.image_size, trained.data.window
    source = "the checkpoint's config" if trained is not None else "data.image_size, data.window"
    log.info(
        "Model: %s, windows of %d frames of %d px (%s)",
        ckpt.path,
        cfg.data.window,
        cfg.data.image_size,
        source,
    )


def list_videos(path: Path) -> list[Path]:
    """`video=`: a file, or the videos of a folder (not its subfolders), sorted by name."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UserError(f"video={path} does not exist")
    videos = video_files(path)
    if not videos:
        raise UserError(f"video={path} holds no video ({', '.join(VIDEO_SUFFIXES)})")
    stems = [v.stem for v in videos]
    twins = sorted({s for s in stems if stems.count(s) > 1})
    if twins:  # each video's outputs are in a folder named after it
        raise UserError(f"video={path} holds several videos named {twins[0]}: rename all but one")
    return videos


def read_truths(truth: str, videos: list[Path], events: list[str]) -> dict[str, list[Segment]]:
    """Each video's true segments: `truth` is one video's file, or a folder holding
    <video name>.segments.csv (or .json) for each."""
    path = Path(truth).expanduser()
    if path.is_file():
        if len(videos) > 1:
            raise UserError(
                f"truth={path} is one video's segments but video= holds {len(videos)} videos: "
                f"pass a folder holding <video name>{TRUTH_SUFFIXES[0]} for each"
            )
        return {videos[0].stem: read_segments(path, events)}
    if not path.is_dir():
        raise UserError(f"truth={path} does not exist")
    found = {}
    for video in videos:
        file = truth_file(path, video)
        if file is None:
            raise UserError(
                f"truth={path} holds no {video.stem}{TRUTH_SUFFIXES[0]} (or .json) for {video.name}"
            )
        found[video.stem] = read_segments(file, events)
    return found


def probe(video: Path, cfg: DictConfig) -> None:
    """Refuse, before any run, a video that cannot be read or is shorter than one window."""
    window = cfg.data.window
    with VideoReader(video, cfg.data.image_size, cfg.predict.fps) as reader:
        next(iter(reader))  # a video that opens may still hold no frame it can decode
        count = reader.info.frame_count
        if count is not None:
            count = int(count * reader.output_fps / reader.info.fps)
        if count is not None and count < window:
            raise _short(video, count, reader.output_fps, window)


def _short(video: Path, frames: int, fps: float, window: int) -> UserError:
    return UserError(
        f"video {video} is shorter than one window: {frames} frame(s) at {fps:g} fps, "
        f"a window is {window} (data.window of the model)"
    )


def predict_video(
    predictor: Predictor, video: Path, cfg: DictConfig, out: Path, truth: list[Segment] | None
) -> VideoResult:
    """One video: windows, segments, files in `out` (the timeline shows `truth` if given)."""
    p = cfg.predict
    with VideoReader(video, cfg.data.image_size, p.fps) as reader:
        fps = reader.output_fps
        total = reader.info.frame_count and int(reader.info.frame_count * fps / reader.info.fps)
        progress = Progress(video.name, total, cfg.progress_bar)
        try:
            windows = predictor.run(reader, 1 / fps, progress)
        finally:
            progress.close()
    if len(windows.probabilities) == 0:
        raise _short(video, windows.frames, fps, cfg.data.window)
    events = list(cfg.data.events)
    background = background_index(events)
    threshold = min_confidence(p.min_confidence, background)
    smoothed = smooth(windows.probabilities, smoothing_width(p.smoothing, p.stride / fps))
    bounds = speaking_bounds(windows.centres, windows.duration)
    segments = to_segments(smoothed, bounds, events, threshold, p.min_duration, background)
    log.info(
        "%s: %d segment(s); %d frames (%.1f s of video) in %.1f s: %.0f frames/s, %.1fx real time",
        video.name,
        len(segments),
        windows.frames,
        windows.duration,
        windows.seconds,
        windows.frames_per_second,
        windows.realtime_factor,
    )
    out.mkdir(parents=True, exist_ok=True)
    files = [
        write_segments_csv(out / "segments.csv", segments),
        write_segments_json(out / "segments.json", segments, video.name, windows.duration),
        write_windows(out / "windows.csv", windows, smoothed, bounds, events, threshold),
    ]
    title = f"{video.name}: {len(segments)} segment(s)"
    files.append(
        plot_timeline(out / "timeline.png", title, events, bounds, windows.probabilities,
                      smoothed, segments, threshold, truth)
    )  # fmt: skip
    if p.render:
        files.append(render(video, out / f"{video.stem}.events.mp4", segments, events))
    return VideoResult(video.stem, windows, segments, fps, files)


def write_windows(path, windows, smoothed, bounds, events, min_confidence) -> Path:
    """Every window: its span, the stretch it speaks for, its raw and smoothed probabilities
    and the event it speaks for (empty: none)."""
    labels = window_labels(smoothed, min_confidence, background_index(events))
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["start", "end", "speaks_from", "speaks_to", *(f"p_{e}" for e in events),
             *(f"smoothed_{e}" for e in events), "event"]
        )  # fmt: skip
        for i, label in enumerate(labels):
            writer.writerow(
                [f"{windows.start[i]:.3f}", f"{windows.end[i]:.3f}", f"{bounds[i]:.3f}",
                 f"{bounds[i + 1]:.3f}", *(f"{v:.5f}" for v in windows.probabilities[i]),
                 *(f"{v:.5f}" for v in smoothed[i]), events[label] if label >= 0 else ""]
            )  # fmt: skip
    return path


def write_scores(
    path: Path, results: list[VideoResult], truths: dict[str, list[Segment]], cfg: DictConfig
) -> dict[str, float]:
    """The scores over all videos, and each video's, into `path`; return the former."""
    events = scored_events(cfg)
    pooled, per_video = Scores(events), {}
    for result in results:
        video = Scores(events)
        for scores in (pooled, video):
            scores.add(truths[result.name], result.segments, result.windows.duration, result.fps)
        per_video[result.name] = video.summary()
    summary = pooled.summary()
    path.write_text(json.dumps({"all": summary, "videos": per_video}, indent=2) + "\n")
    log.info("%s", score_table(summary, events, len(results)))
    return summary


def score_table(s: dict[str, float], events: list[str], videos: int) -> str:
    per_event = ", ".join(f"{e} {s[f'ap_1s_{metric_name(e)}']:.3f}" for e in events)
    return "\n".join(
        [
            f"Scores against the truth ({videos} video(s), {s['true_segments']} true segments, "
            f"{s['predicted_segments']} predicted):",
            f"  frame accuracy           {s['frame_acc']:.3f} (event frames only: "
            f"{s['frame_acc_events']:.3f}, no-event frames only: {s['frame_acc_no_event']:.3f})",
            f"  segment F1 at IoU 0.5    {s['segment_f1']:.3f} (precision "
            f"{s['segment_precision']:.3f}, recall {s['segment_recall']:.3f})",
            f"  mAP@1s                   {s['map_1s']:.3f} ({per_event})",
        ]
    )


def _speed(results: list[VideoResult]) -> dict[str, float]:
    frames = sum(r.windows.frames for r in results)
    video_seconds = sum(r.windows.duration for r in results)
    wall = sum(r.windows.seconds for r in results)
    return {
        "speed/frames_per_sec": frames / wall,
        "speed/realtime_factor": video_seconds / wall,
        "segments": sum(len(r.segments) for r in results),
    }


def _params(cfg: DictConfig, plan) -> dict[str, object]:
    predict = OmegaConf.to_container(cfg.predict)
    return {
        "checkpoint": cfg.checkpoint,
        "video": cfg.video,
        "truth": cfg.truth,
        "data.image_size": cfg.data.image_size,
        "data.window": cfg.data.window,
        **{f"predict.{k}": v for k, v in predict.items()},
        **{k: v for k, v in plan.params().items() if k.startswith("run.")},
    }
