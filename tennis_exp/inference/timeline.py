"""The timeline PNG: each event's smoothed probability over time (at the windows' centres,
held over the stretch each window speaks for), the raw ones faint, min_confidence dashed (when
it is one), the predicted segments below and, when given, the true ones under them: a band is
play, a blank no play. A model's background class ("No event") is drawn grey."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tennis_exp.config import BACKGROUND
from tennis_exp.data.segments import Segment

# matplotlib's tab10, an event's colour wherever it is drawn (the rendered video too).
COLOURS = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]  # fmt: skip


_GREY = (127, 127, 127)


def colour(events: list[str], event: str) -> tuple[int, int, int]:
    if event == BACKGROUND:
        return _GREY
    return COLOURS[events.index(event) % len(COLOURS)]


def plot_timeline(
    path: Path,
    title: str,
    events: list[str],
    bounds: np.ndarray,
    raw: np.ndarray,
    smoothed: np.ndarray,
    segments: list[Segment],
    min_confidence: float,
    truth: list[Segment] | None = None,
) -> Path:
    """Write the figure to `path`; `bounds` [W + 1] are the windows' speaking bounds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = 2 if truth is None else 3
    width = min(40.0, max(10.0, bounds[-1] / 12))  # about 12 s per inch, within limits
    fig, axes = plt.subplots(
        rows, 1, sharex=True, figsize=(width, 3.2 + 0.5 * rows),
        gridspec_kw={"height_ratios": [6] + [1] * (rows - 1)},
    )  # fmt: skip
    prob_ax = axes[0]
    for i, event in enumerate(events):
        rgb = _unit(colour(events, event))
        # One step per window, over the stretch it speaks for.
        prob_ax.stairs(raw[:, i], bounds, color=rgb, alpha=0.25, linewidth=0.8, baseline=None)
        prob_ax.stairs(smoothed[:, i], bounds, color=rgb, linewidth=1.6, label=event, baseline=None)
    if min_confidence > 0:
        prob_ax.axhline(min_confidence, color="grey", linestyle="--", linewidth=0.8,
                        label="min_confidence")  # fmt: skip
    prob_ax.set(ylim=(0, 1.02), ylabel="probability", title=title)
    prob_ax.legend(loc="upper right", fontsize="small", ncol=len(events) + 1)
    _bands(axes[1], segments, events, "predicted\n(blank: no play)")
    if truth is not None:
        _bands(axes[2], truth, events, "truth")
    axes[-1].set(xlim=(0, bounds[-1]), xlabel="time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _bands(ax, segments: list[Segment], events: list[str], label: str) -> None:
    for s in segments:
        rgb = _unit(colour(events, s.event))
        ax.axvspan(s.start, s.end, color=rgb, alpha=0.3 + 0.7 * s.confidence, linewidth=0)
    ax.set(yticks=[], ylabel=label)
    ax.yaxis.label.set(rotation=0, horizontalalignment="right", verticalalignment="center")


def _unit(rgb: tuple[int, int, int]) -> tuple[float, ...]:
    return tuple(c / 255 for c in rgb)
