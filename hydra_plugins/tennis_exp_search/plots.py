"""Optuna's plots of a study as PNG files (matplotlib: no browser or kaleido needed), written
into `<sweep dir>/optuna/`, which the sweep's MLflow run logs at the end."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

log = logging.getLogger(__name__)

PLOTS_DIR = "optuna"
# plot -> the COMPLETE trials it needs (importances compare trials)
_NEEDS = {
    "optimization_history": 1,
    "param_importances": 2,
    "parallel_coordinate": 1,
    "slice": 1,
}


def plot_study(study, sweep_dir: Path, objective: str) -> list[Path]:
    """Write the study's plots; a plot the study has too few finished trials for is skipped
    with a log line."""
    import matplotlib

    matplotlib.use("Agg")
    # matplotlib's note on numeric categories (batch sizes), once per axis: noise in the log
    logging.getLogger("matplotlib.category").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis
    from optuna.exceptions import ExperimentalWarning
    from optuna.trial import TrialState

    from tennis_exp.files import atomic_write

    finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    folder = sweep_dir / PLOTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, needs in _NEEDS.items():
        if finished < needs:
            log.info("No %s plot: it needs %d finished trial(s), the study has %d",
                     name, needs, finished)  # fmt: skip
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            warnings.simplefilter("ignore", UserWarning)  # matplotlib on a one-value axis
            axes = getattr(vis, f"plot_{name}")(study, target_name=objective)
        figure = _figure(axes)
        _readable(figure, names=list(study.best_trial.params) if finished else [])
        path = folder / f"{name}.png"
        with atomic_write(path) as tmp:
            figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        plt.close(figure)
        written.append(path)
    return written


def _figure(axes):
    """The figure of Optuna's Axes, or of its array of them (slices: one per key)."""
    first = axes.flat[0] if hasattr(axes, "flat") else axes
    return first.figure


def _readable(figure, names: list[str]) -> None:
    """The swept keys' full names (`training.learning_rate`, which Optuna cuts to
    `training.learning...` in parallel coordinates), on a slant, in a wider figure."""
    width, height = figure.get_size_inches()
    figure.set_size_inches(max(width, 10), max(height, 5))
    for ax in figure.axes:
        labels = [_full(t.get_text(), names) for t in ax.get_xticklabels()]
        if any("." in label and not _number(label) for label in labels):
            ax.set_xticks(ax.get_xticks(), labels, rotation=25, ha="right")


def _full(label: str, names: list[str]) -> str:
    """A label Optuna shortened with '...', as the one key it starts."""
    if not label.endswith("..."):
        return label
    matches = [n for n in names if n.startswith(label[:-3])]
    return matches[0] if len(matches) == 1 else label


def _number(text: str) -> bool:
    try:
        float(text.replace("\N{MINUS SIGN}", "-"))
    except ValueError:
        return False
    return True
