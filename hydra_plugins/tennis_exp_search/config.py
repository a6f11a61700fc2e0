"""The search's config, `hydra/sweeper=optuna` (what `hparams_search=<preset>` chooses): every
default written here once; a preset sets what it changes."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class OptunaSearchConf:
    _target_: str = "hydra_plugins.tennis_exp_search.sweeper.OptunaSearch"
    # The sampler is built by the search itself, once it knows the study (its seed moves on
    # by the trials the study holds, so a continued search draws new points).
    _recursive_: bool = False
    # Optuna's sampler, instantiated (_target_ and its arguments); TPE by default.
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler"})
    # maximize or minimize what each job returns (tennis-exp's jobs: the best val macro-F1).
    direction: str = "maximize"
    # Where the study is kept: any SQLAlchemy URL (sqlite:///<file>, postgresql://...); null:
    # optuna.db in the sweep's folder. The same storage and study name continue a study.
    storage: str | None = None
    # The study's name in its storage; nodes that give the same one run trials of one study.
    study_name: str = "search"
    # Trials the study holds at the end, those of earlier and other runs of it included.
    n_trials: int = 20
    # Trials asked at once, one launch of the launcher: as many as it runs side by side.
    n_jobs: int = 1
    # The share of a launch's trials that may fail before the search stops asking (1.0:
    # a failed trial is a data point for the sampler, never the end of the search).
    max_failure_rate: float = 1.0
    # The searched keys, in Hydra's sweep syntax (choice, range, interval, tag(log, ...)); a
    # key given on the command line replaces the preset's.
    params: dict[str, str] | None = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="optuna", node=OptunaSearchConf, provider="tennis_exp"
)
