"""What Hydra must know before it composes a command's config: the schemas, stored in its
ConfigStore under the names conf/*.yaml start from, and the resolvers the group files use."""

from __future__ import annotations

import os
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from tennis_exp.config.commands import EvaluateConfig, PredictConfig, PrepareConfig
from tennis_exp.config.help import help_resolver
from tennis_exp.config.jobnames import sweep_job_label
from tennis_exp.config.runtime import usable_cpus
from tennis_exp.config.schema import Accelerator, Config


def register_configs() -> None:
    store = ConfigStore.instance()
    store.store(name="tennis_exp_schema", node=Config)
    store.store(name="tennis_exp_evaluate_schema", node=EvaluateConfig)
    store.store(name="tennis_exp_prepare_schema", node=PrepareConfig)
    store.store(name="tennis_exp_predict_schema", node=PredictConfig)
    # ${pid:} in output paths: processes started in the same microsecond still differ.
    # Cached like Hydra's ${now:}: every submitit task then resolves the sweep dir to the one
    # the sweep process chose, instead of a directory of its own.
    OmegaConf.register_new_resolver("pid", os.getpid, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("parallel_jobs", parallel_jobs, replace=True)
    # conf/base.yaml's hydra.sweep.subdir: a job's folder names its swept values.
    OmegaConf.register_new_resolver("sweep_job_label", sweep_job_label, replace=True)
    # conf/hydra/help/tennis_exp.yaml: every command's --help, made from its schema.
    OmegaConf.register_new_resolver("command_help", help_resolver, replace=True)


def parallel_jobs(accelerator: Any, devices: int) -> int:
    """hydra/launcher=parallel's default n_jobs: as many jobs as the visible GPUs hold, at
    least one (a job that cannot be placed then says why); on the CPU, one per usable core."""
    visible = 0
    if Accelerator(getattr(accelerator, "value", accelerator)) is Accelerator.cuda:
        import torch  # only when a parallel sweep's config is resolved

        visible = torch.cuda.device_count()
    if visible == 0:  # the CPU, or a GPU profile falling back to it
        return usable_cpus()
    return max(1, visible // max(devices, 1))
