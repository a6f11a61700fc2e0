"""What composition cannot check: ranges, and keys that do not go with each other. Every rule
raises UserError naming the key, its value and what would be valid, before any work starts."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from tennis_exp.config.datasets import with_background
from tennis_exp.config.schema import Augment, Strategy
from tennis_exp.errors import UserError


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
    # Its class and folder first: the checks below and the whole run see them.
    with_background(cfg.data)
    _validate_ranges(cfg)
    _validate_class_weights(cfg.training.class_weights, list(cfg.data.events))
    _validate_mapping(cfg.data)
    _validate_combinations(cfg)
    _validate_feature_cache(cfg)
    _validate_models(cfg)


def _validate_models(cfg: DictConfig) -> None:
    """tracking.register_as's form; model.init_from's, and a model URI's presence in the store
    (a dry run reads no store; a file is checked when it is read)."""
    if cfg.tracking.register_as is None and not cfg.model.init_from:
        return
    from tennis_exp.tracking import models
    from tennis_exp.tracking.runs import tracking_uri

    if cfg.tracking.register_as is not None:
        models.parse_register_as(cfg.tracking.register_as)
    if cfg.model.init_from and not cfg.dry_run:
        models.check_source(cfg.model.init_from, tracking_uri(cfg))
    elif cfg.model.init_from:
        models.parse(cfg.model.init_from)


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
    if cfg.tracking.register_as is not None and not cfg.tracking.log_model:
        raise UserError(
            f"tracking.register_as={cfg.tracking.register_as} registers the run's logged model: "
            "set tracking.log_model=true, or tracking.register_as=null"
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
