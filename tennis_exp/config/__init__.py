"""The config: every key a user can type, its type, allowed values and default (`schema`, the
other commands' in `commands`), the checks composition cannot make (`validation`), the
datasets' action maps (`datasets`, read from conf/data/), `--help` (`help`), the names of a
sweep's job folders and runs (`jobnames`) and what Hydra is told before composing
(`registration`).

The dataclasses are registered in Hydra's ConfigStore and are the base of conf/*.yaml, so a
wrong type, an unknown key or an invalid enum value fails while the config is composed; ranges
are checked by `validate` before any work starts. The names below are the package's surface.
"""

from tennis_exp.config.commands import (
    EvaluateConfig,
    PredictConfig,
    PredictOptions,
    PrepareConfig,
    Split,
    SplitConfig,
    validate_predict,
    validate_prepare,
)
from tennis_exp.config.datasets import (
    BADMINTON_ACTIONS,
    IDLE_ACTION,
    THETIS_ACTIONS,
    THETIS_EXCLUDED,
    metric_name,
    with_background,
)
from tennis_exp.config.registration import register_configs
from tennis_exp.config.runtime import shows_progress_bar, usable_cpus
from tennis_exp.config.schema import (
    BACKGROUND,
    EVENTS,
    Accelerator,
    Augment,
    AugmentConfig,
    AugmentPer,
    Backbone,
    BatchScaling,
    Config,
    DataConfig,
    HardwareConfig,
    LrScaling,
    ModelConfig,
    Precision,
    Sport,
    Strategy,
    SyntheticConfig,
    SyntheticPreset,
    TrackingConfig,
    TrainingConfig,
    from_container,
)
from tennis_exp.config.validation import feature_cache_blocker, uses_feature_cache, validate

__all__ = [
    "BADMINTON_ACTIONS",
    "BACKGROUND",
    "EVENTS",
    "IDLE_ACTION",
    "THETIS_ACTIONS",
    "THETIS_EXCLUDED",
    "Accelerator",
    "Augment",
    "AugmentConfig",
    "AugmentPer",
    "Backbone",
    "BatchScaling",
    "Config",
    "DataConfig",
    "EvaluateConfig",
    "HardwareConfig",
    "LrScaling",
    "ModelConfig",
    "Precision",
    "PredictConfig",
    "PredictOptions",
    "PrepareConfig",
    "Split",
    "SplitConfig",
    "Sport",
    "Strategy",
    "SyntheticConfig",
    "SyntheticPreset",
    "TrackingConfig",
    "TrainingConfig",
    "feature_cache_blocker",
    "from_container",
    "metric_name",
    "register_configs",
    "shows_progress_bar",
    "usable_cpus",
    "uses_feature_cache",
    "validate",
    "validate_predict",
    "validate_prepare",
    "with_background",
]
