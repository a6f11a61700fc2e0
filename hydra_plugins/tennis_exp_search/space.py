"""A search space written as Hydra sweep syntax, as Optuna distributions: `choice(a, b)` and
`a,b` are categorical, `range(start, stop[, step])` stepped numbers (integers if all three
are; stop excluded, as Hydra sweeps it; `shuffle(...)` makes it categorical), `interval(low,
high)` uniform floats (Hydra reads its ends as floats), `tag(log, interval(...))`
log-uniform. A key with a plain value is fixed for every trial."""

from __future__ import annotations

from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer, ValueType

from tennis_exp.errors import UserError

_WRITTEN = (
    "choice(a, b, ...), a,b,..., range(start, stop[, step]), interval(low, high), "
    "tag(log, interval(low, high))"
)


def search_space(lines: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """`key=<sweep>` lines (the preset's params, then the command line's) as (the searched
    keys' Optuna distributions, the fixed keys' values); a later line for a key replaces an
    earlier one."""
    try:
        parsed = OverridesParser.create().parse_overrides(lines)
    except Exception as err:  # Hydra's grammar names the bad text, over several lines
        said = [line.strip() for line in str(err).splitlines() if line.strip()]
        said = "; ".join(line for line in said if not line.startswith("See https"))
        raise UserError(f"a search key is not Hydra sweep syntax ({_WRITTEN}): {said}") from err
    space: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            fixed.pop(key, None)
            space[key] = distribution(override)  # a replaced key keeps its place
        else:
            space.pop(key, None)
            fixed[key] = override.get_value_element_as_str()
    return space, fixed


def distribution(override: Override):
    """One sweep override's Optuna distribution."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    where = override.input_line or override.get_key_element()
    value = override.value()
    if override.value_type == ValueType.GLOB_CHOICE_SWEEP:  # config group options: no space
        raise UserError(
            f"search key {where} is not a distribution Optuna can sample: use {_WRITTEN}"
        )
    try:
        if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
            return CategoricalDistribution([_choice(x, where) for x in override.sweep_iterator()])
        if override.is_range_sweep():
            values = list(override.sweep_iterator())
            if not values:
                raise ValueError("the range is empty")
            if all(isinstance(v, int) for v in [value.start, value.stop, value.step]):
                return IntDistribution(values[0], values[-1], step=value.step)
            return FloatDistribution(values[0], values[-1], step=value.step)
        if override.is_interval_sweep():
            unknown = set(value.tags) - {"log"}
            if unknown:
                raise ValueError(f"unknown tag {', '.join(sorted(unknown))} (only log is known)")
            return FloatDistribution(value.start, value.end, log="log" in value.tags)
    except ValueError as err:  # Optuna's: a log interval from 0, low above high, ...
        raise UserError(f"search key {where}: {err}") from err
    raise UserError(f"search key {where} is not a distribution Optuna can sample: use {_WRITTEN}")


def _choice(value: Any, where: str):
    """A categorical choice as Optuna stores it: a number, bool or string stays itself (its
    plots sort numbers as numbers); a list or dict becomes its override text."""
    if value is None:
        raise UserError(f"search key {where}: null cannot be a choice")
    return Transformer.encode(value)


def trial_overrides(params: dict[str, Any], fixed: dict[str, str]) -> list[str]:
    """A trial's overrides: its sampled values, then the fixed keys."""
    sampled = [f"{k}={Transformer.str(v)}" for k, v in params.items()]
    return [*sampled, *(f"{k}={v}" for k, v in fixed.items())]
