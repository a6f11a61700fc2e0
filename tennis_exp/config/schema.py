"""Config schema: every key a user can type, its type and its allowed values.

The dataclasses are registered in Hydra's ConfigStore and form the base of
``conf/config.yaml``, so a wrong type, an unknown key or an invalid enum value
fails while the config is composed. Ranges are checked by :func:`validate`
before any work starts.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from tennis_exp.errors import UserError

EVENTS = ["Smash", "Net Play", "Rally", "Serve"]

# THETIS action folders and the event each one belongs to (the users' mapping): what the
# synthetic twin and prepare write; conf/data/thetis.yaml gives the trainer the same mapping.
THETIS_ACTIONS = {
    "smash": "Smash",
    "forehand_volley": "Net Play",
    "backhand_volley": "Net Play",
    "forehand_flat": "Rally",
    "forehand_openstands": "Rally",
    "backhand": "Rally",
    "forehand_slice": "Rally",
    "backhand_slice": "Rally",
    "flat_service": "Serve",
}
THETIS_EXCLUDED = ["backhand2hands", "kick_service", "slice_service"]
# The users' badminton stroke folders (ShuttleSet) and their events: what the synthetic
# badminton twin writes; conf/data/badminton.yaml gives the trainer the same mapping.
BADMINTON_ACTIONS = {
    **dict.fromkeys(["smash", "wrist_smash"], "Smash"),
    **dict.fromkeys(
        ["netplay", "net_shot", "return_net", "rush", "push", "cross_court_net_shot"], "Net Play"
    ),
    **dict.fromkeys(
        [
            "rally",
            "clear",
            "lob",
            "defensive_return_lob",
            "drive",
            "driven_flight",
            "back_court_drive",
            "defensive_return_drive",
            "drop",
            "passive_drop",
        ],
        "Rally",
    ),
    **dict.fromkeys(["serve", "short_service", "long_service"], "Serve"),
}


class Strategy(Enum):
    dp = "dp"  # torch.nn.DataParallel: one process, the batch split across devices
    ddp = "ddp"  # DistributedDataParallel: one process per device


class BatchScaling(Enum):
    per_device = "per_device"  # training.batch_size is per device (the guide's rule)
    constant = "constant"  # training.batch_size is the effective batch


class LrScaling(Enum):
    none = "none"
    linear = "linear"
    sqrt = "sqrt"


class Accelerator(Enum):
    cuda = "cuda"
    cpu = "cpu"


class Precision(Enum):
    auto = "auto"  # bf16 on a CUDA GPU that supports it, else fp32
    fp32 = "fp32"
    fp16 = "fp16"  # autocast with a gradient scaler; CUDA only
    bf16 = "bf16"  # autocast, no scaler needed: bf16 has fp32's exponent range


class Backbone(Enum):
    small_cnn = "small_cnn"
    resnet18 = "resnet18"
    resnet50 = "resnet50"


class Augment(Enum):
    none = "none"
    flip_jitter = "flip_jitter"  # horizontal flip and colour jitter, as the old script had


class AugmentPer(Enum):
    window = "window"  # one draw for all frames of a window: the motion stays coherent
    frame = "frame"  # a draw per frame (the old script: a window could flip back and forth)


class SyntheticPreset(Enum):
    full = "full"  # exactly the real split's window counts: 7775 / 882 / 952
    small = "small"  # the CPU default
    tiny = "tiny"  # tests and smoke runs

    def __str__(self) -> str:  # as data.root interpolates it: data/synthetic-small
        return self.value


class Sport(Enum):
    tennis = "tennis"  # THETIS's action folders, a ball, tennis courts
    badminton = "badminton"  # the users' stroke folders, a shuttle, badminton halls

    def __str__(self) -> str:
        return self.value


@dataclass
class SyntheticConfig:
    # Generate the synthetic twin into data.root (once per settings); the other keys then apply.
    generate: bool = False
    preset: SyntheticPreset = SyntheticPreset.small
    seed: int = 0
    sport: Sport = Sport.tennis


@dataclass
class AugmentConfig:
    """Training augmentation, applied to each batch on its device."""

    kind: Augment = Augment.none
    per: AugmentPer = AugmentPer.window
    flip_p: float = 0.5
    # ColorJitter's: factors drawn uniformly from [1 - x, 1 + x].
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2


@dataclass
class DataConfig:
    root: str = MISSING
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    image_size: int = 64
    window: int = 16
    train_stride: int = 8
    eval_stride: int = 16
    events: list[str] = field(default_factory=lambda: list(EVENTS))
    # Action folder -> event (conf/data/<dataset>.yaml gives each dataset's); folders in
    # `excluded` are skipped, and so, with a warning, are folders in neither.
    actions: dict[str, str] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    # Decoded frames are kept in a uint8 file per split, rebuilt when the source changes.
    frame_cache: bool = True
    cache_dir: str = ".cache/frames"
    # auto | true | false: hold the frame cache (or a frozen backbone's features) in device
    # memory and gather windows there, skipping the host loader. auto: on a GPU where it fits
    # with the margin of data/device_cache.py; true: also on the CPU.
    device_cache: Any = "auto"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Ablation: permute the frames of every window, which destroys temporal order.
    shuffle_frames: bool = False
    # Use only the first N videos (sorted by name) of every action folder: a quick look at
    # any dataset (debug=smoke); null uses them all.
    max_videos_per_action: int | None = None
    # The share of the training split's videos used, drawn per video within each event and
    # reproducible from `seed`: how much target data a transfer needs.
    train_fraction: float = 1.0


@dataclass
class ModelConfig:
    backbone: Backbone = Backbone.small_cnn
    # torchvision ImageNet weights: from `weights_path` if given, else downloaded when `pretrained`.
    pretrained: bool = False
    weights_path: str | None = None
    freeze_backbone: bool = False
    # auto | true | false: a frozen backbone's per-frame features are computed once and stored
    # under `feature_cache_dir`, keyed by the frames, the backbone's weights and the precision.
    # auto: unless something changes them between epochs (feature_cache_blocker), which true
    # refuses.
    feature_cache: Any = "auto"
    feature_cache_dir: str = ".cache/features"
    # A frozen backbone's BatchNorm keeps its statistics (ours); false updates them in train
    # mode, as the old script did (the feature cache is then off).
    freeze_bn_stats: bool = True
    lstm_hidden: int = 128
    lstm_layers: int = 2
    dropout: float = 0.3
    # Dropout between LSTM layers and in the head; null: model.dropout. The old script had
    # none between its LSTM layers and 0.5 in the head whatever its config said.
    lstm_dropout: float | None = None
    head_dropout: float | None = None
    head_hidden: int = 128
    # Start from a checkpoint (ours or the old script's best_model.pth).
    init_from: str | None = None
    # Staged unfreezing: a frozen backbone trains from this epoch on (no feature cache).
    unfreeze_at_epoch: int | None = None


@dataclass
class HardwareConfig:
    name: str = "gpu1"
    accelerator: Accelerator = Accelerator.cuda
    devices: int = 1
    # CUDA ids to use, one per device; null: 0 .. devices-1. Each job of a parallel sweep
    # (hydra/launcher=parallel) is given free ones.
    device_ids: list[int] | None = None
    strategy: Strategy = Strategy.dp
    batch_scaling: BatchScaling = BatchScaling.per_device
    lr_scaling: LrScaling = LrScaling.linear
    precision: Precision = Precision.auto


@dataclass
class TrainingConfig:
    batch_size: int = 32
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    epochs: int = 20
    num_workers: int = 2
    # Batches each worker keeps ready (PyTorch's default is 2). 4 kept 8 workers at 224 px on
    # an H200 machine 26% faster; each batch held costs its size in shared memory.
    prefetch_factor: int = 4
    # Linear warmup length, used only when the LR was scaled up.
    warmup_epochs: int = 1
    lr_patience: int = 3
    lr_factor: float = 0.5
    # The backbone's LR as a multiple of the head's (fine-tuning a pretrained backbone gently).
    backbone_lr_factor: float = 1.0
    # Cross-entropy class weights: none, balanced (n / (k * count_c) over the training split,
    # as the users' transfer runs had) or one weight per event, in data.events order.
    class_weights: Any = "none"
    grad_clip: float | None = 1.0
    # torch.compile the model (one device or DDP; not DataParallel).
    compile: bool = False
    # Cap on batches per epoch and per evaluation (smoke runs); null means all.
    max_batches: int | None = None


@dataclass
class TrackingConfig:
    # null: $MLFLOW_TRACKING_URI if set, else a SQLite store in the launch directory.
    uri: str | None = None
    log_checkpoint: bool = True
    # CPU, memory, per-GPU utilisation and memory as `system/` metrics; null: on for GPU runs.
    system_metrics: bool | None = None
    # When the store stops answering (a server gone, a locked SQLite file), training goes on
    # and logging is retried for up to this many seconds; what is still unsent then is lost
    # and named at the run's end.
    retry_s: float = 300.0


@dataclass
class Config:
    experiment_name: str = "tennis_4event"
    seed: int = 42
    # Print the device and scaling plan, train nothing.
    dry_run: bool = False
    # null: a progress bar on a terminal, plain log lines otherwise.
    progress_bar: bool | None = None
    # Continue an interrupted run: its output directory or a checkpoint (last.pth).
    resume: str | None = None
    # The checkpoint a transfer preset starts from (experiment=badminton_frozen, ...: their
    # model.init_from follows it); a sweep over presets passes it once for all of them.
    transfer_from: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


class Split(Enum):
    train = "train"
    val = "val"
    test = "test"


@dataclass
class EvaluateConfig(Config):
    """`python -m tennis_exp.evaluate`: the run's config, and what to score with what."""

    # Ours (best.pth, last.pth) or the old script's best_model.pth, with or without `module.`.
    checkpoint: str = MISSING
    split: Split = Split.test
    # A folder in the layout of one split (<folder>/<action>/<video>/frame_%04d.jpg), scored
    # instead of the split.
    folder: str | None = None


