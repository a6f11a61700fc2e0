"""What a sweep's jobs are called: their folder (`hydra.sweep.subdir`) and MLflow run name
carry the values of the keys the sweep varies, and the run name the device that really ran.

The sweep process knows which keys vary (its command line's sweeps, its sweeper's search
space); `SweepTracking.on_multirun_start` hands them to every job, whatever its launcher, as the
environment variable SWEPT_ENV set through `hydra.job.env_set`, which Hydra composes into each
job's config.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

SWEPT_ENV = "TENNIS_EXP_SWEPT"  # the keys a sweep varies, comma-separated
_MAX_VALUE = 24  # a longer value, or one with unsafe characters, is shortened with a hash
_MAX_LABEL = 60
# What a path can hold and still be typed unquoted in a Hydra override (resume=<job folder>).
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def swept_keys(task_overrides: Iterable[str], search_params: Mapping[str, Any] | None) -> list[str]:
    """The keys a sweep varies, in the order it names them: its sweeper's search space
    (`hydra.sweeper.params`), then the command line's sweeps (`a=1,2`, `choice(...)`, ...)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    lines = [f"{k}={v}" for k, v in (search_params or {}).items()]
    parsed = OverridesParser.create().parse_overrides([*lines, *task_overrides])
    return list(dict.fromkeys(o.key_or_group for o in parsed if o.is_sweep_override()))


def swept_override(keys: list[str]) -> str | None:
    """The Hydra override that gives every job of the sweep the keys it varies (None: none)."""
    return f"++hydra.job.env_set.{SWEPT_ENV}='{','.join(keys)}'" if keys else None


def job_values(overrides: Iterable[str], keys: str | None) -> dict[str, str]:
    """This job's values of the swept `keys` (SWEPT_ENV's comma-separated form), from its own
    overrides (`key=value`, `+key=value`)."""
    wanted = [k for k in (keys or "").split(",") if k]
    own = dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)
    return {k: own[k] for k in wanted if k in own}


def groups_in(cfg: DictConfig, keys: Iterable[str]) -> set[str]:
    """The keys that choose a config group's option (experiment, hardware, model): no value
    of their own in the composed config, or a whole section."""
    absent = object()
    nodes = {k: OmegaConf.select(cfg, k, default=absent) for k in keys}
    return {k for k, node in nodes.items() if node is absent or isinstance(node, DictConfig)}


def _short(text: str, limit: int) -> str:
    """`text` made filesystem-safe and at most `limit` long; a changed one ends with a hash of
    the original, so distinct values stay distinct. Of a path the end is kept (its file and
    last folders say which it is), of anything else the start."""
    safe = _UNSAFE.sub("_", text).strip("_")
    if safe == text and len(text) <= limit:
        return text
    digest = hashlib.sha1(text.encode()).hexdigest()[:6]
    kept = safe[-(limit - 7) :].lstrip("_") if "/" in text else safe[: limit - 7]
    return f"{kept}_{digest}"


def _value(value: str) -> str:
    """A long fraction (a sampled LR) to 4 significant digits; any value filesystem-safe."""
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is not None and len(value) > 8 and not number.is_integer() and abs(number) < 1e6:
        return f"{number:.4g}"
    return _short(value, _MAX_VALUE)


def job_label(values: Mapping[str, str], groups: Collection[str]) -> str:
    """e.g. {experiment: badminton_scratch, data.train_fraction: 0.1} ->
    'badminton_scratch-train_fraction_0.1': a group's option alone, another key's last part
    and value; short, and safe in a file name and in an unquoted Hydra override."""
    parts = [
        _value(v) if k in groups else f"{k.rsplit('.', 1)[-1]}_{_value(v)}"
        for k, v in values.items()
    ]
    return _short("-".join(parts), _MAX_LABEL)


def run_name(values: Mapping[str, str], groups: Collection[str], ran: str, setup: str) -> str:
    """A job's run name: its swept values then `@` the hardware that really ran (`ran`: the
    profile, or `cpu` when a GPU profile fell back), left out where a swept value already
    says it ('gpu2'); a run outside a sweep, `ran` and its `setup` ('cpu-dp-bs16-lr1e-4')."""
    if not values:
        return f"{ran}-{setup}"
    label = job_label(values, groups)
    return label if ran in values.values() else f"{label}@{ran}"


def failed_name(
    values: Mapping[str, str], groups: Collection[str], hardware: str, strategy: str
) -> str:
    """The run name of a job that failed before its run started (no device ran it)."""
    return f"{job_label(values, groups) if values else f'{hardware}-{strategy}'}-failed"


def sweep_job_label(*, _root_: DictConfig) -> str:
    """The resolver `${sweep_job_label:}` of `hydra.sweep.subdir`: the job's swept values, or
    its hardware profile where the sweep varies nothing."""
    hydra = _root_.hydra
    keys = hydra.job.env_set.get(SWEPT_ENV)
    values = job_values(hydra.overrides.task, keys)
    if not values:
        return str(hydra.runtime.choices.get("hardware"))
    return job_label(values, groups_in(_root_, values))
