"""The schemas and checks of the commands other than training: `python -m tennis_exp.evaluate`
(conf/evaluate.yaml), `.predict` (conf/predict.yaml) and `.prepare` (conf/prepare.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from omegaconf import MISSING, DictConfig, OmegaConf

from tennis_exp.config.datasets import THETIS_ACTIONS, THETIS_EXCLUDED
from tennis_exp.config.schema import Config
from tennis_exp.errors import UserError


class Split(Enum):
    train = "train"
    val = "val"
    test = "test"


@dataclass
class EvaluateConfig(Config):
    """`python -m tennis_exp.evaluate`: the run's config, and what to score with what."""

    # Ours (best.pth, last.pth) or the old script's best_model.pth, with or without `module.`;
    # or a model in the MLflow store: models:/<name>@<alias>, models:/<name>/<version>,
    # runs:/<run id>/<path>.
    checkpoint: str = MISSING
    # The split of data.root to score.
    split: Split = Split.test
    # A folder in the layout of one split (<folder>/<action>/<video>/frame_%04d.jpg), scored
    # instead of the split.
    folder: str | None = None


@dataclass
class SplitConfig:
    # The share of every action's videos in train; train + val + test must be 1.
    train: float = 0.70
    # The share in val.
    val: float = 0.15
    # The share in test.
    test: float = 0.15
    # The seed of the split's draw.
    seed: int = 0
    # Keep a player's videos (names starting with p<N>_) in one split; false: split by video.
    by_player: bool = True
    # A manifest CSV of an earlier prepare (any machine's): its split, instead of the rule above.
    manifest: str | None = None


@dataclass
class PrepareConfig:
    # <videos>/<action>/<video>.{avi,mp4,mov,mkv}, as THETIS's VIDEO_RGB folder.
    videos: str = MISSING
    # Written: <out>/{train,val,test}/<action>/<video>/frame_%04d.jpg and <out>/manifest.csv.
    out: str = MISSING
    # Action folders to prepare (default: all of THETIS's, the excluded ones too, so a run can
    # still choose with data.excluded); other folders are skipped with a warning.
    actions: list[str] = field(default_factory=lambda: [*THETIS_ACTIONS, *THETIS_EXCLUDED])
    image_size: int = 224  # Frames are image_size x image_size, as the users' frames.
    quality: int = 90  # JPEG quality, 1-95.
    # At most this many frames per second (dropping frames); null keeps every frame.
    fps: float | None = None
    # Processes decoding videos; null: one per usable core.
    workers: int | None = None
    # null: a progress bar on a terminal, none otherwise.
    progress_bar: bool | None = None
    # How the videos are split into train, val and test.
    split: SplitConfig = field(default_factory=SplitConfig)
    # videos= holds labelled whole matches (<match>.avi, its truth <match>.segments.csv beside
    # it): each event segment and each stretch outside them (idle) becomes a clip folder, split
    # by match, what data=matches reads (tennis_exp/data/matches.py).
    matches: bool = False


def validate_prepare(cfg: DictConfig) -> None:
    """Raise UserError naming the first key of a prepare config that is missing or out of
    range."""
    for key, expected in [("videos", "<folder of action folders>"), ("out", "<new folder>")]:
        if OmegaConf.is_missing(cfg, key):
            raise UserError(f"{key} is not set: pass {key}={expected}")
    checks = [
        ("image_size", cfg.image_size, cfg.image_size >= 16, "an integer >= 16"),
        ("quality", cfg.quality, 1 <= cfg.quality <= 95, "an integer from 1 to 95"),
        ("fps", cfg.fps, cfg.fps is None or cfg.fps > 0, "> 0, or null for every frame"),
        ("workers", cfg.workers, cfg.workers is None or cfg.workers >= 1, "an integer >= 1"),
    ]
    ratios = [cfg.split.train, cfg.split.val, cfg.split.test]
    checks += [
        (f"split.{name}", value, 0 <= value <= 1, "in [0, 1]")
        for name, value in zip(["train", "val", "test"], ratios, strict=True)
    ]
    for key, value, valid, rule in checks:
        if not valid:
            raise UserError(f"{key}={value} is invalid: it must be {rule}")
    if abs(sum(ratios) - 1) > 1e-6:
        raise UserError(
            f"split.train + split.val + split.test = {sum(ratios):.6g} "
            f"({' + '.join(f'{r:g}' for r in ratios)}); the ratios must sum to 1"
        )


@dataclass
class PredictOptions:
    # Frames between the first frames of consecutive windows, at the decoded rate; at most
    # data.window, so every frame is in a window.
    stride: int = 8
    # Decode at most this many frames per second: THETIS's rate, so a window spans the time it
    # did in training; a source at or below it keeps every frame. null: every frame.
    fps: float | None = 30.0
    # Frames through the backbone per step and device (each frame's features are computed once,
    # whatever the stride).
    batch: int = 64
    # Seconds: the width of the centred moving average over the windows' probabilities; 0: none.
    smoothing: float = 1.0
    # A window whose best smoothed probability is below this speaks for no event. null: 0.5 for
    # a model without a background class (its only way to find idle play), none for a model with
    # one (data.background: no event is the model's own answer).
    min_confidence: float | None = None
    # Seconds: shorter gaps between two segments of one event are closed, then shorter segments
    # are dropped.
    min_duration: float = 1.0
    # Also write a copy of each video with the event written on its frames.
    render: bool = False


@dataclass
class PredictConfig(Config):
    """`python -m tennis_exp.predict`: the run's config, the model and the videos to read."""

    # Ours (best.pth, last.pth) or the old script's best_model.pth; or a model in the MLflow
    # store: models:/<name>@<alias>, models:/<name>/<version>, runs:/<run id>/<path>.
    checkpoint: str = MISSING
    # A video file, or a folder of them (.avi, .mp4, .mov, .mkv; not searched recursively).
    video: str = MISSING
    # Ground-truth segments to score against: a segments .csv / .json file for one video, or a
    # folder holding <video name>.segments.csv (or .json) for each video.
    truth: str | None = None
    # How the videos are read, and their windows' scores turned into segments.
    predict: PredictOptions = field(default_factory=PredictOptions)


def validate_predict(cfg: DictConfig) -> None:
    """Raise UserError naming the first predict key that is out of range."""
    p = cfg.predict
    window = cfg.data.window
    checks = [
        ("stride", p.stride, 1 <= p.stride <= window, f"an integer from 1 to data.window={window}"),
        ("fps", p.fps, p.fps is None or p.fps > 0, "> 0, or null for every frame"),
        ("batch", p.batch, p.batch >= 1, "an integer >= 1"),
        ("smoothing", p.smoothing, p.smoothing >= 0, ">= 0 (seconds; 0 for none)"),
        (
            "min_confidence",
            p.min_confidence,
            p.min_confidence is None or 0 <= p.min_confidence <= 1,
            "in [0, 1], or null",
        ),
        ("min_duration", p.min_duration, p.min_duration >= 0, ">= 0 (seconds)"),
    ]
    for key, value, valid, rule in checks:
        if not valid:
            raise UserError(f"predict.{key}={value} is invalid: it must be {rule}")