def _follows_transfer_from(cfg: DictConfig) -> bool:
    return OmegaConf.to_container(cfg.model)["init_from"] == "${transfer_from}"


def _validate_class_weights(weights: Any, events: list[str]) -> None:
    if weights in ("none", "balanced"):
        return
    valid = "none, balanced, or one weight > 0 per event"
    if not OmegaConf.is_list(weights) and not isinstance(weights, list | tuple):
        raise UserError(f"training.class_weights={weights} is invalid: use {valid}")
    if len(weights) != len(events):
        raise UserError(
            f"training.class_weights has {len(weights)} weight(s) but data.events has "
            f"{len(events)} ({', '.join(events)}): give one weight per event, in that order"
        )
    if not all(isinstance(w, int | float) and not isinstance(w, bool) and w > 0 for w in weights):
        raise UserError(f"training.class_weights={list(weights)} is invalid: use {valid}")


def feature_cache_blocker(cfg: DictConfig) -> tuple[str, str] | None:
    """What stops a frozen backbone's features being computed once from the stored frames, as
    (the key and what it does, another way out); None when nothing does."""
    model, data = cfg.model, cfg.data
    if model.unfreeze_at_epoch is not None:
        return f"model.unfreeze_at_epoch={model.unfreeze_at_epoch} trains the backbone", ""
    if not data.frame_cache:
        return "data.frame_cache=false stores no frames", ", or data.frame_cache=true"
    if not model.freeze_bn_stats:
        return "model.freeze_bn_stats=false updates its BatchNorm statistics every step", ""
    if data.augment.kind is not Augment.none:
        return (
            f"data.augment.kind={data.augment.kind.value} changes the frames every step",
            ", or data.augment.kind=none",
        )
    return None


