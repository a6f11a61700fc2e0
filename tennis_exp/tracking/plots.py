"""Every picture the package draws, with matplotlib (rendered by Agg, no display needed): a
confusion matrix, a run's curves per epoch, the error gallery of an evaluation, and a sweep's
confusions side by side. Each `*_figure` builds a Figure (tests read its axes); `save` writes
it whole or not at all."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tennis_exp.files import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# The curves a run draws per epoch: (panel title, [(metric, label)], y log-scaled).
CURVE_PANELS = (
    ("loss", [("train/loss", "train"), ("val/loss", "val")], False),
    ("macro-F1", [("train/macro_f1", "train"), ("val/macro_f1", "val")], False),
    ("learning rate", [("lr", "lr")], True),
)
CURVE_KEYS = tuple(key for _, lines, _ in CURVE_PANELS for key, _ in lines)
# A training run's test confusion counts ({"events": [...], "counts": [[true, predicted]]}),
# in its folder and MLflow run: a sweep's comparison draws its jobs' matrices from them.
CONFUSION_FILE = "confusion_matrix.json"
# The frames of a 16-frame window a gallery row shows: enough to see the motion, still legible.
GALLERY_FRAMES = 6


def _figure(figsize: tuple[float, float], **kwargs) -> Figure:
    """A figure of its own, outside pyplot (no global registry to close it in, nothing shown
    on screen; savefig renders with Agg), imported on first use: a run does not pay for
    matplotlib at startup."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, **kwargs)


def save(fig: Figure, path: Path, dpi: int = 100) -> Path:
    """The figure as a PNG at `path`, renamed into place once complete (a reader, or the
    next epoch's rewrite, never sees half a file)."""
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path


def _confusion_axes(ax, values: np.ndarray, class_names: Sequence[str], fmt: str, title: str):
    ticks = range(len(class_names))
    # Shares on one scale, 0 to 1, so that two jobs' matrices compare by their colours.
    vmax = 1.0 if values.dtype.kind == "f" else max(values.max(), 1)
    ax.imshow(values, cmap="Blues", vmin=0, vmax=vmax)
    ax.set(xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="true")
    ax.set_title(title, fontsize=10)
    ax.set_xticklabels(class_names, rotation=30, ha="right")
    ax.set_yticklabels(class_names)
    threshold = vmax / 2
    for i in ticks:
        for j in ticks:
            value = values[i, j]
            ax.text(j, i, fmt.format(value.item()), ha="center", va="center",
                    color="white" if value > threshold else "black")  # fmt: skip


def _row_shares(cm: np.ndarray) -> np.ndarray:
    """Each true class's row as shares of it: recall on the diagonal."""
    return cm / np.maximum(cm.sum(1, keepdims=True), 1)


def confusion_figure(cm, class_names: Sequence[str], title: str) -> Figure:
    """Counts, and the row-normalised matrix."""
    counts = np.asarray(cm, dtype=np.int64)
    fig = _figure((10, 4.5))
    axes = fig.subplots(1, 2)
    _confusion_axes(axes[0], counts, class_names, "{:d}", f"{title}: counts")
    _confusion_axes(axes[1], _row_shares(counts), class_names, "{:.2f}", f"{title}: row-normalised")
    fig.tight_layout()
    return fig


def plot_confusion(cm, class_names: Sequence[str], title: str, path: Path) -> Path:
    return save(confusion_figure(cm, class_names, title), path)


def curves_figure(history: dict[str, list[tuple[int, float]]]) -> Figure:
    """Loss, macro-F1 and LR per epoch, a panel each; `history` holds each metric's (epoch,
    value) pairs (a metric not logged, as a train macro-F1 from before it was, is left out)."""
    fig = _figure((13, 3.8))
    axes = fig.subplots(1, len(CURVE_PANELS))
    for ax, (title, lines, log_scale) in zip(axes, CURVE_PANELS, strict=True):
        for key, label in lines:
            points = sorted(history.get(key, []))
            if points:
                epochs, values = zip(*points, strict=True)
                ax.plot(epochs, values, marker=".", label=label)
        ax.set(title=title, xlabel="epoch")
        if log_scale and ax.lines:
            ax.set_yscale("log")
        if len(lines) > 1 and ax.lines:
            ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True, min_n_ticks=1)  # epochs
    fig.tight_layout()
    return fig


def gallery_figure(
    clips: Sequence[np.ndarray],
    captions: Sequence[str],
    title: str,
    frames: int = GALLERY_FRAMES,
) -> Figure:
    """A row per window: `frames` of its frames evenly spread over it (uint8 [T, 3, H, W]),
    the row captioned (the window's video, first frame and probabilities)."""
    rows = len(clips)
    fig = _figure((1.6 * frames, 1.9 * rows + 0.4))
    axes = fig.subplots(rows, frames, squeeze=False)
    for row, (clip, caption) in enumerate(zip(clips, captions, strict=True)):
        picked = np.linspace(0, len(clip) - 1, frames).round().astype(int)
        for col, t in enumerate(picked):
            ax = axes[row, col]
            ax.imshow(np.asarray(clip[t]).transpose(1, 2, 0))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"t={t}", fontsize=7)
        axes[row, 0].set_title(caption, fontsize=8, loc="left")
    fig.suptitle(title, fontsize=10)
    # Fixed margins, not tight_layout: a caption is wider than its row's first frame.
    height = fig.get_figheight()
    fig.subplots_adjust(
        left=0.02, right=0.98, top=1 - 0.55 / height, bottom=0.25 / height, wspace=0.08, hspace=0.5
    )
    return fig


def confusions_figure(
    confusions: Sequence[tuple[str, np.ndarray, Sequence[str]]], title: str
) -> Figure:
    """Each job's row-normalised confusion matrix (its name, counts and class names) side by
    side, up to four a row."""
    per_row = min(4, len(confusions))
    rows = -(-len(confusions) // per_row)
    # Constrained layout: room for two-line titles and the figure's own.
    fig = _figure((3.6 * per_row, 4.2 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, per_row, squeeze=False)
    for ax, (name, cm, class_names) in zip(axes.flat, confusions, strict=False):
        counts = np.asarray(cm, dtype=np.int64)
        _confusion_axes(ax, _row_shares(counts), class_names, "{:.2f}", name)
    for ax in axes.flat[len(confusions) :]:
        ax.remove()
    fig.suptitle(title, fontsize=10)
    fig.get_layout_engine().set(h_pad=0.15)  # a row's axis label clear of the next row's title
    return fig
