"""The run's schema: every key a user can type, its type, its allowed values and its default.

Each default is written here once; a group file in conf/ only states what its option changes.
The comment above a field (or at its end) says what the key does: `--help` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

EVENTS = ["Smash", "Net Play", "Rally", "Serve"]
# The class data.background adds: a moment of no event (idle play, the time between points).
BACKGROUND = "No event"


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
    # How many videos the twin holds.
    preset: SyntheticPreset = SyntheticPreset.small
    # The twin's seed: the same seed and preset give the same frames.
    seed: int = 0
    # Which sport the twin draws.
    sport: Sport = Sport.tennis


@dataclass
class AugmentConfig:
    # What is applied. On by default: without it the small CNN trained from scratch overfits the
    # synthetic twin (docs/results.md).
    kind: Augment = Augment.flip_jitter
    # How often the augmentation is drawn.
    per: AugmentPer = AugmentPer.window
    # The probability of a horizontal flip.
    flip_p: float = 0.5
    # ColorJitter's brightness: a factor drawn uniformly from [1 - x, 1 + x].
    brightness: float = 0.2
    # ColorJitter's contrast, drawn as brightness is.
    contrast: float = 0.2
    # ColorJitter's saturation, drawn as brightness is.
    saturation: float = 0.2


@dataclass
class DataConfig:
    # <root>/{train,val,test}/<action>/<video>/frame_%04d.jpg; required unless a data option
    # generates it.
    root: str = MISSING
    # The synthetic twin of a dataset, generated into `root`.
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    # Frames are resized to image_size x image_size pixels.
    image_size: int = 64
    # Frames per window: the model scores one window at a time.
    window: int = 16
    # Frames between the first frames of consecutive training windows.
    train_stride: int = 8
    # Frames between the first frames of consecutive val and test windows.
    eval_stride: int = 16
    # The classes, in the order of the model's outputs.
    events: list[str] = field(default_factory=lambda: list(EVENTS))
    # Action folder -> event (conf/data/<dataset>.yaml gives each dataset's); folders in
    # `excluded` are skipped, and so, with a warning, are folders in neither.
    actions: dict[str, str] = field(default_factory=dict)
    # Action folders skipped on purpose.
    excluded: list[str] = field(default_factory=list)
    # Decoded frames are kept in a uint8 file per split, rebuilt when the source changes.
    frame_cache: bool = True
    # Where the frame cache files are kept.
    cache_dir: str = ".cache/frames"
    # auto | true | false: hold the frame cache (or a frozen backbone's features) in device
    # memory and gather windows there, skipping the host loader. auto: on a GPU where it fits
    # with the margin of data/device_cache.py; true: also on the CPU.
    device_cache: Any = "auto"
    # Training augmentation, applied to each batch on its device.
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Add the class "No event" after data.events, learned from the action folder `idle` (clips
    # of idle play: the synthetic twin renders them, prepare cuts them from labelled matches);
    # predict then takes no-event stretches from the model.
    background: bool = False
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
    # The per-frame CNN.
    backbone: Backbone = Backbone.small_cnn
    # torchvision ImageNet weights: from `weights_path` if given, else downloaded when `pretrained`.
    pretrained: bool = False
    # A torchvision state dict .pth of the backbone, for offline machines.
    weights_path: str | None = None
    # Train only the LSTM and the head; the backbone keeps its weights.
    freeze_backbone: bool = False
    # auto | true | false: a frozen backbone's per-frame features are computed once and stored
    # under `feature_cache_dir`, keyed by the frames, the backbone's weights and the precision.
    # auto: unless something changes them between epochs (feature_cache_blocker), which true
    # refuses.
    feature_cache: Any = "auto"
    # Where the feature cache files are kept.
    feature_cache_dir: str = ".cache/features"
    # A frozen backbone's BatchNorm keeps its statistics (ours); false updates them in train
    # mode, as the old script did (the feature cache is then off).
    freeze_bn_stats: bool = True
    # The hidden size of each direction of the bidirectional LSTM.
    lstm_hidden: int = 128
    # Stacked LSTM layers.
    lstm_layers: int = 2
    # The dropout between LSTM layers and in the head, unless one of the two below is given.
    dropout: float = 0.3
    # Dropout between LSTM layers; null: model.dropout. The old script had none there, whatever
    # its config said.
    lstm_dropout: float | None = None
    # Dropout in the head; null: model.dropout. The old script had 0.5, whatever its config said.
    head_dropout: float | None = None
    # The width of the head's hidden layer.
    head_hidden: int = 128
    # Start from a checkpoint (ours or the old script's best_model.pth), or a model in the
    # MLflow store: models:/<name>@<alias>, models:/<name>/<version>, runs:/<run id>/<path>.
    init_from: str | None = None
    # Staged unfreezing: a frozen backbone trains from this epoch on (no feature cache).
    unfreeze_at_epoch: int | None = None


@dataclass
class HardwareConfig:
    # The profile's name, in logs and run names.
    name: str = "gpu1"
    # cuda falls back to the CPU, with a warning, when no GPU is visible.
    accelerator: Accelerator = Accelerator.cuda
    # Devices the run uses.
    devices: int = 1
    # CUDA ids to use, one per device; null: 0 .. devices-1. Each job of a parallel sweep
    # (hydra/launcher=parallel) is given free ones.
    device_ids: list[int] | None = None
    # How a run uses several devices.
    strategy: Strategy = Strategy.dp
    # What training.batch_size means on several devices: per_device gives an effective batch
    # of training.batch_size x devices.
    batch_scaling: BatchScaling = BatchScaling.per_device
    # The LR follows the effective batch: lr x (effective / training.batch_size), or its
    # square root; none keeps training.learning_rate.
    lr_scaling: LrScaling = LrScaling.linear
    # The arithmetic of the forward and backward passes.
    precision: Precision = Precision.auto


@dataclass
class TrainingConfig:
    # Windows per batch (per device or in all: hardware.batch_scaling).
    batch_size: int = 32
    # Adam's learning rate for training.batch_size (hardware.lr_scaling scales it).
    learning_rate: float = 1e-4
    # Adam's weight decay.
    weight_decay: float = 0.0
    # Passes over the training split.
    epochs: int = 20
    # Loader worker processes (each DDP process its own); 0 loads in the training process.
    num_workers: int = 2
    # Batches each worker keeps ready (PyTorch's default is 2): more keeps many workers at large
    # frames busy (docs/results.md); each batch held costs its size in shared memory.
    prefetch_factor: int = 4
    # Linear warmup length, used only when the LR was scaled up.
    warmup_epochs: int = 1
    # Epochs without a better val macro-F1 before the LR is multiplied by lr_factor.
    lr_patience: int = 3
    # The LR's factor on a plateau of val macro-F1.
    lr_factor: float = 0.5
    # The backbone's LR as a multiple of the head's (fine-tuning a pretrained backbone gently).
    backbone_lr_factor: float = 1.0
    # Cross-entropy class weights: none, balanced (n / (k * count_c) over the training split,
    # as the users' transfer runs had) or one weight per event, in data.events order.
    class_weights: Any = "none"
    # The largest gradient norm; null: no clipping.
    grad_clip: float | None = 1.0
    # torch.compile the model (one device or DDP; not DataParallel).
    compile: bool = False
    # Cap on batches per epoch and per evaluation (smoke runs); null means all.
    max_batches: int | None = None


@dataclass
class TrackingConfig:
    # null: $MLFLOW_TRACKING_URI if set, else a SQLite store in the launch directory.
    uri: str | None = None
    # Log the best checkpoint to MLflow as an artifact.
    log_checkpoint: bool = True
    # Log the best weights as the run's MLflow model at its end (models:/m-<id>, also
    # runs:/<run id>/model): the weights alone, the config, the signature; evaluate, predict
    # and transfer_from take its URI.
    log_model: bool = True
    # Register that model in MLflow's Model Registry: <name> (a new version; models:/<name>/<n>,
    # models:/<name>/latest) or <name>@<alias> (the alias moves to it: models:/<name>@<alias>).
    register_as: str | None = None
    # CPU, memory, per-GPU utilisation and memory as `system/` metrics; null: on for GPU runs.
    system_metrics: bool | None = None
    # When the store stops answering (a server gone, a locked SQLite file), training goes on
    # and logging is retried for up to this many seconds; what is still unsent then is lost
    # and named at the run's end.
    retry_s: float = 300.0


@dataclass
class Config:
    # The MLflow experiment the run is logged to.
    experiment_name: str = "tennis_4event"
    # Seeds the weights, the data order, dropout and augmentation (each DDP rank its own).
    seed: int = 42
    # Print the device and scaling plan, train nothing.
    dry_run: bool = False
    # null: a progress bar on a terminal, plain log lines otherwise.
    progress_bar: bool | None = None
    # Continue an interrupted run: its output directory or a checkpoint (last.pth).
    resume: str | None = None
    # The checkpoint a transfer preset starts from (experiment=badminton_frozen, ...: their
    # model.init_from follows it), a file or a model URI (models:/<name>@<alias>, runs:/...);
    # a sweep over presets passes it once for all of them.
    transfer_from: str | None = None
    # The network: a per-frame CNN, a bidirectional LSTM over the window, a classifier head.
    model: ModelConfig = field(default_factory=ModelConfig)
    # The frames, their windows and the events they are labelled with.
    data: DataConfig = field(default_factory=DataConfig)
    # The devices a run uses and how the batch and LR follow them (hardware=<profile>).
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    # The optimiser, its schedule and the loaders.
    training: TrainingConfig = field(default_factory=TrainingConfig)
    # Where and what the run logs to MLflow.
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def from_container(container: dict) -> DictConfig:
    """A resolved config saved as plain data (a checkpoint's, a spawned worker's), re-typed."""
    return OmegaConf.merge(OmegaConf.structured(Config), container)