def uses_feature_cache(cfg: DictConfig) -> bool:
    """Whether the run trains its head on a frozen backbone's cached features."""
    model = cfg.model
    if not model.freeze_backbone or model.feature_cache is False:
        return False
    return feature_cache_blocker(cfg) is None


def _validate_feature_cache(cfg: DictConfig) -> None:
    if cfg.model.feature_cache not in ("auto", True, False):
        raise UserError(
            f"model.feature_cache={cfg.model.feature_cache} is invalid: use auto, true or false"
        )
    asked = cfg.model.freeze_backbone and cfg.model.feature_cache is True
    if asked and (blocker := feature_cache_blocker(cfg)):
        why, other = blocker
        raise UserError(
            "model.feature_cache=true computes the frozen backbone's features once, but "
            f"{why}: set model.feature_cache=auto (the backbone every step){other}"
        )


def register_configs() -> None:
    ConfigStore.instance().store(name="tennis_exp_schema", node=Config)
    ConfigStore.instance().store(name="tennis_exp_evaluate_schema", node=EvaluateConfig)
    # ${pid:} in output paths: processes started in the same microsecond still differ.
    # Cached like Hydra's ${now:}: every submitit task then resolves the sweep dir to the one
    # the sweep process chose, instead of a directory of its own.
    OmegaConf.register_new_resolver("pid", os.getpid, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("parallel_jobs", _parallel_jobs, replace=True)
    ConfigStore.instance().store(name="tennis_exp_prepare_schema", node=PrepareConfig)
    ConfigStore.instance().store(name="tennis_exp_predict_schema", node=PredictConfig)


def _parallel_jobs(accelerator: Any, devices: int) -> int:
    """hydra/launcher=parallel's default n_jobs: as many jobs as the visible GPUs hold, at
    least one (a job that cannot be placed then says why); on the CPU, one per usable core."""
    visible = 0
    if Accelerator(getattr(accelerator, "value", accelerator)) is Accelerator.cuda:
        import torch  # only when a parallel sweep's config is resolved

        visible = torch.cuda.device_count()
    if visible == 0:  # the CPU, or a GPU profile falling back to it
        return usable_cpus()
    return max(1, visible // max(devices, 1))


def usable_cpus() -> int:
    """The cores this process may run on (a cluster job's share, not the machine's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def shows_progress_bar(setting: bool | None) -> bool:
    """`progress_bar`: as set, or (null) whether stderr is a terminal."""
    return sys.stderr.isatty() if setting is None else setting


def from_container(container: dict) -> DictConfig:
    """A resolved config saved as plain data (a checkpoint's, a spawned worker's), re-typed."""
    return OmegaConf.merge(OmegaConf.structured(Config), container)


# (key, smallest valid value); checked after composition because OmegaConf checks types only.
_MINIMUMS: list[tuple[str, Any]] = [
    ("training.batch_size", 1),
    ("training.epochs", 1),
    ("training.num_workers", 0),
    ("training.prefetch_factor", 1),
    ("training.warmup_epochs", 0),
    ("training.max_batches", 1),
    ("hardware.devices", 1),
    ("data.image_size", 16),
    ("data.window", 1),
    ("data.train_stride", 1),
    ("data.eval_stride", 1),
    ("data.max_videos_per_action", 1),
    ("model.unfreeze_at_epoch", 2),
    ("model.lstm_hidden", 1),
    ("model.lstm_layers", 1),
]
_POSITIVE: list[str] = ["training.learning_rate", "training.backbone_lr_factor", "tracking.retry_s"]
_FRACTIONS: list[str] = [
    "model.dropout",
    "model.lstm_dropout",
    "model.head_dropout",
    "training.lr_factor",
    "data.augment.flip_p",
    "data.augment.brightness",
    "data.augment.contrast",
    "data.augment.saturation",
]


def validate(cfg: DictConfig) -> None:
    """Raise UserError naming the first key whose value is missing or out of range, or that
    does not go with another."""
    if OmegaConf.is_missing(cfg.data, "root"):
        raise UserError("data.root is not set: pass data.root=<folder holding train/ val/ test/>")
    _validate_ranges(cfg)
    _validate_class_weights(cfg.training.class_weights, list(cfg.data.events))
    _validate_mapping(cfg.data)
    _validate_combinations(cfg)
    _validate_feature_cache(cfg)


def _validate_ranges(cfg: DictConfig) -> None:
    def get(key: str) -> Any:
        return OmegaConf.select(cfg, key)

    for key, low in _MINIMUMS:
        value = get(key)
        if value is not None and value < low:
            raise UserError(f"{key}={value} is invalid: it must be an integer >= {low}")
    for key in _POSITIVE:
        if not get(key) > 0:
            raise UserError(f"{key}={get(key)} is invalid: it must be > 0")
    for key in _FRACTIONS:
        if get(key) is not None and not 0 <= get(key) < 1:
            raise UserError(f"{key}={get(key)} is invalid: it must be in [0, 1)")
    if not 0 < cfg.data.train_fraction <= 1:
        raise UserError(
            f"data.train_fraction={cfg.data.train_fraction} is invalid: it must be in (0, 1]"
        )
    if cfg.data.device_cache not in ("auto", True, False):
        raise UserError(
            f"data.device_cache={cfg.data.device_cache} is invalid: use auto, true or false"
        )


def _validate_mapping(data: DictConfig) -> None:
    if not data.actions:
        raise UserError(
            "data.actions is empty: map the action folders to events, as conf/data/thetis.yaml "
            "and conf/data/badminton.yaml do (data=thetis, data=badminton)"
        )
    unknown = sorted(set(data.actions.values()) - set(data.events))
    if unknown:
        raise UserError(
            f"data.actions maps to unknown event(s) {unknown}; valid events: {list(data.events)}"
        )


def _validate_combinations(cfg: DictConfig) -> None:
    if _follows_transfer_from(cfg) and cfg.transfer_from is None:
        raise UserError(
            "this transfer preset starts from another model: pass transfer_from=<its checkpoint> "
            "(the tennis run's best.pth)"
        )
    if cfg.model.unfreeze_at_epoch is not None and not cfg.model.freeze_backbone:
        raise UserError(
            f"model.unfreeze_at_epoch={cfg.model.unfreeze_at_epoch} unfreezes a frozen backbone: "
            "set model.freeze_backbone=true, or model.unfreeze_at_epoch=null"
        )
    if cfg.data.device_cache is True and not cfg.data.frame_cache:
        raise UserError(
            "data.device_cache=true holds the frame cache on the device: set "
            "data.frame_cache=true, or data.device_cache=auto"
        )
    hw = cfg.hardware
    if cfg.training.compile and hw.strategy is Strategy.dp and hw.devices > 1:
        raise UserError(
            f"training.compile=true does not work under DataParallel (hardware.devices="
            f"{hw.devices}, hardware.strategy=dp): use hardware.strategy=ddp, or "
            "training.compile=false"
        )


# ---------------------------------------------------------------------------------------------
# `python -m tennis_exp.prepare`: videos to the frames layout (conf/prepare.yaml).


@dataclass
class SplitConfig:
    # Fractions of every action's videos; they must sum to 1.
    train: float = 0.70
    val: float = 0.15
    test: float = 0.15
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
    image_size: int = 224  # frames are image_size x image_size, as the users' frames
    quality: int = 90  # JPEG quality, 1-95
    # At most this many frames per second (dropping frames); null keeps every frame.
    fps: float | None = None
    # Processes decoding videos; null: one per usable core.
    workers: int | None = None
    # null: a progress bar on a terminal, none otherwise.
    progress_bar: bool | None = None
    split: SplitConfig = field(default_factory=SplitConfig)


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


# ---------------------------------------------------------------------------------------------
# `python -m tennis_exp.predict`: events over time in whole videos (conf/predict.yaml).


@dataclass
class PredictOptions:
    # Frames between the first frames of consecutive windows, at the decoded rate; at most
    # data.window, so every frame is in a window.
    stride: int = 8
    # Decode at most this many frames per second: 30 is THETIS's rate, so a window spans the
    # time it did in training; a source at or below it keeps every frame. null: every frame.
    fps: float | None = 30.0
    # Frames through the backbone per step and device (each frame's features are computed once,
    # whatever the stride).
    batch: int = 64
    # Seconds: the width of the centred moving average over the windows' probabilities; 0: none.
    smoothing: float = 1.0
    # A window whose best smoothed probability is below this speaks for no event (idle play: the
    # model has no class for it).
    min_confidence: float = 0.5
    # Seconds: shorter gaps between two segments of one event are closed, then shorter segments
    # are dropped.
    min_duration: float = 1.0
    # Also write a copy of each video with the event written on its frames.
    render: bool = False


@dataclass
class PredictConfig(Config):
    """`python -m tennis_exp.predict`: the run's config, the model and the videos to read."""

    # Ours (best.pth, last.pth) or the old script's best_model.pth.
    checkpoint: str = MISSING
    # A video file, or a folder of them (.avi, .mp4, .mov, .mkv; not searched recursively).
    video: str = MISSING
    # Ground-truth segments to score against: a segments .csv / .json file for one video, or a
    # folder holding <video name>.segments.csv (or .json) for each video.
    truth: str | None = None
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
        ("min_confidence", p.min_confidence, 0 <= p.min_confidence <= 1, "in [0, 1]"),
        ("min_duration", p.min_duration, p.min_duration >= 0, ">= 0 (seconds)"),
    ]
    for key, value, valid, rule in checks:
        if not valid:
            raise UserError(f"predict.{key}={value} is invalid: it must be {rule}")
